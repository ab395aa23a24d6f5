"""`todo-obs metrics`: the metric catalogue, as text or JSON."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import argparse


__all__ = ["add_parser", "run"]


def add_parser(subcommands: Any) -> None:
    """Register `metrics` on the `todo-obs` subcommands."""
    metrics = subcommands.add_parser("metrics", help="list the metric catalogue")
    metrics.add_argument("--json", action="store_true", help="as JSON")
    metrics.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Print the metric catalogue."""
    from todo_observability.metrics import CATALOGUE

    if args.json:
        rows = [
            {"name": s.name, "type": s.type, "labels": list(s.labels), "help": s.help}
            for s in CATALOGUE
        ]
        out.write(json.dumps(rows, indent=2) + "\n")
        return 0
    for spec in CATALOGUE:
        labels = "{" + ",".join(spec.labels) + "}" if spec.labels else ""
        out.write(f"{spec.type:<10} {spec.name}{labels}\n           {spec.help}\n")
    return 0
