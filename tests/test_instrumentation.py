"""`instrument_*()`: the maintained OpenTelemetry instrumentations, wired to the current service."""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

import todo_observability as obs
from todo_observability._observability import Observability
from todo_observability.exceptions import MissingExtraError
from todo_observability.testing import LogCapture

from .health.conftest import PostgresCluster, postgres_cluster
from .helpers import client, eventually, free_port, serve_app, spans

pytestmark = pytest.mark.anyio
Factory = Callable[..., Observability]


@pytest.fixture
def memory_engine() -> Iterator[Callable[[], Engine]]:
    """In-memory SQLite engines, disposed after the test, so that no connection is left open."""
    engines: list[Engine] = []

    def make() -> Engine:
        engine = create_engine("sqlite://")
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


log = obs.get_logger("tests.instrumentation")


def _clients(obs_: Observability) -> list[ReadableSpan]:
    return [s for s in spans(obs_) if s.kind is SpanKind.CLIENT]


def _statements(obs_: Observability) -> list[ReadableSpan]:
    """The SQL statements' spans (the instrumentation also traces each `connect`)."""
    return [s for s in _clients(obs_) if s.attributes and "db.statement" in s.attributes]


def _child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    assert span.parent is not None
    assert span.context is not None
    assert parent.context is not None
    return bool(
        span.context.trace_id == parent.context.trace_id
        and span.parent.span_id == parent.context.span_id
    )


# --- SQLAlchemy ----------------------------------------------------------------------------------


def _tasks_app(engine: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/tasks/{task_id}")
    async def read(task_id: int) -> dict[str, Any]:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT :id AS id, 'secret-title' AS title"), {"id": task_id}
                )
            ).one()
        return {"id": row.id}

    return app


async def test_each_statement_is_a_client_span_in_the_request_trace(
    make_observability: Factory, captured_logs: LogCapture, tmp_path: Path
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}")
    obs.instrument_sqlalchemy(engine)
    app = _tasks_app(engine)
    observability = make_observability(app, service_name="backend")
    engine_log = logging.getLogger("sqlalchemy.engine.Engine")
    engine_log.setLevel(logging.INFO)
    try:
        async with client(app) as http:
            assert (await http.get("/tasks/918273645")).status_code == 200
    finally:
        engine_log.setLevel(logging.NOTSET)
        await engine.dispose()

    [server] = [s for s in spans(observability) if s.kind is SpanKind.SERVER]
    [statement] = _statements(observability)
    assert _child_of(statement, server)
    assert statement.attributes is not None
    assert statement.attributes["db.system"] == "sqlite"
    # The statement as written, with its placeholder; the bound value is never on the span.
    assert statement.attributes["db.statement"] == "SELECT ? AS id, 'secret-title' AS title"
    assert "918273645" not in str(dict(statement.attributes))
    # The engine's own line about the statement was written while its span was current.
    assert statement.context is not None
    [engine_line] = [
        line for line in captured_logs.find(service_name="backend") if "SELECT" in line["message"]
    ]
    assert engine_line["span_id"] == f"{statement.context.span_id:016x}"
    assert engine_line["trace_id"] == f"{statement.context.trace_id:032x}"
    # After the statement, the request's span is current again.
    access = captured_logs.access()[-1]
    assert server.context is not None
    assert access["span_id"] == f"{server.context.span_id:016x}"


async def test_a_second_call_adds_nothing(
    make_observability: Factory, memory_engine: Callable[[], Engine]
) -> None:
    engine = memory_engine()
    observability = make_observability(service_name="worker")
    obs.instrument_sqlalchemy(engine)
    obs.instrument_sqlalchemy(engine)
    obs.instrument_sqlalchemy([engine])
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert [s.attributes["db.statement"] for s in _statements(observability) if s.attributes] == [
        "SELECT 1"
    ]


async def test_engines_created_before_or_after_the_first_call_are_traced(
    make_observability: Factory, memory_engine: Callable[[], Engine]
) -> None:
    observability = make_observability(service_name="worker")
    earlier = memory_engine()
    obs.instrument_sqlalchemy(memory_engine())
    later = memory_engine()  # traced: engine creation is instrumented
    obs.instrument_sqlalchemy(earlier)  # existed before the first call: traced when passed
    obs.instrument_sqlalchemy(later)  # already traced: nothing more
    for engine in (earlier, later):
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    assert len(_statements(observability)) == 2


async def test_a_failing_statement_ends_its_span_and_gives_back_the_context(
    make_observability: Factory, memory_engine: Callable[[], Engine]
) -> None:
    engine = memory_engine()
    obs.instrument_sqlalchemy(engine)
    observability = make_observability(service_name="worker")
    tracer = observability.tracer
    with tracer.start_as_current_span("job") as job:
        with pytest.raises(Exception, match="no such table"), engine.connect() as conn:
            conn.execute(text("SELECT * FROM missing"))
        from opentelemetry import trace

        assert trace.get_current_span() is job
    [statement] = _statements(observability)
    assert statement.status.is_ok is False


async def test_spans_go_to_the_service_whose_request_made_them(make_observability: Factory) -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    obs.instrument_sqlalchemy(engine)
    first_app, second_app = _tasks_app(engine), _tasks_app(engine)
    first = make_observability(first_app, service_name="backend", registry=CollectorRegistry())
    second = make_observability(second_app, service_name="reports", registry=CollectorRegistry())
    try:
        async with client(first_app) as http:
            await http.get("/tasks/1")
        async with client(second_app) as http:
            await http.get("/tasks/2")
            await http.get("/tasks/3")
    finally:
        await engine.dispose()
    assert len(_statements(first)) == 1
    assert len(_statements(second)) == 2
    for observability, name in ((first, "backend"), (second, "reports")):
        for span in _clients(observability):
            assert span.resource.attributes["service.name"] == name


def test_a_missing_instrumentation_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module, call, extra in (
        ("opentelemetry.instrumentation.sqlalchemy", obs.instrument_sqlalchemy, "sqlalchemy"),
        ("opentelemetry.instrumentation.httpx", obs.instrument_httpx, "httpx"),
        ("opentelemetry.instrumentation.asyncpg", obs.instrument_asyncpg, "asyncpg"),
        ("opentelemetry.instrumentation.redis", obs.instrument_redis, "redis"),
    ):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
        with pytest.raises(
            MissingExtraError, match=rf"pip install 'todo-observability\[{extra}\]'"
        ):
            call()


# --- httpx ---------------------------------------------------------------------------------------


def _echo_app() -> FastAPI:
    app = FastAPI()

    @app.get("/echo")
    async def echo() -> dict[str, str]:
        return {"ok": "yes"}

    return app


@contextlib.asynccontextmanager
async def _served(app: Any) -> AsyncIterator[str]:
    port = free_port()
    async with serve_app(app, port):
        yield f"http://127.0.0.1:{port}"


async def test_every_httpx_client_gets_client_spans(make_observability: Factory) -> None:
    observability = make_observability(service_name="frontend")
    obs.instrument_httpx()
    obs.instrument_httpx()
    async with _served(_echo_app()) as base:
        with observability.tracer.start_as_current_span("page") as page:
            async with httpx.AsyncClient(base_url=base) as http:
                assert (await http.get("/echo")).status_code == 200
            with httpx.Client(base_url=base) as sync_http:
                # On a thread: the server answers on this event loop.
                response = await anyio.to_thread.run_sync(sync_http.get, "/echo")
                assert response.status_code == 200
    clients = _clients(observability)
    # The instrumentation's semantic conventions (old by default, new with OTEL_SEMCONV_STABILITY_OPT_IN).
    statuses = [
        s.attributes.get("http.response.status_code", s.attributes.get("http.status_code"))
        for s in clients
        if s.attributes
    ]
    assert statuses == [200, 200]
    page_span = next(s for s in spans(observability) if s.name == "page")
    assert all(_child_of(span, page_span) for span in clients)
    del page


class _LoggingTransport(httpx.AsyncHTTPTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        log.info("sending")
        return await super().handle_async_request(request)


async def test_our_clients_keep_one_span_per_request(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    observability = make_observability(service_name="frontend")
    obs.instrument_httpx()
    async with (
        _served(_echo_app()) as base,
        obs.create_http_client(base_url=base, transport=_LoggingTransport()) as http,
    ):
        obs.instrument_httpx(http)  # ours already: nothing to add
        assert (await http.get("/echo")).status_code == 200
    [span] = _clients(observability)
    assert span.name == "GET"
    # What the transport below logs belongs to the request's span.
    [line] = captured_logs.find(message="sending")
    assert span.context is not None
    assert line["span_id"] == f"{span.context.span_id:016x}"


async def test_one_client_can_be_instrumented_alone(make_observability: Factory) -> None:
    observability = make_observability(service_name="frontend")
    async with (
        _served(_echo_app()) as base,
        httpx.AsyncClient(base_url=base) as traced,
        httpx.AsyncClient(base_url=base) as untraced,
    ):
        obs.instrument_httpx(traced)
        obs.instrument_httpx(traced)
        await traced.get("/echo")
        await untraced.get("/echo")
    assert len(_clients(observability)) == 1


# --- asyncpg, redis ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgresql() -> Iterator[PostgresCluster]:
    with postgres_cluster() as cluster:
        yield cluster


async def test_asyncpg_queries_are_client_spans_without_their_arguments(
    make_observability: Factory, postgresql: PostgresCluster
) -> None:
    import asyncpg

    observability = make_observability(service_name="backend")
    obs.instrument_asyncpg()
    obs.instrument_asyncpg()
    with observability.tracer.start_as_current_span("job"):
        conn = await asyncpg.connect(
            host="127.0.0.1", port=postgresql.port, user="postgres", database="postgres"
        )
        try:
            assert await conn.fetchval("SELECT $1::text", "hunter2") == "hunter2"
        finally:
            await conn.close()
    [query] = [s for s in _clients(observability) if "SELECT" in s.name]
    assert query.attributes is not None
    assert query.attributes["db.statement"] == "SELECT $1::text"
    assert "hunter2" not in str(dict(query.attributes))


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    """A real redis-server on a free loopback port, in a temporary folder."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail(
            "redis-server is not on PATH: install the Debian package 'redis-server' "
            "(./dev test installs it)."
        )
    port = free_port()
    folder = tempfile.mkdtemp(prefix="todo-obs-redis-")
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )
    try:
        import redis

        eventually(lambda: _pings(redis.Redis(port=port)), timeout=20, what="redis-server")
        yield port
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _pings(connection: Any) -> bool:
    try:
        return bool(connection.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False
    finally:
        connection.close()


async def test_redis_commands_are_client_spans_without_their_values(
    make_observability: Factory, redis_port: int
) -> None:
    import redis.asyncio

    observability = make_observability(service_name="backend")
    obs.instrument_redis()
    obs.instrument_redis()
    with observability.tracer.start_as_current_span("job"):
        connection = redis.asyncio.Redis(port=redis_port)
        try:
            await connection.set("session:7", "token-value")
            assert await connection.get("session:7") == b"token-value"
        finally:
            await connection.aclose()
    commands = {s.name: s for s in _clients(observability)}
    assert {"SET", "GET"} <= set(commands)
    attributes = commands["SET"].attributes
    assert attributes is not None
    assert attributes["db.statement"] == "SET ? ?"
    assert "token-value" not in str(dict(attributes))


# --- opentelemetry-instrument --------------------------------------------------------------------


async def test_an_app_instrumented_by_opentelemetry_has_one_server_span(
    make_observability: Factory,
) -> None:
    import fastapi

    FastAPIInstrumentor().instrument()  # what opentelemetry-instrument does
    app = fastapi.FastAPI()

    @app.get("/echo")
    async def echo() -> dict[str, str]:
        return {"ok": "yes"}

    assert getattr(app, "_is_instrumented_by_opentelemetry", False)
    observability = make_observability(app, service_name="backend")
    async with client(app) as http:
        assert (await http.get("/echo")).status_code == 200
    servers = [s for s in spans(observability) if s.kind is SpanKind.SERVER]
    assert [s.instrumentation_scope.name for s in servers if s.instrumentation_scope] == [
        "todo_observability"
    ]
    observability.shutdown()
    # Undone: the app is as the instrumentation left it.
    assert app.build_middleware_stack.__func__ is not FastAPI.build_middleware_stack  # type: ignore[attr-defined]


APP = """
import todo_observability as obs
from fastapi import FastAPI

app = FastAPI()


@app.get("/echo")
async def echo() -> dict[str, str]:
    return {"ok": "yes"}


obs.configure(app)
"""


@pytest.mark.slow
def test_under_opentelemetry_instrument_each_request_has_one_server_span(tmp_path: Path) -> None:
    import json
    import os

    (tmp_path / "app.py").write_text(APP)
    spans_file = tmp_path / "spans.jsonl"
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "backend",
        "OTEL_TRACES_EXPORTER": "file",
        "TODO_OBS_TRACES_FILE": str(spans_file),
        "TODO_OBS_ENVIRONMENT": "dev",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [
            str(bin_dir / "opentelemetry-instrument"),
            str(bin_dir / "uvicorn"),
            "app:app",
            "--port",
            str(port),
            "--no-access-log",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        eventually(
            # opentelemetry-instrument imports every instrumented library before the app starts
            lambda: _answers(f"http://127.0.0.1:{port}/echo"),
            timeout=120,
            what="the app",
        )
        assert httpx.get(f"http://127.0.0.1:{port}/echo").status_code == 200
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert process.returncode in (0, -15), output  # uvicorn re-raises the SIGTERM it handled
    exported = [json.loads(line) for line in spans_file.read_text().splitlines() if line]
    flat = [span for batch in exported for span in (batch if isinstance(batch, list) else [batch])]
    servers = [
        s
        for s in flat
        if s.get("kind") == "SERVER" and s.get("tags", {}).get("http.route") == "/echo"
    ]
    # Two requests, two server spans: none added by opentelemetry-instrumentation-fastapi.
    assert len(servers) == 2, output


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_library_version_the_instrumentation_refuses_is_an_error_not_a_silent_no_op(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        SQLAlchemyInstrumentor,
        "instrumentation_dependencies",
        lambda self: ["sqlalchemy >= 99"],
    )
    with pytest.raises(
        obs.ObservabilityError,
        match=r"sqlalchemy >= 99.*pip install 'todo-observability\[sqlalchemy\]'",
    ):
        obs.instrument_sqlalchemy(create_engine("sqlite://"))
    assert not SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry
