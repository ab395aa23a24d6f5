"""`python -m reference_app.backend` as an operator runs it: a real uvicorn process and its JSON lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from reference_app.backend import DEV_JWT_SECRET
from reference_app.common.auth import Tokens
from tests.helpers import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


def test_the_module_serves_the_backend_with_the_development_defaults(tmp_path: Path) -> None:
    port, dapr_port = free_port(), free_port()  # no sidecar listens on dapr_port
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JWT_", "DATABASE_", "TODO_OBS_", "OTEL_", "DAPR_", "OUTBOX_"))
    }
    env.update(
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        PORT=str(port),
        DAPR_HTTP_PORT=str(dapr_port),
        OTEL_TRACES_EXPORTER="none",
        TODO_OBS_LOAD_PLUGINS="false",
    )
    # From an empty folder: the default database, ./data/backend.db, is created there.
    process = subprocess.Popen(
        [sys.executable, "-m", "reference_app.backend"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"the backend did not start:\n{process.communicate()[0]}")
            time.sleep(0.1)
        token = Tokens(DEV_JWT_SECRET).issue("alice", email="alice@example.org")
        created = httpx.post(
            f"{base}/tasks",
            json={"title": "Daily standup", "recurrence": "DAILY"},
            headers={"authorization": f"Bearer {token}", "x-request-id": "main-1"},
        )
        ready = httpx.get(f"{base}/health/ready")
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=30)

    # uvicorn shuts down gracefully, then re-raises the signal it stopped for.
    assert process.returncode in (0, -signal.SIGTERM), stdout
    assert created.status_code == 201  # the sidecar is down: the event waits in the outbox
    assert ready.status_code == 503
    assert ready.json()["checks"]["dapr-sidecar"]["status"] == "DOWN"
    assert ready.json()["checks"]["database"]["status"] == "UP"
    assert (tmp_path / "data" / "backend.db").is_file()

    lines: list[dict[str, Any]] = [json.loads(raw) for raw in stdout.splitlines() if raw.strip()]
    messages = [line["message"] for line in lines]
    assert any(
        m.startswith("JWT_SECRET is not set: using the public development secret") for m in messages
    )
    assert "backend started" in messages
    assert any("Uvicorn running on" in m for m in messages)
    assert "Application shutdown complete." in messages
    [created_line] = [line for line in lines if line["message"] == "task created"]
    assert (created_line["request_id"], created_line["user_id"]) == ("main-1", "alice")
    [failed] = [
        line for line in lines if line["message"] == "outbox: publish failed, kept for retry"
    ][:1]
    assert "ERR_SIDECAR_UNREACHABLE" in failed["context"]["error"]
    [access] = [
        line
        for line in lines
        if line["logger"] == "todo_observability.access" and line["request_id"] == "main-1"
    ]
    assert (access["message"], access["user_id"]) == ("POST /tasks 201", "alice")


def test_the_module_refuses_a_bad_setting_with_one_line_and_status_2(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TODO_OBS_")}
    env.update(PYTHONPATH=str(ROOT), PORT="eighty")
    result = subprocess.run(
        [sys.executable, "-m", "reference_app.backend"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "backend: PORT must be a port number between 1 and 65535, got 'eighty'; "
        "set it like PORT=8001, or unset it."
    ]
    assert not (tmp_path / "data").exists()  # refused before anything was built
