"""The readers every service's settings share: one rule, one message format for each kind of value."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from reference_app.common import settings
from reference_app.common.settings import DEV_JWT_SECRET
from todo_observability import ConfigurationError

SECRET = "s" * 32


@pytest.mark.parametrize("name", ["prod", "production", "PROD", " Production "])
def test_production_is_prod_or_production_in_any_case(name: str) -> None:
    assert settings.is_production(name)


@pytest.mark.parametrize("name", ["dev", "test", "staging", "prod-like", ""])
def test_other_environments_are_not_production(name: str) -> None:
    assert not settings.is_production(name)


def test_blank_variables_count_as_unset() -> None:
    blank = dict.fromkeys(("HOST", "PORT", "FLAG", "WAIT", "COUNT", "TODO_OBS_ENVIRONMENT"), " ")
    assert settings.host(blank) == "127.0.0.1"
    assert settings.port(blank, "PORT", 8001) == 8001
    assert settings.flag(blank, "FLAG", True) is True
    assert settings.seconds(blank, "WAIT", 2.5) == 2.5
    assert settings.whole_number(blank, "COUNT", 7) == 7
    assert settings.environment(blank) == "dev"
    assert settings.optional(blank, "HOST") is None


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("Yes", True), ("on", True), ("0", False), ("OFF", False)]
)
def test_flags_read_the_usual_spellings(value: str, expected: bool) -> None:
    assert settings.flag({"FLAG": value}, "FLAG", not expected) is expected


@pytest.mark.parametrize(
    ("read", "value", "says"),
    [
        (
            lambda env: settings.port(env, "V", 8001),
            "70000",
            "V must be a port number between 1 and 65535, got '70000'; set it like V=8001, "
            "or unset it.",
        ),
        (
            lambda env: settings.flag(env, "V", False),
            "maybe",
            "V must be true or false, got 'maybe'; use true/false, 1/0, yes/no or on/off, "
            "or unset it (false).",
        ),
        (
            lambda env: settings.seconds(env, "V", 3.0),
            "0",
            "V must be a number of seconds greater than 0, got '0'; set it like V=3, or unset it.",
        ),
        (
            lambda env: settings.seconds(env, "V", 0.5, zero_allowed=True),
            "nan",
            "V must be a number of seconds, 0 or more, got 'nan'; set it like V=0.5, or unset it.",
        ),
        (
            lambda env: settings.whole_number(env, "V", 100),
            "2.5",
            "V must be a whole number greater than 0, got '2.5'; set it like V=100, or unset it.",
        ),
    ],
)
def test_a_bad_value_is_named_shown_and_fixed(
    read: Callable[[Mapping[str, str]], object], value: str, says: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        read({"V": value})
    assert str(caught.value) == says
    assert (caught.value.env_var, caught.value.field, caught.value.value) == ("V", "v", value)


def test_a_host_with_a_space_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="HOST must be a host name or address"):
        settings.host({"HOST": "0.0.0.0 8000"})


def test_without_a_secret_the_development_one_is_used_outside_production() -> None:
    assert settings.jwt_secret({}, "dev") == DEV_JWT_SECRET
    assert settings.jwt_secret({"JWT_SECRET": SECRET}, "prod") == SECRET


@pytest.mark.parametrize(
    ("env", "environment", "says"),
    [
        ({}, "production", "JWT_SECRET is required when TODO_OBS_ENVIRONMENT='production'"),
        ({"JWT_SECRET": " "}, "prod", "JWT_SECRET is required"),
        ({"JWT_SECRET": "hunter2"}, "dev", "at least 32 bytes for HS256, got 7 byte(s)"),
        ({"JWT_SECRET": DEV_JWT_SECRET}, "PROD", "the public development secret"),
    ],
)
def test_the_jwt_secret_rule(env: dict[str, str], environment: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        settings.jwt_secret(env, environment)
    assert says in str(caught.value)
    assert "secrets.token_urlsafe(32)" in str(caught.value)  # how to make one
    assert "hunter2" not in str(caught.value)
    assert caught.value.env_var == "JWT_SECRET"
