"""`todo-obs config`: every setting as resolved from the environment, and where it came from."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, TextIO

from todo_observability.config import OPTIONS, resolve_settings

if TYPE_CHECKING:
    import argparse


__all__ = ["add_parser", "run"]


def add_parser(subcommands: Any) -> None:
    """Register `config` on the `todo-obs` subcommands."""
    subcommands.add_parser(
        "config", help="show the settings resolved from the environment, and where each comes from"
    ).set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Print each setting, its value and its source."""
    settings = resolve_settings()
    resource = settings.resource_attributes
    from_resource = {
        "service_name": "service.name" in resource,
        "service_version": "service.version" in resource,
        "environment": "deployment.environment.name" in resource
        or "deployment.environment" in resource,
    }
    width = max(len(option.field) for option in OPTIONS)
    out.write(f"{'setting':<{width}} {'value':<45} source\n")
    for option in OPTIONS:
        value = getattr(settings, option.field)
        if os.environ.get(option.env, "").strip():
            source = f"${option.env}"
        elif from_resource.get(option.field):
            source = "$OTEL_RESOURCE_ATTRIBUTES"
        else:
            source = "default"
        if isinstance(value, tuple):
            value = ",".join(value)
        out.write(f"{option.field:<{width}} {value!s:<45} {source}\n")
    return 0
