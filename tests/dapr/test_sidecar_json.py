"""Go's `encoding/json` as the emulator decodes daprd's bodies with it (and marshals floats)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from todo_observability.testing.sidecar._json import (
    APP_RESPONSE,
    BULK_PUBLISH_ENTRIES,
    SET_REQUEST,
    STATE_SET_REQUESTS,
    SUBSCRIPTIONS,
    GoTypeError,
    dumps,
    map_decode,
    unmarshal,
)

SET_REQUEST_KEYS = ["key", "value", "etag", "metadata", "options", "contentType"]
SUBSCRIPTION_KEYS = [
    "pubsubname",
    "topic",
    "deadLetterTopic",
    "metadata",
    "route",
    "routes",
    "bulkSubscribe",
]


def one_set_request(body: str) -> dict[str, Any]:
    [decoded] = unmarshal(body, STATE_SET_REQUESTS)
    return dict(decoded)


@st.composite
def letter_case(draw: st.DrawFn, name: str) -> str:
    """`name` with each letter in either case."""
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.swapcase() if flip else c for c, flip in zip(name, flips, strict=True))


SUBSCRIPTION_VALUES: dict[str, tuple[Any, Any]] = {
    "pubsubname": ("p", "p"),
    "topic": ("t", "t"),
    "deadLetterTopic": ("dlq", "dlq"),
    "metadata": ({"rawPayload": "true"}, {"rawPayload": "true"}),
    "route": ("/r", "/r"),
    "routes": ({"Default": "/d"}, {"rules": None, "default": "/d"}),
    "bulkSubscribe": (
        {"ENABLED": True},
        {"enabled": True, "maxMessagesCount": 0, "maxAwaitDurationMs": 0},
    ),
}


@given(st.sampled_from(SUBSCRIPTION_KEYS).flatmap(lambda k: st.tuples(st.just(k), letter_case(k))))
def test_a_key_in_any_letter_case_sets_its_field(field_and_key: tuple[str, str]) -> None:
    field, key = field_and_key
    sent, expected = SUBSCRIPTION_VALUES[field]
    [decoded] = unmarshal(json.dumps([{key: sent}]), SUBSCRIPTIONS)
    assert decoded[field] == expected
    others = [k for k in ("pubsubname", "topic", "route") if k != field]
    assert all(decoded[k] == "" for k in others)


@given(
    st.lists(
        st.tuples(st.sampled_from(["key", "Key", "KEY", "kEy", "\u212aey"]), st.text()),
        min_size=1,
    )
)
def test_a_repeated_key_in_any_case_is_last_one_wins(pairs: list[tuple[str, str]]) -> None:
    body = "[{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}]"
    assert one_set_request(body)["key"] == pairs[-1][1]


@given(st.lists(st.one_of(st.none(), st.text(alphabet="abc", min_size=1)), min_size=1))
def test_null_leaves_a_string_as_it_was(values: list[str | None]) -> None:
    body = "[{" + ",".join(f'"key":{json.dumps(v)}' for v in values) + "}]"
    set_ones = [v for v in values if v is not None]
    assert one_set_request(body)["key"] == (set_ones[-1] if set_ones else "")


@given(
    st.dictionaries(
        st.text().filter(lambda k: k.lower() not in [f.lower() for f in SET_REQUEST_KEYS]),
        st.integers() | st.text() | st.booleans() | st.none(),
    )
)
def test_unknown_keys_are_ignored(extra: dict[str, Any]) -> None:
    decoded = one_set_request(json.dumps([{**extra, "key": "k"}]))
    assert decoded["key"] == "k"
    assert decoded["value"] is None
    assert decoded["metadata"] is None


@given(
    st.one_of(
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
)
def test_a_value_of_another_type_is_go_s_unmarshal_type_error(value: Any) -> None:
    kind = {bool: "bool", int: "number", float: "number", list: "array", dict: "object"}
    with pytest.raises(GoTypeError) as caught:
        unmarshal(json.dumps([{"key": value}]), STATE_SET_REQUESTS)
    assert str(caught.value) == (
        f"json: cannot unmarshal {kind[type(value)]} into Go struct field SetRequest.key "
        "of type string"
    )


@given(
    st.dictionaries(st.text(), st.text()),
    st.text(),
    st.recursive(
        st.none() | st.booleans() | st.text() | st.integers(-(2**53), 2**53),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ),
)
def test_well_typed_requests_decode_to_what_was_sent(
    metadata: dict[str, str], key: str, value: Any
) -> None:
    decoded = one_set_request(json.dumps([{"key": key, "value": value, "metadata": metadata}]))
    replace = json.loads(json.dumps(value))  # what Go gives back: numbers become float64

    def as_float(item: Any) -> Any:
        if isinstance(item, bool) or item is None or isinstance(item, str):
            return item
        if isinstance(item, int):
            return float(item)
        if isinstance(item, list):
            return [as_float(i) for i in item]
        return {k: as_float(v) for k, v in item.items()}

    assert decoded["key"] == key
    assert decoded["metadata"] == metadata
    assert decoded["value"] == as_float(replace)


@given(st.text(alphabet=" \t\r\nx}{[]1,:\"'", max_size=20))
def test_a_decoder_reads_the_first_value_and_ignores_what_follows(rest: str) -> None:
    assert unmarshal('{"Status":"RETRY"}' + rest, APP_RESPONSE, stream=True) == {"status": "RETRY"}


def test_unmarshal_refuses_what_follows_a_value() -> None:
    with pytest.raises(GoTypeError, match=r"^invalid character 'x' after top-level value$"):
        unmarshal('{"status":"RETRY"} x', APP_RESPONSE)


@pytest.mark.parametrize(
    ("body", "stream", "message"),
    [
        ("", True, "EOF"),
        ("  \n", True, "EOF"),
        ("", False, "unexpected end of JSON input"),
        ('[{"key":"a"', False, "unexpected end of JSON input"),
        ('[{"key":"a"', True, "unexpected EOF"),
        ('[{"key" "a"}]', False, "invalid character '\"' after object key"),
        ('[{"key":"a" "b"}]', False, "invalid character '\"' after object key:value pair"),
        ('["a" "b"]', False, "invalid character '\"' after array element"),
        ("[1,]", False, "invalid character ']' looking for beginning of value"),
        ('[{"a":1,}]', False, "invalid character '}' looking for beginning of object key string"),
        ("[NaN]", False, "invalid character 'N' looking for beginning of value"),
        ('["NaN", -Infinity]', False, "invalid character 'I' in numeric literal"),
        ('[{"key":"\\q"}]', False, "invalid character 'q' in string escape code"),
        ('[{"key":"\x01"}]', False, "invalid character '\\x01' in string literal"),
        ("{}", False, "json: cannot unmarshal object into Go value of type []state.SetRequest"),
        (
            '[{"key":"a","value":1e400}]',
            False,
            "json: cannot unmarshal number 1e400 into Go struct field SetRequest.value of type "
            "float64",
        ),
    ],
)
def test_go_s_error_messages(body: str, stream: bool, message: str) -> None:
    with pytest.raises(GoTypeError) as caught:
        unmarshal(body, STATE_SET_REQUESTS, stream=stream)
    assert str(caught.value) == message


def test_nested_fields_are_named_by_their_path_from_the_root() -> None:
    with pytest.raises(GoTypeError) as caught:
        unmarshal('[{"routes":{"rules":[{"path":3}]}}]', SUBSCRIPTIONS)
    assert str(caught.value) == (
        "json: cannot unmarshal number into Go struct field RuleJSON.routes.rules.path of type "
        "string"
    )
    with pytest.raises(GoTypeError, match=r"number 1\.5 into Go struct field .*maxMessagesCount"):
        unmarshal('[{"bulkSubscribe":{"maxMessagesCount":1.5}}]', SUBSCRIPTIONS)
    with pytest.raises(GoTypeError, match=r"number 2147483648 into .* of type int32"):
        unmarshal('[{"bulkSubscribe":{"maxMessagesCount":2147483648}}]', SUBSCRIPTIONS)


def test_a_repeated_object_is_decoded_into_the_first() -> None:
    decoded = one_set_request(
        '[{"options":{"concurrency":"first-write"},"Options":{"consistency":"strong"}}]'
    )
    assert decoded["options"] == {"Concurrency": "first-write", "Consistency": "strong"}


def test_map_values_of_null_are_zero_strings_and_numbers_in_events_are_float64() -> None:
    [entry] = unmarshal(
        '[{"entryID":"1","Event":{"n":12345678901234567890,"f":1.0},"metadata":{"a":null}}]',
        BULK_PUBLISH_ENTRIES,
    )
    assert entry["entryId"] == "1"
    assert entry["metadata"] == {"a": ""}
    assert dumps(entry["event"]) == b'{"f":1,"n":12345678901234567000}'


def test_strings_that_are_not_utf8_are_repaired_not_refused() -> None:
    decoded = unmarshal(b'[{"key":"a\xffb","value":"\\ud800"}]', STATE_SET_REQUESTS)
    assert decoded[0]["key"] == "a\ufffdb"
    assert decoded[0]["value"] == "\ufffd"


def test_map_decode_matches_go_field_names_in_any_case() -> None:
    decoded = map_decode(
        {"KEY": "k", "eTaG": "3", "Options": {"concurrency": "first-write"}, "value": 2.0},
        SET_REQUEST,
    )
    assert (decoded["key"], decoded["etag"], decoded["value"]) == ("k", "3", 2.0)
    assert decoded["options"]["Concurrency"] == "first-write"
    with pytest.raises(GoTypeError) as caught:
        map_decode({"key": 1.0, "metadata": {"a": True}}, SET_REQUEST)
    assert str(caught.value) == (
        "2 error(s) decoding:\n\n"
        "* 'Key' expected type 'string', got unconvertible type 'float64', value: '1'\n"
        "* 'Metadata[a]' expected type 'string', got unconvertible type 'bool', value: 'true'"
    )


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_are_marshalled_as_go_does(value: float) -> None:
    text = dumps(value).decode()
    assert float(text) == value
    size = abs(value)
    assert ("e" in text) == (size != 0 and (size < 1e-6 or size >= 1e21))
    assert not text.endswith(".0")
    if "e" in text:
        exponent = text.split("e")[1]
        assert exponent[0] in "+-"
        assert not (exponent[0] == "-" and len(exponent) > 2 and exponent[1] == "0")
        assert len(exponent) >= 3 or exponent[0] == "-"
    assert math.copysign(1.0, float(text)) == math.copysign(1.0, value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (0.000001, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-10, "1.5e-10"),
        (-0.0, "-0"),
        (12345678901234567890.0, "12345678901234567000"),
    ],
)
def test_float_examples(value: float, text: str) -> None:
    assert dumps(value) == text.encode()
