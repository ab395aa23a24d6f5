"""End to end over real processes: two uvicorn services and the sidecar emulator process.

An HTTP request to backend publishes `task.completed`; the emulator delivers it to
recurring, whose handler invokes backend back through both sidecars. One trace id
covers every hop, the sidecars' own spans included, and the request id of the first
request appears in both services' logs. A poison event is dropped, dead-lettered,
parked, listed and replayed with `todo-obs dlq`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import eventually, free_port
from todo_observability.cli import main as todo_obs
from todo_observability.ops.spans import load_spans

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def lines(self) -> list[dict[str, Any]]:
        text = self.log.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@dataclass
class System:
    backend: str
    recurring: str
    processes: dict[str, Process]
    spans_file: Path


def wait_until(url: str, process: Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise AssertionError(f"{process.name} exited:\n{process.log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        time.sleep(0.1)
    raise AssertionError(f"{process.name} not up at {url}:\n{process.log.read_text()}")


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    ports = {
        name: free_port() for name in ("backend", "recurring", "backend-dapr", "recurring-dapr")
    }
    spans_file = tmp_path / "spans.jsonl"
    base_env = {**os.environ, "PYTHONPATH": str(ROOT), "TODO_OBS_ENVIRONMENT": "dev"}
    processes: dict[str, Process] = {}

    def start(name: str, command: list[str], env: dict[str, str]) -> Process:
        log = tmp_path / f"{name}.log"
        handle = log.open("wb")
        popen = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
        handle.close()
        processes[name] = Process(name, popen, log)
        return processes[name]

    try:
        sidecars = start(
            "sidecars",
            [
                sys.executable,
                "-m",
                "todo_observability.cli",
                "sidecar",
                "--app",
                f"backend:{ports['backend']}:{ports['backend-dapr']}",
                "--app",
                f"recurring:{ports['recurring']}:{ports['recurring-dapr']}",
                "--retry",
                "constant:50ms:2",
                "--span-file",
                str(spans_file),
            ],
            base_env,
        )
        for service in ("backend", "recurring"):
            start(
                service,
                [sys.executable, "-m", "examples.dapr_services"],
                {
                    **base_env,
                    "SERVICE": service,
                    "PORT": str(ports[service]),
                    "DAPR_HTTP_PORT": str(ports[f"{service}-dapr"]),
                    "OTEL_TRACES_EXPORTER": "file",
                    "TODO_OBS_TRACES_FILE": str(spans_file),
                    "OTEL_TRACES_SAMPLER_ARG": "1.0",
                },
            )
        for service in ("backend", "recurring"):
            wait_until(f"http://127.0.0.1:{ports[service]}/health/live", processes[service])
            wait_until(f"http://127.0.0.1:{ports[service + '-dapr']}/v1.0/healthz", sidecars)
        yield System(
            f"http://127.0.0.1:{ports['backend']}",
            f"http://127.0.0.1:{ports['recurring']}",
            processes,
            spans_file,
        )
    finally:
        for process in processes.values():
            process.popen.terminate()
        for process in processes.values():
            try:
                process.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:  # noqa: PERF203 - each process gets its own grace period
                process.popen.kill()
                process.popen.wait()


def stop(system: System) -> None:
    """Stop everything gracefully, so every process flushes its spans and logs."""
    for process in system.processes.values():
        process.popen.terminate()
    for process in system.processes.values():
        process.popen.wait(timeout=15)


def test_one_trace_and_one_request_id_across_both_services_and_the_sidecars(system: System) -> None:
    response = httpx.post(
        f"{system.backend}/tasks/1/complete", headers={"x-request-id": "e2e-req-1"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "e2e-req-1"
    backend = system.processes["backend"]
    eventually(
        lambda: any(line["message"] == "task created" for line in backend.lines()),
        20,
        lambda: (
            backend.log.read_text()
            + system.processes["recurring"].log.read_text()
            + system.processes["sidecars"].log.read_text()
        ),
    )
    stop(system)

    lines = {name: system.processes[name].lines() for name in ("backend", "recurring")}
    completed = next(line for line in lines["backend"] if line["message"] == "task completed")
    trace_id = completed["trace_id"]
    for service in ("backend", "recurring"):
        mine = [line for line in lines[service] if line.get("request_id") == "e2e-req-1"]
        assert mine, f"no line of {service} carries the request id"
        assert {line["trace_id"] for line in mine} == {trace_id}
    created = next(line for line in lines["backend"] if line["message"] == "task created")
    assert created["request_id"] == "e2e-req-1"

    spans = [s for s in load_spans(system.spans_file) if s["traceId"] == trace_id]
    by_id = {s["id"]: s for s in spans}

    def only(service: str, kind: str, name: str) -> dict[str, Any]:
        found = [
            s
            for s in spans
            if (s["localEndpoint"]["serviceName"], s.get("kind"), s["name"])
            == (service, kind, name)
        ]
        assert len(found) == 1, (
            (service, kind, name),
            sorted(
                (s["localEndpoint"]["serviceName"], s.get("kind", ""), s["name"]) for s in spans
            ),
        )
        return found[0]

    def parent_of(span: dict[str, Any]) -> dict[str, Any]:
        return by_id[span["parentId"]]

    # The chain, the sidecars' own spans included (a sidecar reports under its app id).
    complete = only("backend", "SERVER", "POST /tasks/{task_id}/complete")
    publish = only("backend", "PRODUCER", "task-events publish")
    publish_api = only("backend", "CLIENT", "/v1.0/publish/pubsub/task-events")
    delivery = only("recurring", "CLIENT", "pubsub/task-events")
    process = only("recurring", "CONSUMER", "task-events process")
    invoke = only("recurring", "CLIENT", "POST")
    invoke_api = only("recurring", "CLIENT", "CallLocal/backend/tasks")
    call_local = only("backend", "SERVER", "CallLocal/backend/tasks")
    create = only("backend", "SERVER", "POST /tasks")
    assert "parentId" not in complete
    assert parent_of(publish) is complete
    assert parent_of(publish_api) is publish
    assert parent_of(delivery) is publish  # the CloudEvent carried the producer's context
    assert parent_of(process) is delivery
    assert parent_of(invoke) is process
    assert parent_of(invoke_api) is invoke
    assert parent_of(call_local) is invoke_api
    assert parent_of(create) is call_local
    assert all("parentId" not in s or s["parentId"] in by_id for s in spans)


def test_a_poison_event_is_parked_and_handled_with_the_dlq_command(
    system: System, capsys: pytest.CaptureFixture[str]
) -> None:
    created = httpx.post(f"{system.backend}/tasks", json={"title": "Broken", "rrule": "EVERY DAY"})
    task_id = created.json()["id"]
    assert httpx.post(f"{system.backend}/tasks/{task_id}/complete").status_code == 200
    recurring = system.processes["recurring"]
    eventually(
        lambda: any(line["message"] == "dead letter parked" for line in recurring.lines()),
        20,
        recurring.log.read_text,
    )
    dropped = next(
        line for line in recurring.lines() if line["message"].startswith("message dropped")
    )
    assert dropped["context"]["reason"] == "invalid_rrule"

    assert todo_obs(["dlq", "--service", system.recurring, "list"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("1 parked, task-events: 1")
    assert "invalid_rrule" in listing
    assert "'EVERY DAY' has no FREQ" in listing
    park_id = listing.splitlines()[1].split()[0]

    assert todo_obs(["dlq", "--service", system.recurring, "show", park_id]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["event"]["data"]["rrule"] == "EVERY DAY"
    assert shown["origin_topic"] == "task-events"

    assert todo_obs(["dlq", "--service", system.recurring, "purge", park_id]) == 1
    assert "--yes" in capsys.readouterr().out
    # Still poison: the replay is accepted, delivered, dropped again and parked again, and
    # the command says so (exit status 1: the operator's problem is not solved).
    assert todo_obs(["dlq", "--service", system.recurring, "replay", park_id, "--wait", "20"]) == 1
    assert f"{park_id} to task-events: parked again (invalid_rrule)" in capsys.readouterr().out
    eventually(
        lambda: sum(line["message"] == "dead letter parked" for line in recurring.lines()) == 2,
        20,
        "the replayed message to be parked again",
    )
    assert todo_obs(["dlq", "--service", system.recurring, "list", "--json"]) == 0
    [parked] = json.loads(capsys.readouterr().out)["parked"]
    assert parked["replays"] == 1
    assert todo_obs(["dlq", "--service", system.recurring, "purge", park_id, "--yes"]) == 0
    assert capsys.readouterr().out == f"purged {park_id}\n"
    assert todo_obs(["dlq", "--service", system.recurring, "list"]) == 0
    assert capsys.readouterr().out == "0 parked\n"
