"""The frontend service (Dapr app id `frontend`): a small web page over backend's tasks API.

`create_app(settings)` builds it; `python -m reference_app.frontend` serves it under uvicorn.
"""

from __future__ import annotations

from reference_app.frontend.app import create_app
from reference_app.frontend.settings import Settings

__all__ = ["Settings", "create_app"]
