"""gunicorn server hooks for services in prometheus_client's multiprocess mode.

In `gunicorn.conf.py`:

    from todo_observability.gunicorn import child_exit, on_starting  # noqa: F401

`on_starting` empties `PROMETHEUS_MULTIPROC_DIR` once, when the master starts (not when a
worker restarts, which must keep the counters of the workers that still run), and `child_exit`
tells prometheus_client a worker is gone, so the gauges that count only live processes (the
requests in flight) forget it. Without `PROMETHEUS_MULTIPROC_DIR` both do nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["child_exit", "on_starting"]


def on_starting(server: Any) -> None:
    """The `on_starting` hook of gunicorn: remove the previous run's metric files."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.glob("*.db"):
        entry.unlink(missing_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """The `child_exit` hook of gunicorn: forget the live gauges of the worker that exited."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
