"""`python -m reference_app.backend`: the backend under uvicorn, on `HOST`:`PORT` (127.0.0.1:8001)."""

from __future__ import annotations

import uvicorn

from reference_app.backend import create_app
from reference_app.backend.settings import Settings


def main() -> None:
    """Read the settings, build the app and serve it until SIGINT or SIGTERM."""
    settings = Settings.from_env()
    app = create_app(settings)
    # log_config=None: configure() already routes uvicorn's loggers through the JSON handler.
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
