"""`python -m reference_app.recurring`: run the service under uvicorn (`HOST`, `PORT`)."""

from __future__ import annotations

import sys

from reference_app.recurring.app import create_app
from reference_app.recurring.settings import Settings
from todo_observability import ConfigurationError


def main() -> None:
    """Read the settings from the environment and serve the app until SIGINT or SIGTERM."""
    import uvicorn

    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        # Before logging is configured: one plain line on stderr and a non-zero exit.
        sys.exit(f"recurring-task-service: {exc}")
    # log_config=None: uvicorn keeps the JSON logging configure() set up.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
