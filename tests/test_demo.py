"""The README's run command, end to end: two uvicorn services, one request, one trace across both."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_demo_shows_one_request_across_both_services() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = result.stdout
    request_id = re.search(r"X-Request-ID: ([0-9a-f]{32})", out)
    assert request_id is not None, out
    log_lines = [line for line in out.splitlines() if line.startswith('{"timestamp"')]
    services = {re.search(r'"service_name":"(\w+)"', line).group(1) for line in log_lines}  # type: ignore[union-attr]
    assert services == {"tasks", "notify"}
    assert all(f'"request_id":"{request_id.group(1)}"' in line for line in log_lines)
    assert (
        'http_server_requests_total{method="POST",route="/tasks/{task_id}/complete",status_code="401"} 1.0'
        in out
    )
    assert re.search(r"^ +tasks: 200 UP \(notify UP\)$", out, re.M), out
    assert re.search(r"^ *notify: 200 UP \(no checks\)$", out, re.M), out
    tree = out[out.index("trace ") :]
    assert re.search(r"^  tasks +SERVER +POST /tasks/\{task_id\}/complete", tree, re.M)
    assert re.search(r"^    tasks +INTERNAL +tasks\.next_due", tree, re.M)
    assert re.search(r"^    tasks +CLIENT +POST", tree, re.M)
    assert re.search(r"^      notify +SERVER +POST /notifications", tree, re.M)
