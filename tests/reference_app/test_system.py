"""The README's first command, end to end: the whole reference system in real processes.

`python -m reference_app` starts the sidecar emulator, the four services, the SMTP sink, runs the
scenario and prints what an operator would look at. This test runs it and checks what it printed
against the files it left: the e-mail in the mail folder, the spans in the span file, the logs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.reference_app.harness import ROOT, free_layout, run_system
from todo_observability.ops.spans import load_spans

pytestmark = pytest.mark.slow


def test_the_scenario_runs_to_the_end_and_shows_its_observability(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # A reminder an earlier run left in the mail folder is not this run's.
    earlier = data / "mail" / "0001-20260101T090000.eml"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("Subject: Reminder: Daily standup at 9am\nTo: alice@todo.local\n\nold\n")
    out = run_system(data, "--no-monitoring")

    # The scenario: created, completed, next occurrence, e-mail.
    assert "✓ signed in as alice" in out
    created = re.search(r"✓ created task (\d+) 'Daily standup at 9am'", out)
    assert created, out
    assert "✓ the next occurrence appears" in out
    assert "✓ the reminder e-mail arrives" in out
    reported = re.search(r"^    (\S+\.eml): Subject: ", out, re.M)
    assert reported, out
    assert Path(reported[1]).name != earlier.name, out
    assert sorted(p.name for p in (data / "mail").glob("*.eml"))[0] == earlier.name
    message = (data / "mail" / Path(reported[1]).name).read_text()
    assert "Subject: Reminder: Daily standup at 9am" in message
    assert "To: alice@todo.local" in message

    # One trace from the click through backend, the sidecars and recurring, back to backend.
    trace_id = re.search(r"The completion's trace \(([0-9a-f]{32})\)", out)
    assert trace_id, out
    # The tree the report draws is whole: one root, no hop waiting for its parent's batch.
    tree = out.split("The completion's trace", 1)[1].split("\n\n", 1)[0].splitlines()
    spans_line = next(i for i, line in enumerate(tree) if re.match(r"  trace [0-9a-f]{32}: ", line))
    roots = [line for line in tree[spans_line + 1 :] if re.match(r"    \S", line)]
    assert len(roots) == 1, "\n".join(tree)
    assert "POST /api/tasks/{task_id}/complete" in roots[0]
    spans = [s for s in load_spans(data / "spans.jsonl") if s["traceId"] == trace_id[1]]
    hops = {
        (s["localEndpoint"]["serviceName"], s.get("kind") or "INTERNAL", s["name"]) for s in spans
    }
    for hop in [
        ("frontend", "SERVER", "POST /api/tasks/{task_id}/complete"),
        ("backend", "SERVER", "POST /tasks/{task_id}/complete"),
        ("backend", "PRODUCER", "task-events publish"),
        ("recurring-task-service", "CLIENT", "pubsub/task-events"),
        ("recurring-task-service", "CONSUMER", "task-events process"),
        ("recurring-task-service", "INTERNAL", "rrule.calculate_next_occurrence"),
        ("backend", "SERVER", "POST /tasks"),
    ]:
        assert hop in hops, (hop, sorted(hops))
    ids = {s["id"] for s in spans}
    assert [s for s in spans if "parentId" not in s] == [
        s for s in spans if s["name"] == "POST /api/tasks/{task_id}/complete"
    ]
    assert all(s["parentId"] in ids for s in spans if "parentId" in s)

    # The request ids of the scenario are in every service they touched.
    complete_line = next(
        line for line in out.splitlines() if "complete (→ next occurrence)" in line
    )
    for service in ("frontend", "backend", "recurring-task-service"):
        assert service in complete_line, complete_line
    create_line = next(line for line in out.splitlines() if "create (→ reminder)" in line)
    for service in ("frontend", "backend", "notification-service"):
        assert service in create_line, create_line
    request_id = complete_line.split()[4].rstrip(":")
    for service in ("frontend", "backend", "recurring-task-service"):
        lines = [
            json.loads(line)
            for line in (data / "logs" / f"{service}.log").read_text().splitlines()
            if line.startswith("{")
        ]
        assert any(line["request_id"] == request_id for line in lines), service

    # Readiness and the RED numbers.
    for service in ("frontend", "backend", "recurring-task-service", "notification-service"):
        assert re.search(rf"^  {re.escape(service)} +200 UP", out, re.M), out
    assert "recurring_next_occurrences_total{outcome=created} 1" in out
    assert "reminder_emails_total{outcome=sent} 1" in out
    assert out.rstrip().endswith("Stopped: every process exited, spans flushed.")


def children_of(pid: int) -> list[str]:
    """The pids of `pid`'s child processes (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid):
            found.append(stat.parent.name)
    return found


@pytest.mark.parametrize(
    ("signum", "options", "processes"),
    [
        # Prometheus, Alertmanager and the alert sink besides the system's six.
        pytest.param(signal.SIGINT, [], 9, id="ctrl-c"),
        pytest.param(signal.SIGTERM, ["--no-monitoring"], 6, id="kill"),
        pytest.param(signal.SIGHUP, ["--no-monitoring"], 6, id="terminal-closed"),
    ],
)
def test_a_stop_signal_stops_every_process_and_flushes_spans(
    tmp_path: Path, signum: signal.Signals, options: list[str], processes: int
) -> None:
    data = tmp_path / "data"
    base = free_layout(data, monitoring=not options).services["frontend"].port
    process = subprocess.Popen(
        [
            sys.executable, "-m", "reference_app", "--data", str(data),
            "--base-port", str(base), "--no-scenario", *options,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if line.startswith("Running.") or not line:
            break
    assert lines[-1].startswith("Running."), "".join(lines)
    children = children_of(process.pid)
    assert len(children) == processes
    httpx.get(f"http://127.0.0.1:{base + 1}/health/ready", timeout=5)  # a span-free probe
    httpx.get(f"http://127.0.0.1:{base + 1}/tasks", timeout=5)  # a 401, traced

    process.send_signal(signum)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert "Stopping" in rest
    assert rest.rstrip().endswith("Stopped: every process exited, spans flushed.")
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)
    spans = load_spans(data / "spans.jsonl")
    assert any(s["name"] == "GET /tasks" for s in spans)  # flushed at shutdown
