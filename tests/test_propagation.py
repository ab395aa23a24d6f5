"""`todo_observability.propagation`, member by member against the W3C Trace Context text.

The quoted rules are from the `tracestate` and `traceparent` sections of W3C Trace
Context (Level 1 Recommendation; Level 2 for the key grammar).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry

from todo_observability._observability import Observability
from todo_observability.propagation import (
    MAX_TRACESTATE_LENGTH,
    TraceContextPropagator,
    W3CTraceState,
    _add_field,
    _parse_tracestate,
    _serialise_tracestate,
)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
VALID = f"00-{TRACE_ID}-{SPAN_ID}-01"
PROPAGATOR = TraceContextPropagator()


def extracted(carrier: dict[str, str]) -> SpanContext:
    return trace.get_current_span(PROPAGATOR.extract(carrier)).get_span_context()


def state_of(header: str) -> dict[str, str] | None:
    members = _parse_tracestate(header)
    return None if members is None else dict(members)


# --- the reference model: the specification's ABNF, character by character ----------------

LCALPHA = set("abcdefghijklmnopqrstuvwxyz")
DIGIT = set("0123456789")
KEYCHAR = LCALPHA | DIGIT | set("_-*/@")
NBLK_CHR = {chr(c) for c in [*range(0x21, 0x2C), *range(0x2D, 0x3D), *range(0x3E, 0x7F)]}
CHR = NBLK_CHR | {" "}


def model_key(key: str) -> bool:
    # key = ( lcalpha / DIGIT ) 0*255 ( keychar )
    return 1 <= len(key) <= 256 and key[0] in LCALPHA | DIGIT and set(key) <= KEYCHAR


def model_value(value: str) -> bool:
    # value = 0*255(chr) nblk-chr
    return 1 <= len(value) <= 256 and set(value) <= CHR and value[-1] in NBLK_CHR


def model(header: str) -> list[tuple[str, str]] | None:
    """The list, or None where the header cannot be parsed and is discarded whole."""
    members: list[tuple[str, str]] = []
    for raw in header.split(","):
        member = raw.strip(
            " \t"
        )  # "Spaces and horizontal tabs surrounding list-members are ignored."
        if member == "":
            continue  # "Empty and whitespace-only list members are allowed."
        key, equals, value = member.partition("=")
        if not equals or not model_key(key) or not model_value(value):
            return None
        if key in dict(members):  # "Only one entry per key is allowed"
            return None
        members.append((key, value))
    if len(members) > 32:  # "There can be a maximum of 32 list-members in a list."
        return None
    return members


# --- tracestate: keys --------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "0",  # Level 2: a key may begin with a digit
        "z" * 256,
        "abcdefghijklmnopqrstuvwxyz0123456789_-*/@",
        "tenant@vendor",
        "t" * 242 + "@v",  # Level 2: no 241/14 split around the @
        "t@" + "v" * 15,
        "foo@",
        "foo@@bar",
        "foo@bar@baz",
        "1@2",
    ],
)
def test_a_key_of_the_current_grammar_is_kept(key: str) -> None:
    assert state_of(f"{key}=1,bar=2") == {key: "1", "bar": "2"}


@pytest.mark.parametrize(
    "key",
    ["", "@foo", "_foo", "-foo", "*foo", "/foo", "Foo", "fOo", "foo.bar", "foo bar", "foo\tbar",
     "z" * 257, "t" * 250 + "@" + "v" * 6, "café", "foo:bar"],
)  # fmt: skip
def test_a_key_outside_the_grammar_discards_the_whole_list(key: str) -> None:
    assert state_of(f"bar=2,{key}=1") is None


# --- tracestate: values ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "1",
        " leading spaces are part of the value",  # "all leading spaces MUST be preserved"
        "x" * 256,
        "".join(sorted(NBLK_CHR)) + " ~",
        "!",
        "~",
    ],
)
def test_a_value_of_the_grammar_is_kept_as_sent(value: str) -> None:
    assert state_of(f"foo={value}") == {"foo": value}


def test_trailing_spaces_of_a_value_are_optional_whitespace() -> None:
    # "all trailing spaces are considered to be optional whitespace characters not part of the value"
    assert state_of("foo=1   ,bar=2\t") == {"foo": "1", "bar": "2"}


@pytest.mark.parametrize(
    "value", ["", " ", "x" * 257, "a=b", "a\tb", "a\x7fb", "a\x00b", "é", "a\nb"]
)
def test_a_value_outside_the_grammar_discards_the_whole_list(value: str) -> None:
    assert state_of(f"bar=2,foo={value}") is None


# --- tracestate: the list ----------------------------------------------------------------


def test_empty_and_whitespace_only_members_are_skipped() -> None:
    assert state_of("") == {}
    assert state_of(" , \t ,") == {}
    assert state_of(",foo=1,, \t ,bar=2,") == {"foo": "1", "bar": "2"}


def test_thirty_two_members_are_kept_in_order_and_thirty_three_discarded() -> None:
    thirty_two = ",".join(f"k{n}={n}" for n in range(32))
    assert list(state_of(thirty_two) or {}) == [f"k{n}" for n in range(32)]
    assert state_of(thirty_two + ",k32=32") is None
    # Empty members do not count: a full list combined with an empty field is still accepted.
    assert state_of(thirty_two + ",, ") is not None


def test_a_repeated_key_discards_the_whole_list() -> None:
    assert state_of("foo=1,bar=2,foo=1") is None


@given(
    st.lists(
        st.one_of(
            st.sampled_from(["foo=1", "bar=2", "t@v=3", "foo@=4", "@x=5", "FOO=6", "k=", "", " "]),
            st.builds(
                "{}{}={}".format,
                st.sampled_from(["a", "z9", "t@", "0", "@", "A", ""]),
                st.text(alphabet="abz09_-*/@.", max_size=258),
                st.text(alphabet="az ~=\t,", min_size=0, max_size=258),
            ),
            st.builds(lambda n: f"m{n}=v", st.integers(0, 40)),
        ),
        max_size=40,
    ),
    st.sampled_from([",", " , ", "\t,", ", \t"]),
)
def test_the_parser_agrees_with_the_reference_model(members: list[str], separator: str) -> None:
    header = separator.join(members)
    assert _parse_tracestate(header) == model(header)


@given(
    st.one_of(st.sampled_from([31, 32, 33]), st.integers(0, 40)),
    st.lists(st.integers(0, 40), max_size=4),
    st.one_of(st.none(), st.integers(0, 40)),
)
def test_lists_around_the_member_limit_agree_with_the_reference_model(
    count: int, empties: list[int], repeat: int | None
) -> None:
    members = [f"k{n}=v{n}" for n in range(count)]
    for position in empties:
        members.insert(min(position, len(members)), " ")
    if repeat is not None and repeat < count:
        members.append(f"k{repeat}=again")
    header = ",".join(members)
    assert _parse_tracestate(header) == model(header)


valid_keys = st.text(alphabet=sorted(KEYCHAR), max_size=255).flatmap(
    lambda rest: st.sampled_from(sorted(LCALPHA | DIGIT)).map(lambda first: first + rest)
)
valid_values = st.text(alphabet=sorted(CHR), max_size=255).flatmap(
    lambda rest: st.sampled_from(sorted(NBLK_CHR)).map(lambda last: rest + last)
)
valid_lists = st.lists(
    st.tuples(valid_keys, valid_values), max_size=32, unique_by=lambda member: member[0]
)


@given(valid_lists)
def test_a_valid_list_round_trips_through_extract_and_inject(
    members: list[tuple[str, str]],
) -> None:
    header = ",".join(f"{k}={v}" for k, v in members)
    context = extracted({"traceparent": VALID, "tracestate": header})
    assert list(context.trace_state.items()) == members
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, trace.set_span_in_context(NonRecordingSpan(context)))
    sent = carrier.get("tracestate", "")
    assert len(sent) <= MAX_TRACESTATE_LENGTH
    if len(header) <= MAX_TRACESTATE_LENGTH:
        assert sent == header
    else:
        # Truncated by whole entries, the survivors in their order.
        kept = _parse_tracestate(sent)
        assert kept is not None
        assert kept == [member for member in members if member in kept]


# --- tracestate: truncation on the way out -----------------------------------------------


def test_truncation_removes_long_entries_first_then_from_the_end() -> None:
    members = [("a", "1"), ("long1", "x" * 200), ("b", "2"), ("long2", "y" * 200), ("c", "3")]
    assert _serialise_tracestate(members, limit=1000) == ",".join(f"{k}={v}" for k, v in members)
    # "Entries larger than 128 characters long SHOULD be removed first." (the right-most first)
    assert _serialise_tracestate(members, limit=220) == f"a=1,long1={'x' * 200},b=2,c=3"
    assert _serialise_tracestate(members, limit=20) == "a=1,b=2,c=3"
    # "Then entries SHOULD be removed starting from the end of tracestate."
    assert _serialise_tracestate(members, limit=7) == "a=1,b=2"
    assert _serialise_tracestate(members, limit=2) == ""


def test_the_longest_tracestate_sent_is_at_least_what_the_spec_asks_to_propagate() -> None:
    # "Vendors SHOULD propagate at least 512 characters of a combined header."
    assert 512 <= MAX_TRACESTATE_LENGTH < 8192


# --- traceparent ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        VALID,
        f" \t{VALID}\t ",
        f"00-{TRACE_ID}-{SPAN_ID}-ff",
        f"cc-{TRACE_ID}-{SPAN_ID}-01",
        f"cc-{TRACE_ID}-{SPAN_ID}-01-future-fields",
    ],
)
def test_a_valid_traceparent_is_the_remote_parent(header: str) -> None:
    context = extracted({"traceparent": header})
    assert (f"{context.trace_id:032x}", f"{context.span_id:016x}") == (TRACE_ID, SPAN_ID)
    assert context.is_remote


@pytest.mark.parametrize(
    "header",
    [
        "",
        f"ff-{TRACE_ID}-{SPAN_ID}-01",  # "Version ff is invalid."
        f"00-{TRACE_ID}-{SPAN_ID}-01-",  # version 00 has exactly four fields
        f"00-{TRACE_ID}-{SPAN_ID}-01.",
        f"cc-{TRACE_ID}-{SPAN_ID}-01.future",  # flags end the string or are followed by a dash
        f"00-{TRACE_ID.upper()}-{SPAN_ID}-01",  # HEXDIGLC: lower case only
        f"00-{'0' * 32}-{SPAN_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"0-{TRACE_ID}-{SPAN_ID}-01",
        f"00-{TRACE_ID}-{SPAN_ID}-1",
        f"{VALID},{VALID}",  # combined from two fields: no single parent
    ],
)
def test_an_invalid_traceparent_restarts_the_trace_and_ignores_tracestate(header: str) -> None:
    context = PROPAGATOR.extract({"traceparent": header, "tracestate": "foo=1"})
    assert not trace.get_current_span(context).get_span_context().is_valid


def test_a_higher_version_keeps_only_the_flags_this_version_defines() -> None:
    assert extracted({"traceparent": f"cc-{TRACE_ID}-{SPAN_ID}-ff"}).trace_flags == 0x03


def test_inject_writes_version_00_and_clears_undefined_flags() -> None:
    # "Other Flags ... Vendors MUST set those to zero."
    context = SpanContext(int(TRACE_ID, 16), int(SPAN_ID, 16), True, TraceFlags(0xFF))
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, trace.set_span_in_context(NonRecordingSpan(context)))
    assert carrier == {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-03"}


def test_inject_writes_a_plain_opentelemetry_trace_state() -> None:
    state = TraceState([("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")])
    context = SpanContext(int(TRACE_ID, 16), int(SPAN_ID, 16), True, TraceFlags(1), state)
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, trace.set_span_in_context(NonRecordingSpan(context)))
    assert carrier["tracestate"] == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


def test_nothing_is_injected_without_a_valid_span() -> None:
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, trace.set_span_in_context(trace.INVALID_SPAN))
    assert carrier == {}
    assert PROPAGATOR.fields == {"traceparent", "tracestate"}


# --- W3CTraceState -------------------------------------------------------------------------


def test_changes_to_a_trace_state_keep_current_grammar_keys() -> None:
    state = W3CTraceState([("t" * 242 + "@v", "1"), ("foo@bar@baz", "2")])
    updated = state.add("rojo", "3").update("foo@bar@baz", "4").delete("nope")
    assert isinstance(updated, W3CTraceState)
    assert list(updated.items()) == [("foo@bar@baz", "4"), ("rojo", "3"), ("t" * 242 + "@v", "1")]
    assert updated.delete("rojo").to_header() == f"foo@bar@baz=4,{'t' * 242}@v=1"
    assert state.add("Bad", "1") is state
    assert state.add("rojo", "bad,value") is state
    assert "rojo" not in state


def test_a_trace_state_holds_at_most_thirty_two_members() -> None:
    full = W3CTraceState([(f"k{n}", "v") for n in range(32)])
    assert full.add("one-more", "v") is full
    assert full.update("one-more", "v") is full
    assert next(iter(full.update("k31", "w").keys())) == "k31"
    assert len(W3CTraceState([(f"k{n}", "v") for n in range(33)])) == 0


# --- repeated header fields ----------------------------------------------------------------


def test_repeated_list_fields_are_combined_with_commas_in_order() -> None:
    carrier: dict[str, str] = {}
    for value in ("rojo=1", "", "congo=2"):
        _add_field(carrier, "tracestate", value)
    _add_field(carrier, "baggage", "request_id=r")
    _add_field(carrier, "baggage", "user_id=u")
    assert carrier == {"tracestate": "rojo=1,,congo=2", "baggage": "request_id=r,user_id=u"}
    assert state_of(carrier["tracestate"]) == {"rojo": "1", "congo": "2"}


def test_a_repeated_traceparent_is_no_parent_for_any_propagator() -> None:
    carrier: dict[str, str] = {}
    for value in (VALID, VALID, VALID):
        _add_field(carrier, "traceparent", value)
    assert carrier == {"traceparent": ""}
    for propagator in (PROPAGATOR, TraceContextTextMapPropagator()):
        context = propagator.extract(carrier)
        assert not trace.get_current_span(context).get_span_context().is_valid


# --- installation and the OTEL_PROPAGATORS entry point -------------------------------------


@pytest.fixture
def default_textmap(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenTelemetry's default global propagator, as without OTEL_PROPAGATORS; put back after."""
    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    default = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    monkeypatch.setattr(propagate, "_HTTP_TEXT_FORMAT", default)


def tracecontext_part() -> Any:
    textmap = propagate.get_global_textmap()
    return [type(part) for part in getattr(textmap, "_propagators", [textmap])]


@pytest.mark.usefixtures("default_textmap")
def test_configure_installs_ours_with_baggage_and_shutdown_puts_the_default_back(
    make_observability: Any,
) -> None:
    before = propagate.get_global_textmap()
    first: Observability = make_observability()
    second: Observability = make_observability()
    assert tracecontext_part() == [TraceContextPropagator, W3CBaggagePropagator]
    first.shutdown()
    assert tracecontext_part() == [TraceContextPropagator, W3CBaggagePropagator]
    second.shutdown()
    assert propagate.get_global_textmap() is before
    # Baggage still travels with ours installed.
    assert baggage.get_baggage("k", W3CBaggagePropagator().extract({"baggage": "k=v"})) == "v"


@pytest.mark.usefixtures("default_textmap")
def test_otel_propagators_wins_over_configure(
    make_observability: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,baggage")
    before = propagate.get_global_textmap()
    make_observability()
    assert propagate.get_global_textmap() is before


@pytest.mark.usefixtures("default_textmap")
def test_a_propagator_set_in_code_wins_over_configure(
    make_observability: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = TraceContextTextMapPropagator()
    monkeypatch.setattr(propagate, "_HTTP_TEXT_FORMAT", chosen)
    obs: Observability = make_observability()
    assert propagate.get_global_textmap() is chosen
    obs.shutdown()
    assert propagate.get_global_textmap() is chosen


def test_the_entry_point_names_our_propagator() -> None:
    # OTEL_PROPAGATORS=todo_tracecontext loads the group `opentelemetry_propagator`.
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    section = pyproject.split("[project.entry-points.opentelemetry_propagator]", 1)[1]
    match = re.search(r'^todo_tracecontext = "([\w.]+):(\w+)"$', section, re.MULTILINE)
    assert match is not None
    module = __import__(match.group(1), fromlist=[match.group(2)])
    assert getattr(module, match.group(2)) is TraceContextPropagator


def test_a_propagator_no_package_provides_says_which_package_to_install() -> None:
    import os
    import subprocess
    import sys

    code = (
        "import todo_observability as obs\n"
        "try:\n"
        "    obs.configure(service_name='x', traces_exporter='none', load_plugins=False)\n"
        "except obs.ConfigurationError as exc:\n"
        "    print(type(exc).__name__, exc.field, exc)\n"
    )
    env = {**os.environ, "OTEL_PROPAGATORS": "tracecontext,b3multi"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("ConfigurationError OTEL_PROPAGATORS ")
    assert "pip install opentelemetry-propagator-b3" in out
    assert "'tracecontext,b3multi'" in out


def test_propagators_without_baggage_warn_once_that_the_ids_stop_here(
    make_observability: Any, captured_logs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext")
    make_observability(service_name="one")
    make_observability(service_name="two", registry=CollectorRegistry())
    warnings = [
        line for line in captured_logs.lines if "has no baggage propagator" in line["message"]
    ]
    assert len(warnings) == 1
    assert "OTEL_PROPAGATORS=tracecontext,baggage" in warnings[0]["message"]
