"""`todo-obs config`: every setting as resolved from the environment, and where it came from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TextIO

from todo_observability.config import (
    DEFAULT,
    ENVIRONMENT_ONLY,
    IDENTITY,
    OPTIONS,
    explain_settings,
)

if TYPE_CHECKING:
    import argparse


__all__ = ["add_parser", "run"]


def add_parser(subcommands: Any) -> None:
    """Register `config` on the `todo-obs` subcommands."""
    subcommands.add_parser(
        "config", help="show the settings resolved from the environment, and where each comes from"
    ).set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Print each setting, its value and its source.

    A variable that sets a value is marked with how it ranks against an argument of
    `configure()`: the identity settings' variables beat one, the others' yield to one (but
    for the variables `configure()` has no argument for).
    """
    settings, sources = explain_settings()
    width = max(len(option.field) for option in OPTIONS)
    out.write(f"{'setting':<{width}} {'value':<45} source\n")
    for option in OPTIONS:
        value = getattr(settings, option.field)
        source = sources[option.field]
        if source != DEFAULT and option.field not in ENVIRONMENT_ONLY:
            rank = "beats" if option.field in IDENTITY else "yields to"
            source = f"{source} ({rank} configure())"
        if isinstance(value, tuple):
            value = ",".join(value)
        out.write(f"{option.field:<{width}} {value!s:<45} {source}\n")
    return 0
