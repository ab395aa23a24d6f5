"""`todo-obs sidecar` as a real process, serving real apps over HTTP; and its command line."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.helpers import free_port, serve_app, todo_obs
from todo_observability.cli import main
from todo_observability.ops.spans import load_spans

from .conftest import APP_TRACEPARENT, TRACE_ID

pytestmark = pytest.mark.anyio


async def wait_until_ready(
    client: httpx.AsyncClient, process: subprocess.Popen[bytes], log: Path
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        try:
            if (await client.get("/v1.0/healthz")).status_code == 204:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or loop.time() > deadline:
            raise AssertionError(f"the sidecar did not become ready:\n{log.read_text()}")
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_todo_obs_sidecar_process_delivers_invokes_and_flushes_spans(tmp_path: Path) -> None:
    backend_port, recurring_port = free_port(), free_port()
    backend_dapr, recurring_dapr = free_port(), free_port()
    delivered: asyncio.Queue[tuple[dict[str, str], Any]] = asyncio.Queue()
    pinged: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def subscribe(request: Request) -> Response:
        return JSONResponse([{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}])

    async def orders(request: Request) -> Response:
        await delivered.put((dict(request.headers), await request.json()))
        return JSONResponse({"status": "SUCCESS"})

    async def ping(request: Request) -> Response:
        await pinged.put(dict(request.headers))
        return Response(b"pong")

    backend = Starlette(
        routes=[
            Route("/dapr/subscribe", subscribe),
            Route("/orders", orders, methods=["POST"]),
        ]
    )
    recurring = Starlette(routes=[Route("/ping", ping, methods=["GET"])])
    zipkin_spans: list[dict[str, Any]] = []

    async def collect(request: Request) -> Response:
        zipkin_spans.extend(await request.json())
        return Response(status_code=202)

    collector = Starlette(routes=[Route("/api/v2/spans", collect, methods=["POST"])])
    zipkin_port = free_port()
    spans_file, log = tmp_path / "spans.jsonl", tmp_path / "sidecar.log"
    command = [
        *todo_obs(),
        "sidecar",
        "--app",
        f"backend:{backend_port}:{backend_dapr}",
        "--app",
        f"recurring:{recurring_port}:{recurring_dapr}",
        "--span-file",
        str(spans_file),
        "--zipkin-endpoint",
        f"http://127.0.0.1:{zipkin_port}/api/v2/spans",
        "--retry",
        "constant:10ms:2",
    ]
    env = {**os.environ, "APP_API_TOKEN": "app-secret", "DAPR_API_TOKEN": "api-secret"}
    token = {"dapr-api-token": "api-secret"}
    async with (
        serve_app(backend, backend_port),
        serve_app(recurring, recurring_port),
        serve_app(collector, zipkin_port),
    ):
        with log.open("wb") as stderr:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{backend_dapr}") as client:
                await wait_until_ready(client, process, log)
                published = await client.post(
                    "/v1.0/publish/pubsub/orders",
                    json={"task": 7},
                    headers={"traceparent": APP_TRACEPARENT, **token},
                )
                assert published.status_code == 204
                headers, event = await asyncio.wait_for(delivered.get(), 20)
                invoked = await client.get(
                    "/v1.0/invoke/recurring/method/ping",
                    headers={"traceparent": APP_TRACEPARENT, **token},
                )
                ping_headers = await asyncio.wait_for(pinged.get(), 20)
                refused = await client.get("/v1.0/metadata")
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                status = await asyncio.to_thread(process.wait, 20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise
    assert status == 0, log.read_text()
    assert event["data"] == {"task": 7}
    assert event["traceparent"].startswith(f"00-{TRACE_ID}-")
    assert headers["content-type"] == "application/cloudevents+json"
    assert headers["traceparent"].startswith(f"00-{TRACE_ID}-")
    assert headers["dapr-api-token"] == "app-secret"
    assert (invoked.status_code, invoked.text) == (200, "pong")
    assert ping_headers["dapr-caller-app-id"] == "backend"
    assert ping_headers["traceparent"].startswith(f"00-{TRACE_ID}-")
    assert refused.status_code == 401
    # the spans of both sidecars were flushed to the file on SIGTERM
    spans = load_spans(spans_file)
    named = {
        (s["localEndpoint"]["serviceName"], s["name"]) for s in spans if s["traceId"] == TRACE_ID
    }
    assert ("backend", "/v1.0/publish/pubsub/orders") in named
    assert ("backend", "pubsub/orders") in named
    assert ("backend", "CallLocal/recurring/ping") in named
    assert ("recurring", "CallLocal/recurring/ping") in named
    # and to Zipkin, the same spans
    exported = {(s["localEndpoint"]["serviceName"], s["name"]) for s in zipkin_spans}
    assert named <= exported
    text = log.read_text()
    assert "[backend] Dapr HTTP API on http://127.0.0.1" in text
    assert "sidecar ready: 1 subscription(s): pubsub/orders" in text
    assert "shutting down" in text


def test_the_command_needs_an_app(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("APP_ID", raising=False)
    assert main(["sidecar"]) == 2
    assert "needs at least one app" in capsys.readouterr().err
    assert main(["sidecar", "--app", "backend:80"]) == 2
    assert "APP_ID:APP_PORT:DAPR_HTTP_PORT" in capsys.readouterr().err
    assert main(["sidecar", "--app", "a:1:2", "--app", "a:3:4"]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["sidecar", "--app", "a:1:2", "--retry", "linear:1s:3"]) == 2
    assert "'constant:<interval>:<max retries>'" in capsys.readouterr().err


def test_app_id_and_ports_fall_back_to_daprd_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from todo_observability.testing.sidecar.runner import SidecarSpec, build_specs

    monkeypatch.setenv("APP_ID", "backend")
    monkeypatch.setenv("APP_PORT", "8001")
    monkeypatch.setenv("DAPR_HTTP_PORT", "3501")
    assert build_specs([]) == [SidecarSpec("backend", 8001, 3501)]
    monkeypatch.delenv("DAPR_HTTP_PORT")
    assert build_specs([], app_port=9000) == [SidecarSpec("backend", 9000, 3500)]


def test_a_port_in_use_exits_with_status_1(capfd: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["sidecar", "--app", f"backend:{free_port()}:{port}"]) == 1
    assert "cannot serve" in capfd.readouterr().err


def test_python_dash_m_runs_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "todo_observability.testing.sidecar", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "usage: todo-obs sidecar" in result.stdout
    assert "--retry POLICY" in result.stdout
