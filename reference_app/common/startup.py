"""How every service starts: `python -m reference_app.<service>` reads its settings and serves its app.

A bad setting stops the process before it serves anything, the same way for every service: one
line on stderr, `<service>: <what is wrong and how to fix it>`, and exit status 2, the status of a
command-line usage error (argparse's), so a supervisor can tell a misconfiguration from a crash.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from todo_observability import ConfigurationError

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["BAD_SETTING_EXIT_STATUS", "serve"]

BAD_SETTING_EXIT_STATUS = 2
"""The exit status of a service refusing a setting (as argparse exits on a usage error)."""


class ServedSettings(Protocol):
    """What start-up needs from a service's settings: where uvicorn listens."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


SettingsT = TypeVar("SettingsT", bound=ServedSettings)


def serve(
    service: str,
    read_settings: Callable[[], SettingsT],
    create_app: Callable[[SettingsT], FastAPI],
) -> None:
    """Read the settings, build the app and serve it under uvicorn until SIGINT or SIGTERM.

    Args:
        service: The service's Dapr app id, which starts the line a bad setting prints.
        read_settings: Reads and validates the settings (the service's `Settings.from_env`).
        create_app: Builds the app from them (it may refuse an SDK setting, such as
            `OTEL_TRACES_SAMPLER_ARG`, with a `ConfigurationError` too).

    Raises:
        SystemExit: with `BAD_SETTING_EXIT_STATUS`, after printing the error, when a setting
            is refused.
    """
    import uvicorn

    try:
        settings = read_settings()
        app = create_app(settings)
    except ConfigurationError as exc:
        # Before logging is configured (or instead of it): one plain line, no traceback.
        print(f"{service}: {exc}", file=sys.stderr)
        raise SystemExit(BAD_SETTING_EXIT_STATUS) from None
    # log_config=None: uvicorn's loggers keep the JSON handler configure() installed.
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None)
