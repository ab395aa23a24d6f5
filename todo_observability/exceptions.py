"""The exceptions the SDK raises: one base class, and a configuration error that names its field."""

from __future__ import annotations

__all__ = ["ConfigurationError", "MissingExtraError", "ObservabilityError"]


class ObservabilityError(Exception):
    """Base class of every error raised by todo-observability."""


class ConfigurationError(ObservabilityError, ValueError):
    """A setting has an invalid value.

    The message says which setting (and its environment variable), the value
    that was given, and how to fix it.

    Attributes:
        field: The name of the `configure()` argument that is wrong.
        env_var: The environment variable the value came from, if it came from one.
        value: The offending value, as given.
    """

    def __init__(
        self, message: str, *, field: str, env_var: str | None = None, value: object = None
    ):
        super().__init__(message)
        self.field = field
        self.env_var = env_var
        self.value = value


class MissingExtraError(ObservabilityError, ImportError):
    """An optional integration was used without its extra installed."""

    def __init__(self, feature: str, extra: str, module: str):
        super().__init__(
            f"{feature} needs the {module!r} package, which is not installed. "
            f"Install it with: pip install 'todo-observability[{extra}]'"
        )
        self.extra = extra


def _describe(exc: BaseException) -> str:
    """`str(exc)`, or a marker when the exception cannot say what it is (its `__str__` raises)."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a hostile __str__ must not fail the handling of its failure
        return f"<{type(exc).__name__} whose str() raised>"
