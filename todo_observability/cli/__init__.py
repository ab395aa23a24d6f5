"""The `todo-obs` command: inspect configuration, the metric catalogue, traces, dead letters and alert routing.

One module per subcommand, each with `add_parser(subcommands)` and `run(args, out)`.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from todo_observability._version import __version__
from todo_observability.cli import alerts, config, dlq, metrics, sidecar, trace, verify_traces
from todo_observability.exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

_DESCRIPTION = (
    "Inspect configuration, the metric catalogue, traces, dead letters and alert routing."
)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run `todo-obs`; returns the exit status."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="todo-obs", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"todo-obs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (config, metrics, trace, verify_traces, dlq, alerts, sidecar):
        command.add_parser(commands)
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args, out)
    except ConfigurationError as exc:
        sys.stderr.write(f"todo-obs: {exc}\n")
        return 2
    return status
