"""`python -m reference_app.backend`: the backend under uvicorn, on `HOST`:`PORT` (127.0.0.1:8001)."""

from __future__ import annotations

from reference_app.backend.app import create_app
from reference_app.backend.settings import Settings
from reference_app.common.events import BACKEND
from reference_app.common.startup import serve


def main() -> None:
    """Serve the app until SIGINT or SIGTERM; a bad setting exits 2 with one line on stderr."""
    serve(BACKEND, Settings.from_env, create_app)


if __name__ == "__main__":
    main()
