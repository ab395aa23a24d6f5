from __future__ import annotations

import asyncio
import base64
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.helpers import SilentServer, free_port
from todo_observability.exceptions import ConfigurationError, MissingExtraError
from todo_observability.health import HealthEngine, checks
from todo_observability.health.model import Check, CheckResult, Status

from .conftest import PostgresCluster, SmtpServer

# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_dapr_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Dapr checks read DAPR_* variables: start every test without them."""
    for name in ("DAPR_HTTP_ENDPOINT", "DAPR_HTTP_PORT", "DAPR_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    return free_port()


async def run(check: Check) -> CheckResult:
    result = await check.function()  # type: ignore[misc]
    assert isinstance(result, CheckResult)
    return result


async def aiosqlite_threads_finished() -> None:
    """Wait for aiosqlite's worker threads to end while the loop still runs.

    When a connection fails to open, aiosqlite stops its worker thread without waiting for it;
    the thread then reports back to the loop, which must still be open (else it raises
    "Event loop is closed" in the thread, after the test).
    """
    for thread in threading.enumerate():
        if "_connection_worker_thread" in thread.name:
            await asyncio.to_thread(thread.join, 5.0)
            assert not thread.is_alive()


@asynccontextmanager
async def asgi_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        yield client


def dapr_error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"errorCode": code, "message": message}, status_code=status)


JOB_NOT_FOUND = (
    "failed to get job due to: rpc error: code = Unknown desc = job not found: "
    "app||default||todo-observability-health-probe"
)


@dataclass
class FakeSidecar:
    """A fake daprd HTTP API: healthz, healthz/outbound, metadata and the Jobs API.

    It records every request it gets (URL and headers), so tests can assert what was sent.
    """

    outbound_ready: bool = True
    ready: bool = True
    metadata: dict[str, Any] | None = None
    metadata_status: int = 200
    metadata_text: str | None = None  # a raw body instead of `metadata`
    # How GET /jobs/{name} answers: "not-found" (what daprd says with a scheduler),
    # "no-scheduler", "exists", or "forbidden"; which API versions exist.
    jobs: str = "not-found"
    jobs_apis: tuple[str, ...] = ("v1.0", "v1.0-alpha1")
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def app(self) -> Starlette:
        routes = [
            Route("/v1.0/healthz", self.healthz),
            Route("/v1.0/healthz/outbound", self.outbound),
            Route("/v1.0/metadata", self.get_metadata),
        ]
        routes += [Route(f"/{api}/jobs/{{name}}", self.get_job) for api in self.jobs_apis]
        return Starlette(routes=routes)

    def seen(self, request: Request) -> None:
        self.requests.append((str(request.url), dict(request.headers)))

    async def healthz(self, request: Request) -> Response:
        self.seen(request)
        if self.ready:
            return Response(status_code=204)
        return dapr_error(500, "ERR_HEALTH_NOT_READY", "dapr is not ready: [app]")

    async def outbound(self, request: Request) -> Response:
        self.seen(request)
        if self.outbound_ready:
            return Response(status_code=204)
        return dapr_error(500, "ERR_OUTBOUND_HEALTH_NOT_READY", "dapr outbound is not ready")

    async def get_metadata(self, request: Request) -> Response:
        self.seen(request)
        if self.metadata_status != 200:
            return dapr_error(self.metadata_status, "ERR_INTERNAL", "metadata unavailable")
        if self.metadata_text is not None:
            return Response(self.metadata_text, media_type="text/plain")
        return JSONResponse(self.metadata if self.metadata is not None else {"id": "todo"})

    async def get_job(self, request: Request) -> Response:
        self.seen(request)
        if self.jobs == "exists":
            return JSONResponse({"name": request.path_params["name"], "schedule": "@daily"})
        if self.jobs == "no-scheduler":
            return dapr_error(
                500, "SCHEDULER_GET_JOB", "failed to get job due to: scheduler clients are disabled"
            )
        if self.jobs == "forbidden":
            return dapr_error(401, "ERR_UNAUTHORIZED", "invalid api token")
        return dapr_error(500, "SCHEDULER_GET_JOB", JOB_NOT_FOUND)


def kafka_metadata(*topics: str, component_type: str = "pubsub.kafka") -> dict[str, Any]:
    return {
        "id": "backend",
        "runtimeVersion": "1.18.3",
        "components": [
            {"name": "statestore", "type": "state.redis", "version": "v1", "capabilities": []},
            {"name": "kafka-pubsub", "type": component_type, "version": "v1"},
        ],
        "subscriptions": [
            {
                "pubsubname": "kafka-pubsub",
                "topic": topic,
                "metadata": {},
                "rules": [{"match": "", "path": f"/events/{topic}"}],
                "deadLetterTopic": f"{topic}-dlq",
                "type": "PROGRAMMATIC",
            }
            for topic in topics
        ],
    }


# --- defaults and overrides ----------------------------------------------------------------------

FACTORIES: dict[str, Callable[..., Check]] = {
    "database": lambda **kw: checks.database(create_engine("sqlite://"), **kw),
    "http": lambda **kw: checks.http("http://dependency.test/health", **{"name": "dep", **kw}),
    "dapr_sidecar": lambda **kw: checks.dapr_sidecar(**kw),
    "dapr_pubsub": lambda **kw: checks.dapr_pubsub("kafka-pubsub", **kw),
    "dapr_jobs": lambda **kw: checks.dapr_jobs(**kw),
    "smtp": lambda **kw: checks.smtp("127.0.0.1", 25, **kw),
    "event_loop_lag": lambda **kw: checks.event_loop_lag(**kw),
}


@pytest.mark.parametrize(
    ("factory", "name", "groups", "critical", "dependency"),
    [
        ("database", "database", ("ready", "startup"), True, True),
        ("http", "dep", ("ready",), True, True),
        ("dapr_sidecar", "dapr-sidecar", ("ready", "startup"), True, True),
        ("dapr_pubsub", "dapr-pubsub-kafka-pubsub", ("ready",), True, True),
        ("dapr_jobs", "dapr-jobs", ("ready",), False, True),
        ("smtp", "smtp", ("ready",), False, True),
        ("event_loop_lag", "event-loop", ("live",), True, False),
    ],
)
def test_factories_have_documented_defaults(
    factory: str, name: str, groups: tuple[str, ...], critical: bool, dependency: bool
) -> None:
    check = FACTORIES[factory]()
    assert (check.name, check.groups, check.critical, check.dependency) == (
        name,
        groups,
        critical,
        dependency,
    )
    assert (check.timeout, check.ttl) == (2.0, 5.0)
    assert check.is_async


@pytest.mark.parametrize("factory", sorted(FACTORIES))
def test_factories_take_overrides_by_keyword(factory: str) -> None:
    groups = ("live",) if factory == "event_loop_lag" else ("startup",)
    check = FACTORIES[factory](name="custom", groups=groups, critical=False, timeout=0.5, ttl=0)
    assert (check.name, check.groups, check.critical, check.timeout, check.ttl) == (
        "custom",
        groups,
        False,
        0.5,
        0,
    )


def test_a_dependency_check_cannot_be_put_in_the_live_group() -> None:
    with pytest.raises(ConfigurationError, match="cannot be in the 'live' group"):
        checks.dapr_sidecar(groups=("live",))


# --- SQL database --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_database_is_up_on_a_sync_sqlite_engine(tmp_path: Path) -> None:
    # A file, not ":memory:": an in-memory database keeps one connection per thread, and the
    # one the check opens in its worker thread cannot be closed from here by dispose().
    engine = create_engine(f"sqlite:///{tmp_path}/app.db")
    try:
        result = await run(checks.database(engine))
    finally:
        engine.dispose()
    assert result.status is Status.UP
    assert result.details == {"dialect": "sqlite"}


@pytest.mark.anyio
async def test_database_is_up_on_an_async_sqlite_engine() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        result = await run(checks.database(engine))
    finally:
        await engine.dispose()
    assert result.status is Status.UP
    assert result.details == {"dialect": "sqlite"}


@pytest.mark.anyio
async def test_database_is_down_when_the_sqlite_file_cannot_be_opened(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/no-such-folder/app.db")
    try:
        result = await run(checks.database(engine))
    finally:
        engine.dispose()
    assert result.status is Status.DOWN
    assert result.error is not None
    assert "unable to open database file" in result.error


@pytest.mark.anyio
async def test_database_is_down_when_the_async_sqlite_file_cannot_be_opened(
    tmp_path: Path,
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/no-such-folder/app.db")
    try:
        result = await run(checks.database(engine))
    finally:
        await engine.dispose()
        await aiosqlite_threads_finished()
    assert result.status is Status.DOWN
    assert result.error is not None
    assert "unable to open database file" in result.error


@pytest.mark.anyio
async def test_database_error_never_shows_the_password() -> None:
    port = closed_port()
    engine = create_async_engine(
        f"postgresql+psycopg://app:s3cret-Pa55@127.0.0.1:{port}/app",
        connect_args={"connect_timeout": 2},
    )
    try:
        result = await run(checks.database(engine))
    finally:
        await engine.dispose()
    assert result.status is Status.DOWN
    assert result.error is not None
    assert str(port) in result.error  # the driver's message is there...
    assert "s3cret-Pa55" not in result.error  # ...but not the password
    assert "s3cret-Pa55" not in repr(result.details)


@pytest.mark.anyio
async def test_database_follows_postgresql_going_down_and_coming_back(
    postgresql: PostgresCluster,
) -> None:
    engine = create_async_engine(postgresql.url, connect_args={"connect_timeout": 2})
    check = checks.database(engine)
    try:
        up = await run(check)
        await asyncio.to_thread(postgresql.stop)
        down = await run(check)
        await asyncio.to_thread(postgresql.start)
        back = await run(check)
    finally:
        await engine.dispose()
    assert up.status is Status.UP, up.error
    assert up.details == {"dialect": "postgresql"}
    assert down.status is Status.DOWN
    assert down.error is not None
    assert "Connection refused" in down.error or "connection failed" in down.error
    assert back.status is Status.UP, back.error


@pytest.mark.anyio
async def test_sync_database_check_follows_a_postgresql_crash_and_restart(
    postgresql: PostgresCluster,
) -> None:
    engine = create_engine(postgresql.url, connect_args={"connect_timeout": 2})
    check = checks.database(engine)
    try:
        up = await run(check)
        await asyncio.to_thread(postgresql.stop, "immediate")
        down = await run(check)
        await asyncio.to_thread(postgresql.start)
        back = await run(check)
    finally:
        engine.dispose()
    assert up.status is Status.UP, up.error
    assert down.status is Status.DOWN
    assert back.status is Status.UP, back.error


@pytest.mark.anyio
async def test_a_hung_sync_database_holds_one_thread_and_is_down_while_it_hangs(
    silent_port: SilentServer,
) -> None:
    # No connect timeout: the driver waits for the silent server's greeting forever.
    engine = create_engine(f"postgresql+psycopg://app@127.0.0.1:{silent_port.port}/app")
    health = HealthEngine()
    health.add(checks.database(engine, timeout=0.2, ttl=0))
    loop = asyncio.get_running_loop()
    before = threading.active_count()
    try:
        reports = [await health.ready() for _ in range(10)]
        assert threading.active_count() <= before + 1
        assert len(silent_port.accepted) <= 1
        errors = [report.results["database"].error or "" for report in reports]
        assert errors[0] == "timed out after 0.2 s"
        assert all(error.startswith("still running since ") for error in errors[1:]), errors
        assert reports[-1].results["database"].details == {"dialect": "postgresql"}
        assert await asyncio.wait_for(loop.run_in_executor(None, lambda: 42), 5.0) == 42
    finally:
        silent_port.close()  # the driver sees the connection end, and its thread returns
        for thread in threading.enumerate():
            if thread.name == "health-database":
                await asyncio.to_thread(thread.join, 10.0)
        engine.dispose()
    assert not [t for t in threading.enumerate() if t.name == "health-database"]


# --- HTTP dependency -----------------------------------------------------------------------------


def dependency_app(status: int, seen: list[dict[str, str]]) -> Starlette:
    async def health(request: Request) -> Response:
        seen.append(dict(request.headers))
        return Response(status_code=status)

    return Starlette(routes=[Route("/health", health)])


@pytest.mark.anyio
async def test_http_is_up_on_an_expected_status_and_sends_its_headers() -> None:
    seen: list[dict[str, str]] = []
    async with asgi_client(dependency_app(200, seen)) as client:
        check = checks.http(
            "http://catalog.test/health",
            name="catalog",
            client=client,
            headers={"Authorization": "Bearer abc"},
        )
        result = await run(check)
    assert result.status is Status.UP
    assert result.details == {"url": "http://catalog.test/health", "status_code": 200}
    assert seen[0]["authorization"] == "Bearer abc"


@pytest.mark.anyio
async def test_http_is_down_on_an_unexpected_status() -> None:
    async with asgi_client(dependency_app(503, [])) as client:
        result = await run(checks.http("http://catalog.test/health", name="c", client=client))
    assert result.status is Status.DOWN
    assert result.error == "GET answered 503, expected 200-399"
    assert result.details["status_code"] == 503


@pytest.mark.anyio
async def test_http_expected_statuses_can_be_a_set() -> None:
    async with asgi_client(dependency_app(200, [])) as client:
        check = checks.http(
            "http://catalog.test/health", name="c", client=client, expect_status={204, 202}
        )
        result = await run(check)
    assert result.status is Status.DOWN
    assert result.error == "GET answered 200, expected 202, 204"


@pytest.mark.anyio
async def test_http_is_down_on_a_transport_error_without_showing_credentials() -> None:
    port = closed_port()
    check = checks.http(
        f"http://svc:hunter2@127.0.0.1:{port}/health?token=t0ps3cret",
        name="svc",
        headers={"X-Api-Key": "k3y-value"},
    )
    result = await run(check)  # no client given: one is made for the run, and closed
    assert result.status is Status.DOWN
    assert result.error is not None
    assert result.error.startswith("transport error: ConnectError")
    assert result.details == {"url": f"http://127.0.0.1:{port}/health"}
    for secret in ("hunter2", "t0ps3cret", "k3y-value"):
        assert secret not in result.error


# --- Dapr sidecar --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_dapr_sidecar_is_up_when_both_healthz_answer_204() -> None:
    sidecar = FakeSidecar()
    async with asgi_client(sidecar.app()) as client:
        result = await run(checks.dapr_sidecar(base_url="http://daprd.test", client=client))
    assert result.status is Status.UP
    assert [url for url, _ in sidecar.requests] == [
        "http://daprd.test/v1.0/healthz/outbound",
        "http://daprd.test/v1.0/healthz",
    ]


@pytest.mark.anyio
async def test_dapr_sidecar_is_down_when_outbound_is_not_ready() -> None:
    sidecar = FakeSidecar(outbound_ready=False, ready=False)
    async with asgi_client(sidecar.app()) as client:
        result = await run(checks.dapr_sidecar(client=client))
    assert result.status is Status.DOWN
    assert result.error == (
        "Dapr sidecar cannot serve the app's calls: GET /v1.0/healthz/outbound answered "
        "500 ERR_OUTBOUND_HEALTH_NOT_READY: dapr outbound is not ready"
    )


@pytest.mark.anyio
async def test_dapr_sidecar_is_degraded_when_only_the_full_healthz_is_not_ready() -> None:
    sidecar = FakeSidecar(outbound_ready=True, ready=False)
    async with asgi_client(sidecar.app()) as client:
        result = await run(checks.dapr_sidecar(client=client))
    assert result.status is Status.DEGRADED
    assert result.error is not None
    assert "500 ERR_HEALTH_NOT_READY: dapr is not ready: [app]" in result.error


@pytest.mark.anyio
async def test_dapr_sidecar_sends_the_configured_token_and_never_reports_it() -> None:
    sidecar = FakeSidecar(ready=False)
    async with asgi_client(sidecar.app()) as client:
        result = await run(checks.dapr_sidecar(api_token="tok-3141", client=client))
    assert len(sidecar.requests) == 2
    assert all(headers["dapr-api-token"] == "tok-3141" for _, headers in sidecar.requests)
    assert "tok-3141" not in (result.error or "")


@pytest.mark.anyio
async def test_dapr_checks_read_port_and_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DAPR_HTTP_PORT", "3999")
    monkeypatch.setenv("DAPR_API_TOKEN", "from-env")
    sidecar = FakeSidecar()
    async with asgi_client(sidecar.app()) as client:
        await run(checks.dapr_sidecar(client=client))
    url, headers = sidecar.requests[0]
    assert url == "http://127.0.0.1:3999/v1.0/healthz/outbound"
    assert headers["dapr-api-token"] == "from-env"


@pytest.mark.anyio
async def test_dapr_http_endpoint_wins_over_the_port_and_no_token_sends_no_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DAPR_HTTP_ENDPOINT", "http://sidecar.internal:4000/")
    monkeypatch.setenv("DAPR_HTTP_PORT", "3999")
    sidecar = FakeSidecar()
    async with asgi_client(sidecar.app()) as client:
        await run(checks.dapr_sidecar(client=client))
    url, headers = sidecar.requests[0]
    assert url == "http://sidecar.internal:4000/v1.0/healthz/outbound"
    assert "dapr-api-token" not in headers


@pytest.mark.anyio
async def test_dapr_sidecar_is_down_when_unreachable() -> None:
    port = closed_port()
    result = await run(checks.dapr_sidecar(base_url=f"http://127.0.0.1:{port}"))
    assert result.status is Status.DOWN
    assert result.error is not None
    assert result.error.startswith(f"Dapr sidecar unreachable at http://127.0.0.1:{port}: ")


# --- Dapr pub/sub --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_dapr_pubsub_is_up_with_its_component_and_subscriptions() -> None:
    sidecar = FakeSidecar(metadata=kafka_metadata("todo-created", "todo-completed"))
    async with asgi_client(sidecar.app()) as client:
        check = checks.dapr_pubsub(
            "kafka-pubsub", topics=["todo-created", "todo-completed"], client=client
        )
        result = await run(check)
    assert result.status is Status.UP
    assert result.details == {
        "component": "pubsub.kafka",
        "version": "v1",
        "subscribed": ["todo-completed", "todo-created"],
    }
    assert sidecar.requests[0][0] == "http://127.0.0.1:3500/v1.0/metadata"


@pytest.mark.anyio
async def test_dapr_pubsub_is_down_without_its_component() -> None:
    sidecar = FakeSidecar(metadata=kafka_metadata("todo-created"))
    async with asgi_client(sidecar.app()) as client:
        result = await run(checks.dapr_pubsub("rabbit-pubsub", client=client))
    assert result.status is Status.DOWN
    assert result.error == (
        "Dapr has no component named 'rabbit-pubsub' (loaded: kafka-pubsub, statestore)"
    )


@pytest.mark.anyio
async def test_dapr_pubsub_is_down_when_no_component_is_loaded() -> None:
    sidecar = FakeSidecar(metadata={"id": "backend"})  # Dapr omits empty lists
    async with asgi_client(sidecar.app()) as client:
        result = await run(checks.dapr_pubsub("kafka-pubsub", client=client))
    assert result.status is Status.DOWN
    assert result.error == "Dapr has no component named 'kafka-pubsub' (loaded: none)"


@pytest.mark.anyio
async def test_dapr_pubsub_is_down_when_the_component_is_not_a_pubsub() -> None:
    sidecar = FakeSidecar(metadata=kafka_metadata())
    async with asgi_client(sidecar.app()) as client:
        result = await run(checks.dapr_pubsub("statestore", client=client))
    assert result.status is Status.DOWN
    assert result.error == "Dapr component 'statestore' is a state.redis, not a pub/sub"


@pytest.mark.anyio
async def test_dapr_pubsub_is_degraded_when_a_topic_has_no_subscription() -> None:
    sidecar = FakeSidecar(metadata=kafka_metadata("todo-created"))
    async with asgi_client(sidecar.app()) as client:
        check = checks.dapr_pubsub(
            "kafka-pubsub", topics=["todo-created", "todo-completed"], client=client
        )
        result = await run(check)
    assert result.status is Status.DEGRADED
    assert result.error is not None
    assert "for topic(s) todo-completed:" in result.error
    assert result.details["subscribed"] == ["todo-created"]


@pytest.mark.anyio
async def test_dapr_pubsub_ignores_subscriptions_of_another_component() -> None:
    metadata = kafka_metadata()
    metadata["subscriptions"] = [{"pubsubname": "other", "topic": "todo-created"}]
    sidecar = FakeSidecar(metadata=metadata)
    async with asgi_client(sidecar.app()) as client:
        check = checks.dapr_pubsub("kafka-pubsub", topics=["todo-created"], client=client)
        result = await run(check)
    assert result.status is Status.DEGRADED


@pytest.mark.anyio
async def test_dapr_pubsub_is_down_when_metadata_fails() -> None:
    sidecar = FakeSidecar(metadata_status=500)
    async with asgi_client(sidecar.app()) as client:
        result = await run(checks.dapr_pubsub("kafka-pubsub", client=client))
    assert result.status is Status.DOWN
    assert result.error == "GET /v1.0/metadata answered 500 ERR_INTERNAL: metadata unavailable"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("<html>proxy error</html>", "GET /v1.0/metadata answered a body that is not JSON"),
        ("[]", "GET /v1.0/metadata answered JSON that is not an object"),
    ],
)
async def test_dapr_pubsub_is_down_on_a_metadata_body_it_cannot_read(body: str, error: str) -> None:
    sidecar = FakeSidecar(metadata_text=body)
    async with asgi_client(sidecar.app()) as client:
        result = await run(checks.dapr_pubsub("kafka-pubsub", client=client))
    assert result.status is Status.DOWN
    assert result.error == error


# --- Dapr Jobs API -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_dapr_jobs_is_up_when_the_scheduler_says_the_probe_job_does_not_exist() -> None:
    sidecar = FakeSidecar(jobs="not-found")
    async with asgi_client(sidecar.app()) as client:
        result = await run(checks.dapr_jobs(api_token="tok", client=client))
    assert result.status is Status.UP
    assert result.details == {"api": "v1.0"}
    assert [url for url, _ in sidecar.requests] == [
        "http://127.0.0.1:3500/v1.0/jobs/todo-observability-health-probe"
    ]
    assert sidecar.requests[0][1]["dapr-api-token"] == "tok"


@pytest.mark.anyio
async def test_dapr_jobs_is_up_when_the_probe_job_exists() -> None:
    sidecar = FakeSidecar(jobs="exists")
    async with asgi_client(sidecar.app()) as client:
        result = await run(checks.dapr_jobs(client=client))
    assert result.status is Status.UP


@pytest.mark.anyio
async def test_dapr_jobs_falls_back_to_the_alpha_api_on_older_sidecars() -> None:
    sidecar = FakeSidecar(jobs="not-found", jobs_apis=("v1.0-alpha1",))
    async with asgi_client(sidecar.app()) as client:
        result = await run(checks.dapr_jobs(client=client))
    assert result.status is Status.UP
    assert result.details == {"api": "v1.0-alpha1"}
    assert [url.split("3500")[1] for url, _ in sidecar.requests] == [
        "/v1.0-alpha1/jobs/todo-observability-health-probe"
    ]


@pytest.mark.anyio
async def test_dapr_jobs_is_down_when_the_sidecar_has_no_scheduler() -> None:
    sidecar = FakeSidecar(jobs="no-scheduler")
    async with asgi_client(sidecar.app()) as client:
        result = await run(checks.dapr_jobs(client=client))
    assert result.status is Status.DOWN
    assert result.error == (
        "the Dapr sidecar answers but its Scheduler does not: GET /v1.0/jobs answered "
        "500 SCHEDULER_GET_JOB: failed to get job due to: scheduler clients are disabled"
    )


@pytest.mark.anyio
async def test_dapr_jobs_is_down_without_a_jobs_api() -> None:
    sidecar = FakeSidecar(jobs_apis=())
    async with asgi_client(sidecar.app()) as client:
        result = await run(checks.dapr_jobs(client=client))
    assert result.status is Status.DOWN
    assert result.error is not None
    assert result.error.startswith("this Dapr sidecar has no Jobs API")
    assert len(sidecar.requests) == 0  # Starlette's own 404s: no route, nothing recorded


@pytest.mark.anyio
async def test_dapr_jobs_is_down_on_another_error() -> None:
    sidecar = FakeSidecar(jobs="forbidden")
    async with asgi_client(sidecar.app()) as client:
        result = await run(checks.dapr_jobs(client=client))
    assert result.status is Status.DOWN
    assert result.error == "GET /v1.0/jobs answered 401 ERR_UNAUTHORIZED: invalid api token"


# --- SMTP ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_smtp_is_up_against_a_real_server(smtp_server: SmtpServer) -> None:
    result = await run(checks.smtp(smtp_server.host, smtp_server.port))
    assert result.status is Status.UP, result.error
    assert result.details["greeting"].startswith("mail.example.test")
    assert result.details["ehlo"] == "mail.example.test"
    assert (result.details["tls"], result.details["authenticated"]) == (False, False)


@pytest.mark.anyio
async def test_smtp_is_down_within_its_timeout_on_a_port_that_never_answers(
    silent_port: SilentServer,
) -> None:
    check = checks.smtp("127.0.0.1", silent_port.port, timeout=0.5)
    started = time.monotonic()
    result = await asyncio.wait_for(run(check), 1.0)
    elapsed = time.monotonic() - started
    assert result.status is Status.DOWN
    assert result.error is not None
    assert result.error.startswith(
        f"SMTP 127.0.0.1:{silent_port.port}: no connection or greeting within 0.5 s"
    )
    assert 0.4 < elapsed < 0.9
    # The TCP connection was made, and the check closed it when it gave up.
    assert len(silent_port.accepted) == 1
    silent_port.accepted[0].settimeout(1.0)
    # recv in a thread: the event loop must keep running to finish closing the transport.
    assert await asyncio.to_thread(silent_port.accepted[0].recv, 1) == b""


@pytest.mark.anyio
async def test_smtp_connection_is_closed_when_the_engine_cancels_the_run(
    silent_port: SilentServer,
) -> None:
    check = checks.smtp("127.0.0.1", silent_port.port, timeout=5.0)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(run(check), 0.3)
    assert len(silent_port.accepted) == 1
    silent_port.accepted[0].settimeout(1.0)
    # recv in a thread: the event loop must keep running to finish closing the transport.
    assert await asyncio.to_thread(silent_port.accepted[0].recv, 1) == b""


@pytest.mark.anyio
async def test_smtp_starttls_and_auth_with_the_right_credentials_is_up(
    smtp_auth_server: SmtpServer,
) -> None:
    check = checks.smtp(
        smtp_auth_server.host,
        smtp_auth_server.port,
        starttls=True,
        username=smtp_auth_server.user,
        password=smtp_auth_server.password,
        tls_context=smtp_auth_server.client_tls,
    )
    result = await run(check)
    assert result.status is Status.UP, result.error
    assert (result.details["tls"], result.details["authenticated"]) == (True, True)
    assert smtp_auth_server.logins == [("mailer", True)]


@pytest.mark.anyio
async def test_smtp_auth_with_a_wrong_password_is_down_and_never_shows_it(
    smtp_auth_server: SmtpServer,
) -> None:
    wrong = "Tr0ub4dor&3"
    check = checks.smtp(
        smtp_auth_server.host,
        smtp_auth_server.port,
        starttls=True,
        username=smtp_auth_server.user,
        password=wrong,
        tls_context=smtp_auth_server.client_tls,
    )
    result = await run(check)
    assert result.status is Status.DOWN
    assert result.error is not None
    assert (
        "AUTH failed: SMTPAuthenticationError: (535, '5.7.8 Authentication credentials invalid')"
        in result.error
    )
    # aiosmtplib tries each mechanism the server offers (PLAIN, LOGIN): all were refused.
    assert smtp_auth_server.logins
    assert all(login == ("mailer", False) for login in smtp_auth_server.logins)
    plain_blob = base64.b64encode(f"\0mailer\0{wrong}".encode()).decode()
    for form in (wrong, base64.b64encode(wrong.encode()).decode(), plain_blob):
        assert form not in result.error
        assert form not in repr(result.details)


@pytest.mark.anyio
async def test_smtp_auth_without_starttls_is_down_on_a_server_that_requires_it(
    smtp_auth_server: SmtpServer,
) -> None:
    check = checks.smtp(
        smtp_auth_server.host,
        smtp_auth_server.port,
        username=smtp_auth_server.user,
        password=smtp_auth_server.password,
    )
    result = await run(check)
    assert result.status is Status.DOWN
    assert result.error is not None
    assert "AUTH failed" in result.error
    assert smtp_auth_server.logins == []


@pytest.mark.anyio
async def test_smtp_implicit_tls_against_a_plain_server_is_down(smtp_server: SmtpServer) -> None:
    result = await run(checks.smtp(smtp_server.host, smtp_server.port, use_tls=True))
    assert result.status is Status.DOWN
    assert result.error is not None
    assert result.error.startswith(f"SMTP 127.0.0.1:{smtp_server.port}: connect failed: ")


def test_smtp_rejects_starttls_with_implicit_tls() -> None:
    with pytest.raises(ConfigurationError, match="starttls and use_tls exclude each other"):
        checks.smtp("mail.test", 465, starttls=True, use_tls=True)


def test_smtp_needs_both_username_and_password() -> None:
    with pytest.raises(ConfigurationError, match="both username and password"):
        checks.smtp("mail.test", 587, username="mailer")


def test_smtp_without_aiosmtplib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiosmtplib", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'todo-observability\[smtp\]'"):
        checks.smtp("mail.test", 25)


# --- event-loop lag ------------------------------------------------------------------------------


def block_loop_before_next_probe(seconds: float) -> None:
    """Queue a callback that holds the running loop for `seconds`, ahead of the probe's."""
    asyncio.get_running_loop().call_soon(time.sleep, seconds)


@pytest.mark.anyio
async def test_event_loop_lag_is_up_on_an_idle_loop() -> None:
    result = await run(checks.event_loop_lag())
    assert result.status is Status.UP
    assert 0 <= result.details["lag_ms"] < 100


@pytest.mark.anyio
async def test_event_loop_lag_is_degraded_when_the_loop_is_held() -> None:
    check = checks.event_loop_lag(degraded_after=0.1, down_after=1.0)
    block_loop_before_next_probe(0.2)
    result = await run(check)
    assert result.status is Status.DEGRADED
    assert result.details["lag_ms"] >= 200
    assert result.error is not None
    assert result.error.endswith("over 100 ms")


@pytest.mark.anyio
async def test_event_loop_lag_is_down_past_the_down_threshold() -> None:
    check = checks.event_loop_lag(degraded_after=0.05, down_after=0.15)
    block_loop_before_next_probe(0.2)
    result = await run(check)
    assert result.status is Status.DOWN
    assert result.details["lag_ms"] >= 200
    assert result.error is not None
    assert result.error.endswith("over 150 ms")


@pytest.mark.parametrize(("degraded", "down"), [(0, 1.0), (0.5, 0.1), (-1, 1.0)])
def test_event_loop_lag_rejects_thresholds_out_of_order(degraded: float, down: float) -> None:
    with pytest.raises(ConfigurationError, match="0 < degraded_after <= down_after"):
        checks.event_loop_lag(degraded_after=degraded, down_after=down)
