from __future__ import annotations

import base64

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from todo_observability.redaction import CIRCULAR, REDACTED, TOO_DEEP, Redactor

CANARY = "c4n4ry-Secr3t-9f2b"


@pytest.mark.parametrize(
    "key",
    [
        "pass",
        "db_pass",
        "pw",
        "pwd",
        "bearer",
        "jwt",
        "key",
        "access_key",
        "AccessKey",
        "refresh",
        "dsn",
        "sentry_dsn",
        "database_url",
        "DATABASE_URL",
        "conn_str",
        "connection_string",
        "private",
        "otp",
        "pin",
        "userPin",
        "passphrase",
        "xsrf",
        "x-xsrf-token",
        "csrf",
        "X-CSRF-Token",
        "csrftoken",
        "sig",
    ],
)
def test_keys_the_narrow_list_missed_are_sensitive(key: str) -> None:
    assert Redactor().is_sensitive(key)


@pytest.mark.parametrize(
    "key",
    [
        "monkey",
        "keyboard",
        "compass",
        "bypass",
        "shipping",
        "opinion",
        "hotpath",
        "task_id",
        "status",
    ],
)
def test_short_words_match_only_as_whole_words(key: str) -> None:
    assert not Redactor().is_sensitive(key)


def test_keys_that_are_not_strings_are_read_as_text() -> None:
    redactor = Redactor()
    assert redactor.redact({1: "a", (1, 2): "b", ("key",): "c"}) == {
        1: "a",
        (1, 2): "b",
        ("key",): REDACTED,
    }


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        (
            f"cannot connect to postgres://app:{CANARY}@db:5432/todo",
            f"cannot connect to postgres://app:{REDACTED}@db:5432/todo",
        ),
        (f"redis://:{CANARY}@cache/0", f"redis://:{REDACTED}@cache/0"),
        (f"amqp://u:p@ss{CANARY}@mq/", f"amqp://u:{REDACTED}@mq/"),
        (f"Authorization: Bearer {CANARY}", f"Authorization: Bearer {REDACTED}"),
        (f"bearer {CANARY}.x/y=", f"bearer {REDACTED}"),
        (
            f"Basic {base64.b64encode(f'ann:{CANARY}'.encode()).decode()} refused",
            f"Basic {REDACTED} refused",
        ),
        (
            f"token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.{CANARY}",
            f"token {REDACTED}",
        ),
        (
            f"GET https://api/v1/x?page=2&api_key={CANARY}&sort=asc",
            f"GET https://api/v1/x?page=2&api_key={REDACTED}&sort=asc",
        ),
        (f"login failed password={CANARY} user=ann", f"login failed password={REDACTED} user=ann"),
        (f"host=db password='{CANARY} x' dbname=t", f"host=db password={REDACTED} dbname=t"),
        (
            f"bad config {{'user': 'ann', 'password': '{CANARY}', 'pin': 1234}}",
            f"bad config {{'user': 'ann', 'password': '{REDACTED}', 'pin': {REDACTED}}}",
        ),
        (f'{{"token":"{CANARY}\\"x","n":1}}', f'{{"token":"{REDACTED}","n":1}}'),
    ],
)
def test_secrets_are_scrubbed_by_their_shape(text: str, scrubbed: str) -> None:
    assert Redactor().scrub_text(text) == scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "task 12 completed in 3 ms",
        "Basic usage: call configure() once",
        "see https://example.com/docs/page",
        "x == y, page=2&sort=asc",
        "{'user': 'ann', 'count': 3}",
    ],
)
def test_text_without_a_secret_is_left_as_it_is(text: str) -> None:
    assert Redactor().scrub_text(text) == text


def test_text_without_any_marker_is_returned_without_a_copy() -> None:
    text = "".join(["task ", "completed"])
    assert Redactor().scrub_text(text) is text


def test_values_are_scrubbed_by_shape_under_any_key() -> None:
    redactor = Redactor()
    assert redactor.redact(
        {"next": f"https://x/cb?access_token={CANARY}", "items": [f"Bearer {CANARY}"]}
    ) == {"next": f"https://x/cb?access_token={REDACTED}", "items": [f"Bearer {REDACTED}"]}


def test_a_container_that_contains_itself_is_cut_where_it_recurs() -> None:
    loop: dict[str, object] = {"name": "a"}
    loop["self"] = loop
    items: list[object] = [1]
    items.append(items)
    assert Redactor().redact({"loop": loop, "items": items}) == {
        "loop": {"name": "a", "self": CIRCULAR},
        "items": [1, CIRCULAR],
    }


def test_nesting_beyond_the_depth_limit_is_cut() -> None:
    deep: list[object] = []
    current = deep
    for _ in range(100):
        inner: list[object] = []
        current.append(inner)
        current = inner
    scrubbed = Redactor().redact({"deep": deep})
    depth, value = 0, scrubbed["deep"]
    while isinstance(value, list):
        depth, value = depth + 1, value[0]
    assert value == TOO_DEEP
    assert depth < 40


def test_a_key_whose_str_fails_is_treated_as_sensitive() -> None:
    class Opaque:
        def __str__(self) -> str:
            raise ValueError("no")

    key = Opaque()
    assert Redactor().redact({key: "v"}) == {key: REDACTED}


_SECRETS = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    min_size=8,
    max_size=40,
)


def _planted(form: str, secret: str) -> str:
    if form == "dsn":
        return f"postgresql://app:{secret}@db.internal:5432/todo"
    if form == "bearer":
        return f"Authorization: Bearer {secret}"
    if form == "basic":
        return f"Basic {base64.b64encode(f'ann:{secret}'.encode()).decode()}"
    if form == "jwt":
        return f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.{secret}"
    if form == "query":
        return f"https://api.example.com/v1/items?page=2&access_token={secret}&sort=asc"
    assert form == "pair"
    return f"retrying with password={secret}"


@settings(max_examples=300, deadline=None)
@given(
    form=st.sampled_from(["dsn", "bearer", "basic", "jwt", "query", "pair"]),
    secret=_SECRETS,
    before=st.text(max_size=40),
    after=st.text(max_size=40),
)
def test_a_planted_secret_never_survives_scrubbing(
    form: str, secret: str, before: str, after: str
) -> None:
    planted = _planted(form, secret)
    assume(secret not in before and secret not in after and secret not in REDACTED)
    encoded = base64.b64encode(f"ann:{secret}".encode()).decode()
    scrubbed = Redactor().scrub_text(f"{before} {planted} {after}")
    assert secret not in scrubbed
    assert encoded not in scrubbed
    assert REDACTED in scrubbed
