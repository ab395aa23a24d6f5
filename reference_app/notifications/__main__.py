"""`python -m reference_app.notifications`: the notification service under uvicorn (`HOST`, `PORT`)."""

from __future__ import annotations

import sys

from reference_app.notifications.app import create_app
from reference_app.notifications.settings import Settings
from todo_observability import ConfigurationError


def main() -> None:
    """Read the settings, build the app and serve it; a bad setting exits with its message."""
    import uvicorn

    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        print(f"notification-service: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
