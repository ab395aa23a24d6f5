"""Against a real uvicorn process: what an operator sees on stdout, on /metrics and in the span file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    port = free_port()
    spans = tmp_path / "spans.jsonl"
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "served",
        "OTEL_TRACES_EXPORTER": "file",
        "TODO_OBS_TRACES_FILE": str(spans),
        "TODO_OBS_LOAD_PLUGINS": "false",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.apps.served:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{base}/metrics", timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(
                    f"uvicorn did not start:\n{process.communicate()[0]}"
                ) from None
            time.sleep(0.1)
    yield base, process, spans
    if process.poll() is None:
        process.kill()
        process.communicate()


def test_real_uvicorn_process_logs_measures_and_traces(
    served: tuple[str, subprocess.Popen[str], Path],
) -> None:
    base, process, spans_file = served
    ok = httpx.get(f"{base}/tasks/5", headers={"X-Request-ID": "uvicorn-1"})
    failed = httpx.get(f"{base}/boom", headers={"X-Request-ID": "uvicorn-2"})
    metrics = httpx.get(f"{base}/metrics").text
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=30)

    assert ok.json() == {"id": 5}
    assert ok.headers["x-request-id"] == "uvicorn-1"
    assert failed.status_code == 500
    assert failed.headers["x-request-id"] == "uvicorn-2"
    assert (
        'http_server_requests_total{method="GET",route="/tasks/{task_id}",status_code="200"} 1.0'
        in metrics
    )
    assert 'http_server_requests_total{method="GET",route="/boom",status_code="500"} 1.0' in metrics

    # Every line the uvicorn process wrote is JSON.
    lines: list[dict[str, Any]] = [json.loads(raw) for raw in stdout.splitlines() if raw.strip()]
    by_logger: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_logger.setdefault(line["logger"], []).append(line)
    assert "uvicorn.access" not in by_logger  # replaced by ours
    assert any("Uvicorn running" in line["message"] for line in by_logger["uvicorn.error"])
    access = by_logger["todo_observability.access"]
    assert [(a["request_id"], a["context"]["route"], a["context"]["status"]) for a in access] == [
        ("uvicorn-1", "/tasks/{task_id}", 200),
        ("uvicorn-2", "/boom", 500),
    ]
    # One line per failure, correlated: the access line carries the traceback; uvicorn's own
    # "Exception in ASGI application" (no request id, no trace id) does not repeat it.
    with_traceback = [line for line in lines if "served failure" in json.dumps(line)]
    assert [line["logger"] for line in with_traceback] == ["todo_observability.access"]
    assert with_traceback[0]["request_id"] == "uvicorn-2"
    assert with_traceback[0]["trace_id"]
    [read] = [line for line in lines if line["message"] == "task read"]
    assert read["request_id"] == "uvicorn-1"
    assert read["service_name"] == "served"
    assert read["context"] == {"task_id": 5}

    # The lifespan shutdown flushed the batch processor: every request's span is in the file.
    exported = [span for line in spans_file.read_text().splitlines() for span in json.loads(line)]
    names = sorted(span["name"] for span in exported if span["kind"] == "SERVER")
    assert names == ["GET /boom", "GET /tasks/{task_id}"]
    trace_ids = {span["traceId"] for span in exported}
    assert read["trace_id"] in trace_ids
