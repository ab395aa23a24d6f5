"""A canary secret planted everywhere a secret can slip in never leaves the process."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from todo_observability import bind_context, create_http_client, get_logger, traced
from todo_observability.health.model import Check, CheckResult
from todo_observability.redaction import REDACTED

from .helpers import client, spans

pytestmark = pytest.mark.anyio

CANARY = "c4n4ryS3cr3tf00d"
BASIC = base64.b64encode(f"ann:{CANARY}".encode()).decode()
JWT = f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.{CANARY}"
DSN = f"postgresql://app:{CANARY}@db.internal:5432/todo"
UPSTREAM = f"http://svc:{CANARY}@upstream.internal/status?api_key={CANARY}&page=2"


def _failing_database() -> None:
    raise ConnectionError(f"could not connect to {DSN}: password authentication failed")


def _degraded_cache() -> CheckResult:
    return CheckResult.degraded(
        f"auth refused with Bearer {CANARY}",
        dsn=DSN,
        url=f"https://cache.internal/?token={CANARY}",
        note=f"connected to {DSN}",
    )


@traced("repository.load", attributes={"query": f"https://api/?access_token={CANARY}", "dsn": DSN})
def _load() -> None:
    raise ValueError(f"cannot reach {DSN} with {JWT}")


def _app() -> Starlette:
    log = get_logger("tests.canary")

    async def work(request: Request) -> PlainTextResponse:
        log.info("connecting to %s", DSN)
        log.info(f"auth header was Bearer {CANARY} and Basic {BASIC}")
        log.warning(
            "callback",
            extra={
                "next": f"https://app/cb?code=1&access_token={CANARY}",
                "nested": {"token_value": JWT, "list": [f"Authorization: Bearer {CANARY}"]},
                "conn_str": f"Server=db;Password={CANARY}",
                "payload": {"user": "ann", "pin": CANARY},
            },
        )
        with bind_context(dsn=DSN, upstream=UPSTREAM):
            log.info("bound fields")
        span = trace.get_current_span()
        span.set_attribute("db.connection_string", DSN)
        span.set_attribute("note", f"retried with Bearer {CANARY}")
        span.add_event("retry", {"url": UPSTREAM})
        try:
            _load()
        except ValueError:
            log.exception("loading failed")
        async with create_http_client(transport=httpx.MockTransport(_upstream)) as http:
            await http.get(UPSTREAM)
            try:
                await http.get(f"http://svc:{CANARY}@down.internal/?token={CANARY}")
            except httpx.ConnectError:
                log.exception("upstream down")
        return PlainTextResponse("ok")

    async def boom(request: Request) -> PlainTextResponse:
        raise RuntimeError(f"token={CANARY} rejected by {DSN}")

    return Starlette(routes=[Route("/work", work), Route("/boom", boom)])


def _upstream(request: httpx.Request) -> httpx.Response:
    if request.url.host == "down.internal":
        raise httpx.ConnectError(f"cannot connect to {request.url}", request=request)
    return httpx.Response(200, text="fine")


async def test_a_canary_secret_never_appears_in_any_output(
    make_observability: Any, tmp_path: Path
) -> None:
    span_file = tmp_path / "spans.jsonl"
    stream = io.StringIO()
    app = _app()
    obs = make_observability(
        app,
        traces_exporter=["file", "memory"],
        traces_file=str(span_file),
        log_stream=stream,
        health_details="full",
        health_checks=[
            Check("database", _failing_database),
            Check("cache", _degraded_cache, critical=False),
        ],
    )
    outputs: dict[str, str] = {}
    async with client(app, raise_app_exceptions=False) as http:
        work = await http.get("/work")
        assert work.status_code == 200
        boom = await http.get(f"/boom?token={CANARY}")
        assert boom.status_code == 500
        outputs["error response"] = f"{boom.headers} {boom.text}"
        for probe in ("live", "ready", "startup"):
            response = await http.get(f"/health/{probe}")
            outputs[f"{probe} probe"] = response.text
        metrics = await http.get("/metrics")
        outputs["metrics"] = metrics.text
    memory = [span.to_json() for span in spans(obs)]
    obs.shutdown()
    outputs["logs"] = stream.getvalue()
    outputs["span file"] = span_file.read_text()
    outputs["memory spans"] = "\n".join(memory)

    for name, text in outputs.items():
        assert CANARY not in text, name
        assert BASIC not in text, name
    # Scrubbed, not lost: the marker stands where each secret was.
    for name in ("logs", "span file", "memory spans", "ready probe"):
        assert REDACTED in outputs[name], name
    ready = json.loads(outputs["ready probe"])
    assert ready["checks"]["database"]["error"] == (
        f"ConnectionError: could not connect to postgresql://app:{REDACTED}@db.internal:5432/todo: "
        "password authentication failed"
    )
    assert ready["checks"]["cache"]["details"]["dsn"] == REDACTED
    lines = [json.loads(line) for line in outputs["logs"].splitlines()]
    assert not [line for line in lines if line["logger"] == "httpx"]  # quieted: full URLs
    [failed] = [line for line in lines if line["message"] == "loading failed"]
    assert failed["exception"]["message"] == (
        f"cannot reach postgresql://app:{REDACTED}@db.internal:5432/todo with {REDACTED}"
    )
    # What is scrubbed and what is kept, in the span file the Zipkin exporter wrote.
    zipkin = [span for line in outputs["span file"].splitlines() for span in json.loads(line)]
    [client_span] = [
        s for s in zipkin if s.get("tags", {}).get("server.address") == "upstream.internal"
    ]
    assert client_span["tags"]["url.full"] == "http://upstream.internal/status"


async def test_spans_recorded_by_the_sdk_are_scrubbed_before_processors_of_your_own_see_them(
    make_observability: Any,
) -> None:
    # A provider of the user's own, without the SDK's exporters: only record-time scrubbing helps.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    obs = make_observability(tracer_provider=provider)
    with pytest.raises(ValueError, match="cannot reach"):
        _load()
    async with create_http_client(
        observability=obs, transport=httpx.MockTransport(_upstream)
    ) as http:
        await http.get(UPSTREAM)
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://svc:{CANARY}@down.internal/?token={CANARY}")
    recorded = exporter.get_finished_spans()
    assert sorted(span.name for span in recorded) == ["GET", "GET", "repository.load"]
    text = "\n".join(span.to_json() for span in recorded)
    assert CANARY not in text
    [load] = [span for span in recorded if span.name == "repository.load"]
    assert load.attributes is not None
    assert load.attributes["dsn"] == REDACTED
    assert load.status.description == (
        f"ValueError: cannot reach postgresql://app:{REDACTED}@db.internal:5432/todo with {REDACTED}"
    )
    [event] = load.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"
    assert REDACTED in str(event.attributes["exception.stacktrace"])
