"""`python -m reference_app.notifications`: the service under uvicorn, on `HOST`:`PORT` (127.0.0.1:8003)."""

from __future__ import annotations

from reference_app.common.events import NOTIFICATIONS
from reference_app.common.startup import serve
from reference_app.notifications.app import create_app
from reference_app.notifications.settings import Settings


def main() -> None:
    """Serve the app until SIGINT or SIGTERM; a bad setting exits 2 with one line on stderr."""
    serve(NOTIFICATIONS, Settings.from_env, create_app)


if __name__ == "__main__":
    main()
