"""Several worker processes of one service without `PROMETHEUS_MULTIPROC_DIR`: said once, at start-up.

Each worker (`uvicorn --workers 2`, gunicorn) then keeps its own counters and a scrape reaches
one of them, so the numbers a dashboard shows are one worker's, silently. A worker cannot ask
its server how many siblings it has, so each one, as its lifespan starts, leaves a mark (an
empty file named after its pid) in a folder shared by the processes of the same parent and
service, and looks for the marks of siblings that are still alive. The last to start sees the
others and warns; the mark is removed at shutdown, and a dead sibling's mark is ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path

__all__ = ["WorkerMark"]

_log = logging.getLogger("todo_observability")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


class WorkerMark:
    """This process's mark among the workers of `service_name` started by the same parent."""

    def __init__(self, service_name: str, *, root: Path | None = None):
        digest = hashlib.sha256(service_name.encode()).hexdigest()[:16]
        base = Path(tempfile.gettempdir()) if root is None else root
        self.folder = base / f"todo-observability-workers-{os.getuid()}-{os.getppid()}-{digest}"
        self.path = self.folder / str(os.getpid())

    def siblings(self) -> list[int]:
        """Pids of the other live workers that left a mark."""
        try:
            names = [entry.name for entry in self.folder.iterdir()]
        except OSError:
            return []
        me = os.getpid()
        return sorted(
            int(name) for name in names if name.isdigit() and int(name) != me and _alive(int(name))
        )

    def enter(self) -> list[int]:
        """Leave the mark; the live siblings seen. Never raises: this is only a diagnosis."""
        try:
            self.folder.mkdir(mode=0o700, exist_ok=True)
            self.path.touch()
        except OSError:
            return []
        return self.siblings()

    def leave(self) -> None:
        """Remove the mark (and the folder, when it was the last)."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.folder.rmdir()


def warn_if_workers_share_nothing(service_name: str) -> WorkerMark | None:
    """Leave this worker's mark and warn once if live siblings serve the same service.

    Returns the mark (to `leave()` at shutdown), or None in multiprocess mode, where the
    workers' numbers are summed and there is nothing to say.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    mark = WorkerMark(service_name)
    siblings = mark.enter()
    if siblings:
        _log.warning(
            "%d other worker process(es) of %s run beside this one (pid %s) without "
            "PROMETHEUS_MULTIPROC_DIR: each keeps its own metrics and a scrape sees one of "
            "them. Set PROMETHEUS_MULTIPROC_DIR to an empty folder shared by the workers "
            "(see the metrics page, 'Several worker processes').",
            len(siblings),
            service_name,
            ", ".join(str(pid) for pid in siblings),
            extra={"workers": [os.getpid(), *siblings]},
        )
    return mark
