"""Running the whole reference system in tests: as the command users run, or started in process."""

from __future__ import annotations

import functools
import io
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reference_app import run

ROOT = Path(__file__).resolve().parents[2]
BASE_PORTS = (10_000, 28_000)
"""Where the system's ports are picked: below Linux's ephemeral range (32768-60999), which
outgoing connections use, so nothing else grabs one while the system starts."""


def run_system(data: Path, *options: str) -> str:
    """Run `python -m reference_app` with `options` on a free block of ports; its output."""
    for _ in range(5):
        base = random.randrange(BASE_PORTS[0], BASE_PORTS[1], 10)
        result = subprocess.run(
            [
                sys.executable, "-m", "reference_app",
                "--data", str(data), "--base-port", str(base), *options,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )  # fmt: skip
        if "ports already in use" not in result.stderr + result.stdout:
            assert result.returncode == 0, result.stdout + result.stderr
            return result.stdout
    raise AssertionError("no free block of ports found")


def free_layout(
    data: Path, zipkin_endpoint: str | None = None, *, monitoring: bool = False
) -> run.Layout:
    """The system's layout on a block of ports nothing listens on now (with `monitoring`,
    Prometheus', Alertmanager's and the alert sink's too)."""
    for _ in range(10):
        layout = run.Layout.at(data, random.randrange(*BASE_PORTS, 10), zipkin_endpoint)
        layout.monitoring = monitoring
        if not any(run._port_taken(port) for port in layout.ports()):
            return layout
    raise AssertionError("no free block of ports found")


@contextmanager
def running_system(
    data: Path, *, database_url: str | None = None, zipkin_endpoint: str | None = None
) -> Iterator[tuple[run.Layout, run.System]]:
    """Start the system with the runner's own start-up, wait until every service is ready."""
    layout = free_layout(data, zipkin_endpoint)
    layout.database_url = database_url
    out = io.StringIO()
    system = run.start_system(layout, out)
    try:
        for service in layout.services.values():
            ready = functools.partial(run.ready, service.url)
            run.wait_until(f"{service.app_id} ready", ready, system, 90, out)
        yield layout, system
    finally:
        system.stop()
