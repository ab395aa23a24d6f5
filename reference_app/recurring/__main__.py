"""`python -m reference_app.recurring`: the service under uvicorn, on `HOST`:`PORT` (127.0.0.1:8002)."""

from __future__ import annotations

from reference_app.common.events import RECURRING
from reference_app.common.startup import serve
from reference_app.recurring.app import create_app
from reference_app.recurring.settings import Settings


def main() -> None:
    """Serve the app until SIGINT or SIGTERM; a bad setting exits 2 with one line on stderr."""
    serve(RECURRING, Settings.from_env, create_app)


if __name__ == "__main__":
    main()
