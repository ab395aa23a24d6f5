"""`python -m reference_app.frontend`: the frontend under uvicorn, on `HOST`:`PORT` (127.0.0.1:8000)."""

from __future__ import annotations

from reference_app.common.events import FRONTEND
from reference_app.common.startup import serve
from reference_app.frontend.app import create_app
from reference_app.frontend.settings import Settings


def main() -> None:
    """Serve the app until SIGINT or SIGTERM; a bad setting exits 2 with one line on stderr."""
    serve(FRONTEND, Settings.from_env, create_app)


if __name__ == "__main__":
    main()
