"""The hook specifications. Every hook is named `todo_observability_<verb>_<noun>`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Iterable, MutableMapping

    from opentelemetry.trace import Span

    from todo_observability.config import Settings

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROJECT",
    "hookimpl",
    "hookspec",
    "todo_observability_enrich_log_record",
    "todo_observability_enrich_span",
    "todo_observability_health_checks",
    "todo_observability_resolve_user_id",
]

PROJECT = "todo_observability"
ENTRY_POINT_GROUP = "todo_observability"
"""Plugins installed as packages register under this entry-point group."""

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def todo_observability_enrich_log_record(record: MutableMapping[str, Any]) -> None:
    """Add or change fields of a log line just before it is written.

    Args:
        record: The line's fields (timestamp, level, message, context, ...).
    """


@hookspec
def todo_observability_enrich_span(span: Span, scope: MutableMapping[str, Any]) -> None:
    """Set attributes on a server span when it starts.

    Called only for sampled (recording) spans: attributes of an unsampled span
    would go nowhere.

    Args:
        span: The request's server span.
        scope: The ASGI scope of the request.
    """


@hookspec(firstresult=True)
def todo_observability_resolve_user_id(scope: MutableMapping[str, Any]) -> str | None:
    """The user id of a request, from its ASGI scope, or None when unknown.

    The first plugin that returns a value wins. Code that learns the user later
    (an authentication dependency) calls `set_user_id()` instead.
    """


@hookspec
def todo_observability_health_checks(settings: Settings) -> Iterable[Any]:
    """Health checks this plugin contributes to the service's health routers.

    Args:
        settings: The service's resolved settings.

    Returns:
        Health check registrations, as the health engine accepts them.
    """
    return ()
