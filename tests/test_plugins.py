from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any, ClassVar

import pytest
from fastapi import FastAPI
from opentelemetry.trace import Span
from prometheus_client import CollectorRegistry

from todo_observability import get_logger
from todo_observability._observability import Observability
from todo_observability.config import Settings
from todo_observability.exceptions import ConfigurationError
from todo_observability.health import Check
from todo_observability.plugins import PluginHost, hookimpl
from todo_observability.testing import LogCapture, metric_value

from .helpers import client, server_spans

pytestmark = pytest.mark.anyio
Factory = Callable[..., Observability]


class Enricher:
    @hookimpl
    def todo_observability_enrich_log_record(self, record: MutableMapping[str, Any]) -> None:
        record["region"] = "eu-west-1"

    @hookimpl
    def todo_observability_enrich_span(self, span: Span) -> None:  # a subset of the arguments
        span.set_attribute("tenant", "acme")

    @hookimpl
    def todo_observability_resolve_user_id(self, scope: MutableMapping[str, Any]) -> str | None:
        return "from-plugin"

    @hookimpl
    def todo_observability_health_checks(self, settings: Settings) -> list[Check]:
        return [Check(f"check-for-{settings.service_name}", lambda: True)]


class Broken:
    @hookimpl
    def todo_observability_enrich_span(self, span: Span, scope: MutableMapping[str, Any]) -> None:
        raise RuntimeError("plugin bug")

    @hookimpl
    def todo_observability_health_checks(self, settings: Settings) -> list[str]:
        raise RuntimeError("cannot build checks")


def app() -> FastAPI:
    application = FastAPI()

    @application.get("/x")
    async def x() -> str:
        get_logger("app").info("handled")
        return "ok"

    return application


async def test_plugins_enrich_logs_spans_and_resolve_user(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    application = app()
    obs = make_observability(application, plugins=[Enricher()])
    async with client(application) as http:
        await http.get("/x")
    [line] = captured_logs.find(message="handled")
    assert line["region"] == "eu-west-1"
    assert line["user_id"] == "from-plugin"
    [span] = server_spans(obs)
    assert span.attributes["tenant"] == "acme"


async def test_a_failing_plugin_never_fails_a_request_and_is_reported_once(
    make_observability: Factory, captured_logs: LogCapture, metrics_registry: CollectorRegistry
) -> None:
    application = app()
    make_observability(application, plugins=[Broken(), Enricher()])
    async with client(application) as http:
        for _ in range(3):
            assert (await http.get("/x")).status_code == 200
    reports = [
        line for line in captured_logs.lines if line["logger"] == "todo_observability.plugins"
    ]
    assert len(reports) == 1
    assert reports[0]["message"].startswith(
        "plugin 'Broken' failed in todo_observability_enrich_span"
    )
    assert reports[0]["exception"]["message"] == "plugin bug"
    assert (
        metric_value(
            metrics_registry,
            "todo_observability_plugin_errors_total",
            hook="todo_observability_enrich_span",
        )
        == 3
    )


def test_health_checks_are_collected_failsafe() -> None:
    host = PluginHost([Broken(), Enricher()], load_entry_points=False, errors=None)
    assert [check.name for check in host.health_checks(Settings(service_name="backend"))] == [
        "check-for-backend"
    ]


async def test_plugin_checks_are_registered_and_answer_the_probe(
    make_observability: Factory,
) -> None:
    application = app()
    obs = make_observability(application, service_name="backend", plugins=[Enricher()])
    assert list(obs.health.checks) == ["check-for-backend", "event-loop"]
    async with client(application) as http:
        response = await http.get("/health/ready")
    assert response.json()["checks"]["check-for-backend"]["status"] == "UP"


def test_a_plugin_contributing_something_else_is_a_configuration_error(
    make_observability: Factory,
) -> None:
    class Wrong:
        @hookimpl
        def todo_observability_health_checks(self) -> list[str]:
            return ["not a check"]

    with pytest.raises(ConfigurationError, match="must return Check objects"):
        make_observability(plugins=[Wrong()])


def test_plugins_load_from_the_entry_point_group(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata
    import sys
    import types

    module = types.ModuleType("fake_todo_plugin")
    module.todo_observability_resolve_user_id = hookimpl(lambda scope: "ep-user")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_todo_plugin", module)
    entry_point = importlib.metadata.EntryPoint(
        name="fake", value="fake_todo_plugin", group="todo_observability"
    )

    class Dist:
        metadata: ClassVar[dict[str, str]] = {"name": "fake-plugin"}
        entry_points: ClassVar[list[importlib.metadata.EntryPoint]] = [entry_point]

    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [Dist()])
    host = PluginHost(load_entry_points=True)
    assert [resolve({}) for resolve in host.user_id_resolvers] == ["ep-user"]
    assert PluginHost(load_entry_points=False).user_id_resolvers == ()


def test_plugin_error_counter_uses_the_catalogue() -> None:
    registry = CollectorRegistry()
    from todo_observability.metrics import PLUGIN_ERRORS, _metric_set

    host = PluginHost(
        [Broken()], load_entry_points=False, errors=_metric_set(registry).counter(PLUGIN_ERRORS)
    )
    host.health_checks(Settings())
    assert (
        metric_value(
            registry,
            "todo_observability_plugin_errors_total",
            hook="todo_observability_health_checks",
        )
        == 1
    )
