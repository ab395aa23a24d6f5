"""Serve the frontend under uvicorn: `python -m reference_app.frontend` (`HOST`, `PORT`)."""

from __future__ import annotations

import sys

import uvicorn

from reference_app.frontend.app import create_app
from reference_app.frontend.settings import Settings
from todo_observability import ConfigurationError


def main() -> None:
    """Read the settings from the environment and serve the app until SIGINT or SIGTERM."""
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        sys.exit(f"frontend: {exc}")
    # log_config=None: keep the JSON logging configure() installed.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
