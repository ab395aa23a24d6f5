"""What every service reads from its environment, read and checked one way.

Each service's `Settings.from_env()` reads its own variables with these functions: its host
and ports, booleans, durations and counts, `TODO_OBS_ENVIRONMENT` and whether it names
production, and `JWT_SECRET` with the rule every service applies (required in production, at
least 32 bytes, never the public development secret in production). A blank variable counts as
unset. A bad value raises a `ConfigurationError` that names the variable, shows the value and
says how to fix it:

    PORT must be a port number between 1 and 65535, got 'eighty'; set it like PORT=8001, or unset it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from reference_app.common.auth import DEV_JWT_SECRET
from todo_observability import ConfigurationError

__all__ = [
    "DEV_JWT_SECRET",
    "MIN_SECRET_BYTES",
    "PROD_ENVIRONMENTS",
    "check_jwt_secret",
    "check_port",
    "environment",
    "flag",
    "host",
    "invalid",
    "is_production",
    "jwt_secret",
    "optional",
    "port",
    "seconds",
    "text",
    "whole_number",
]

PROD_ENVIRONMENTS = frozenset({"prod", "production"})
"""Values of `TODO_OBS_ENVIRONMENT` that mean production, in any case (as the SDK reads them)."""
MIN_SECRET_BYTES = 32
"""The shortest `JWT_SECRET`: HS256 wants a key at least as long as its output."""

_GENERATE = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_PORT = "a port number between 1 and 65535"


def invalid(variable: str, value: object, expected: str, fix: str) -> ConfigurationError:
    """The error for `variable` holding `value` instead of what it must be.

    Args:
        variable: The environment variable; its lower-case form is the error's `field`.
        value: The value, as given (shown with `!r`); never a secret.
        expected: What the value must be, completing "`variable` must be ...".
        fix: How to fix it, a sentence of its own.
    """
    return ConfigurationError(
        f"{variable} must be {expected}, got {value!r}; {fix}",
        field=variable.lower(),
        env_var=variable,
        value=value,
    )


def text(env: Mapping[str, str], variable: str, default: str) -> str:
    """`variable`, stripped, or `default` when it is unset or blank."""
    return env.get(variable, "").strip() or default


def optional(env: Mapping[str, str], variable: str) -> str | None:
    """`variable`, stripped, or None when it is unset or blank."""
    return env.get(variable, "").strip() or None


def environment(env: Mapping[str, str]) -> str:
    """`TODO_OBS_ENVIRONMENT`, as given (`dev` when unset)."""
    return text(env, "TODO_OBS_ENVIRONMENT", "dev")


def is_production(name: str) -> bool:
    """Whether the environment `name` is production (`prod` or `production`, in any case)."""
    return name.strip().lower() in PROD_ENVIRONMENTS


def host(env: Mapping[str, str], default: str = "127.0.0.1") -> str:
    """`HOST`, the interface uvicorn listens on."""
    value = text(env, "HOST", default)
    if any(char.isspace() for char in value):
        raise invalid(
            "HOST",
            value,
            "a host name or address",
            f"set it like HOST=0.0.0.0, or unset it ({default}).",
        )
    return value


def port(env: Mapping[str, str], variable: str, default: int) -> int:
    """The port `variable` names, 1 to 65535."""
    value = env.get(variable, "").strip()
    if not value:
        return default
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise invalid(variable, value, _PORT, f"set it like {variable}={default}, or unset it.")
    return int(value)


def check_port(variable: str, value: int, default: int) -> None:
    """Refuse a port given in code that is not 1 to 65535."""
    if not 0 < value < 65536:
        raise invalid(variable, value, _PORT, f"set it like {variable}={default}, or unset it.")


def flag(env: Mapping[str, str], variable: str, default: bool) -> bool:
    """The boolean `variable`: true/false, 1/0, yes/no or on/off, in any case."""
    value = env.get(variable, "").strip()
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    if not value:
        return default
    raise invalid(
        variable,
        value,
        "true or false",
        f"use true/false, 1/0, yes/no or on/off, or unset it ({str(default).lower()}).",
    )


def seconds(
    env: Mapping[str, str], variable: str, default: float, *, zero_allowed: bool = False
) -> float:
    """The duration `variable`, in seconds: a finite number above 0 (or 0 with `zero_allowed`)."""
    value = env.get(variable, "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero_allowed):
        expected = "a number of seconds" + (", 0 or more" if zero_allowed else " greater than 0")
        raise invalid(
            variable, value, expected, f"set it like {variable}={default:g}, or unset it."
        )
    return number


def whole_number(
    env: Mapping[str, str],
    variable: str,
    default: int,
    *,
    expected: str = "a whole number greater than 0",
) -> int:
    """The count `variable`: a whole number, 1 or more."""
    value = env.get(variable, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise invalid(variable, value, expected, f"set it like {variable}={default}, or unset it.")
    return int(value)


def jwt_secret(env: Mapping[str, str], environment: str) -> str:
    """`JWT_SECRET`, checked with `check_jwt_secret`; unset, the development secret outside production.

    Raises:
        ConfigurationError: it is unset in production, too short, or the development secret
            in production; the message never shows the secret.
    """
    secret = env.get("JWT_SECRET", "")
    if not secret.strip():
        if is_production(environment):
            raise ConfigurationError(
                f"JWT_SECRET is required when TODO_OBS_ENVIRONMENT={environment!r}: set it to "
                f"the secret every service shares; {_GENERATE}",
                field="jwt_secret",
                env_var="JWT_SECRET",
            )
        return DEV_JWT_SECRET
    check_jwt_secret(secret, environment)
    return secret


def check_jwt_secret(secret: str, environment: str) -> None:
    """Refuse a JWT secret shorter than `MIN_SECRET_BYTES`, or the development one in production."""
    length = len(secret.encode())
    if length < MIN_SECRET_BYTES:
        # The value is a secret: say how long it is, never what it is.
        raise ConfigurationError(
            f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes for HS256, got {length} "
            f"byte(s); set it to the secret every service shares; {_GENERATE}",
            field="jwt_secret",
            env_var="JWT_SECRET",
        )
    if secret == DEV_JWT_SECRET and is_production(environment):
        raise ConfigurationError(
            "JWT_SECRET is the public development secret, which anyone can sign tokens with, "
            f"and TODO_OBS_ENVIRONMENT={environment!r} is production: set a secret of your own "
            f"(the same for every service); {_GENERATE}",
            field="jwt_secret",
            env_var="JWT_SECRET",
        )
