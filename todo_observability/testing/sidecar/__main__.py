"""`python -m todo_observability.testing.sidecar ...` is `todo-obs sidecar ...`."""

from __future__ import annotations

import sys

from todo_observability.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["sidecar", *sys.argv[1:]]))
