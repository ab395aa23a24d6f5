"""Several workers of one service: the warning without PROMETHEUS_MULTIPROC_DIR, and the gunicorn hooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.helpers import free_port
from todo_observability import gunicorn
from todo_observability._workers import WorkerMark

WARNING = "without PROMETHEUS_MULTIPROC_DIR"


def _serve(workers: int, tmp_path: Path, **env: str) -> tuple[list[dict[str, object]], str]:
    """Run the test app under `uvicorn --workers`, until every worker started; its JSON lines."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.apps.served:app",
            "--port",
            str(free_port()),
            "--workers",
            str(workers),
        ],
        env={
            **os.environ,
            "OTEL_SERVICE_NAME": "served",
            "OTEL_TRACES_EXPORTER": "none",
            "TODO_OBS_LOAD_PLUGINS": "false",
            "PYTHONUNBUFFERED": "1",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    started = 0
    deadline = time.monotonic() + 180
    try:
        while started < workers and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            started += "Application startup complete" in line
    finally:
        process.terminate()
        rest, _ = process.communicate(timeout=60)
    lines += rest.splitlines()
    output = "".join(lines)
    assert started == workers, output
    return [json.loads(line) for line in lines if line.startswith("{")], output


def _warnings(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return [r for r in records if r["level"] == "WARNING" and WARNING in str(r["message"])]


@pytest.mark.slow
def test_two_workers_without_multiprocess_mode_are_told(tmp_path: Path) -> None:
    records, output = _serve(2, tmp_path)
    [warning] = _warnings(records)  # the second to start sees the first
    assert "Set PROMETHEUS_MULTIPROC_DIR" in str(warning["message"]), output


@pytest.mark.slow
def test_one_worker_or_multiprocess_mode_is_not_warned(tmp_path: Path) -> None:
    records, output = _serve(1, tmp_path)
    assert _warnings(records) == [], output
    folder = tmp_path / "metrics"
    folder.mkdir()
    records, output = _serve(2, tmp_path, PROMETHEUS_MULTIPROC_DIR=str(folder))
    assert _warnings(records) == [], output


def test_a_dead_siblings_mark_does_not_count(tmp_path: Path) -> None:
    mark = WorkerMark("backend", root=tmp_path)
    mark.folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (mark.folder / str(dead.pid)).touch()
    (mark.folder / "not-a-pid").touch()
    assert mark.enter() == []
    # Another service of the same parent has its own folder.
    other = WorkerMark("frontend", root=tmp_path)
    assert other.folder != mark.folder
    (mark.folder / str(dead.pid)).unlink()
    (mark.folder / "not-a-pid").unlink()
    mark.leave()
    assert not mark.folder.exists()


def test_a_live_sibling_counts(tmp_path: Path) -> None:
    mark = WorkerMark("backend", root=tmp_path)
    mark.folder.mkdir()
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (mark.folder / str(sibling.pid)).touch()
        assert mark.enter() == [sibling.pid]
    finally:
        sibling.kill()
        sibling.wait()
    assert mark.siblings() == []


def test_gunicorn_hooks_empty_the_folder_and_forget_a_dead_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "metrics"
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    gunicorn.on_starting(None)
    gunicorn.child_exit(None, SimpleNamespace(pid=41))  # not multiprocess: nothing to do
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    gunicorn.on_starting(None)
    assert folder.is_dir()
    for name in (
        "counter_41.db",
        "gauge_livesum_41.db",
        "gauge_liveall_41.db",
        "gauge_livesum_42.db",
    ):
        (folder / name).touch()
    gunicorn.child_exit(None, SimpleNamespace(pid=41))
    # The dead worker's live gauges go; its counters stay (they still count), the others stay.
    assert sorted(p.name for p in folder.iterdir()) == ["counter_41.db", "gauge_livesum_42.db"]
    gunicorn.on_starting(None)  # a new run of the master starts from nothing
    assert list(folder.iterdir()) == []
