"""Loads plugins and turns their hooks into failsafe callables for the hot path."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pluggy

from todo_observability.plugins import spec
from todo_observability.plugins.spec import ENTRY_POINT_GROUP, PROJECT

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, MutableMapping

    from opentelemetry.trace import Span
    from prometheus_client import Counter

    from todo_observability.config import Settings

__all__ = ["PluginHost"]

_log = logging.getLogger("todo_observability.plugins")


class PluginHost:
    """The plugins of one `Observability`.

    Hook implementations are resolved once, at start-up, into plain callables:
    with no plugin installed the request path pays nothing, and with plugins
    each call is direct instead of going through pluggy's dispatch.

    Args:
        plugins: Plugin objects (modules or instances with `@hookimpl` functions).
        load_entry_points: Also load plugins from the `todo_observability` entry-point group.
        errors: Counter of hook failures, labelled by hook.
    """

    def __init__(
        self,
        plugins: Iterable[object] = (),
        *,
        load_entry_points: bool = True,
        errors: Counter | None = None,
    ):
        self.manager = pluggy.PluginManager(PROJECT)
        self.manager.add_hookspecs(spec)
        if load_entry_points:
            self.manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for plugin in plugins:
            name = getattr(plugin, "__name__", None) or type(plugin).__qualname__
            if self.manager.has_plugin(name):
                name = f"{name}-{id(plugin):x}"
            self.manager.register(plugin, name=name)
        self._errors = errors
        self._reported: set[tuple[str, str]] = set()
        self.log_enrichers: tuple[Callable[[MutableMapping[str, Any]], None], ...] = self._failsafe(
            "todo_observability_enrich_log_record"
        )
        self.span_enrichers: tuple[Callable[[Span, MutableMapping[str, Any]], None], ...] = (
            self._failsafe("todo_observability_enrich_span")
        )
        self.user_id_resolvers: tuple[Callable[[MutableMapping[str, Any]], str | None], ...] = (
            self._failsafe("todo_observability_resolve_user_id")
        )

    def _failsafe(self, hook_name: str) -> tuple[Callable[..., Any], ...]:
        caller = getattr(self.manager.hook, hook_name)
        spec_args: tuple[str, ...] = caller.spec.argnames
        # pluggy calls the last registered first; keep that order. An implementation
        # may accept any subset of the spec's arguments: map positions once here.
        return tuple(
            self._guard(
                hook_name,
                impl.plugin_name,
                impl.function,
                tuple(spec_args.index(name) for name in impl.argnames),
            )
            for impl in reversed(caller.get_hookimpls())
        )

    def _guard(
        self, hook: str, plugin: str, function: Callable[..., Any], positions: tuple[int, ...]
    ) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            try:
                return function(*[args[i] for i in positions])
            except Exception:  # noqa: BLE001 - a plugin must never fail a request
                self._report(hook, plugin)
                return None

        call.__name__ = f"{plugin}.{hook}"
        return call

    def failsafe(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """`function` wrapped like a hook: an exception is reported once and returns None."""
        return self._guard(name, getattr(function, "__qualname__", name), function, (0,))

    def _report(self, hook: str, plugin: str) -> None:
        if self._errors is not None:
            self._errors.labels(hook).inc()
        if (hook, plugin) not in self._reported:
            self._reported.add((hook, plugin))
            _log.exception(
                "plugin %r failed in %s; it will keep running failsafe and is reported only once",
                plugin,
                hook,
            )

    def health_checks(self, settings: Settings) -> list[Any]:
        """Every health check the plugins contribute (a failing plugin contributes none)."""
        checks: list[Any] = []
        for contribute in self._failsafe("todo_observability_health_checks"):
            contributed = contribute(settings)
            if contributed:
                checks.extend(contributed)
        return checks
