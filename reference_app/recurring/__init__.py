"""recurring-task-service: creates the next occurrence of each completed recurring task.

It subscribes to `task.completed` on `task-events` (Dapr pub/sub), computes the
next occurrence of the task's recurrence rule and has backend create it through
Dapr service invocation, acting for the task's owner. Run it with
`python -m reference_app.recurring` (see `Settings` for the environment).
"""

from __future__ import annotations

from reference_app.recurring.app import create_app
from reference_app.recurring.settings import Settings

__all__ = ["Settings", "create_app"]
