"""Plugins: pluggy hooks that enrich logs and spans, resolve the user id, and contribute health checks.

A plugin is any object (often a module) with functions marked `@hookimpl`,
registered through the `todo_observability` entry-point group or passed to
`configure(plugins=[...])`. Hooks run failsafe: an exception in a plugin is
logged once, counted, and never fails a request.
"""

from todo_observability.plugins.manager import PluginHost
from todo_observability.plugins.spec import ENTRY_POINT_GROUP, hookimpl, hookspec

__all__ = ["ENTRY_POINT_GROUP", "PluginHost", "hookimpl", "hookspec"]
