"""Probe storms: how often the dependency is called, and how many probes a second are served.

1. In process: 200 concurrent readiness requests against one 50 ms check with a 5 s TTL,
   then storms repeated over several TTL windows: the dependency must be called once per TTL.
2. Under uvicorn with wrk: readiness requests per second with our cached engine, side by side
   with fastapi-health running the same check (which runs it on every request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx

from benchmarks.health_apps import CHECK_SECONDS, TTL_SECONDS, Dependency, ours
from benchmarks.uvicorn_wrk import free_port, wrk

ROOT = Path(__file__).resolve().parents[1]


async def storm(concurrency: int) -> tuple[int, float, set[int]]:
    dependency = Dependency()
    app = ours(dependency)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://storm") as client:
        start = time.perf_counter()
        responses = await asyncio.gather(*(client.get("/health/ready") for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    app.state.observability.shutdown()
    return dependency.calls, elapsed, {r.status_code for r in responses}


async def windows(ttl: float, seconds: float, concurrency: int) -> tuple[int, int, int]:
    """Storms of `concurrency` probes back to back for `seconds`: (calls, TTL windows, probes)."""
    dependency = Dependency()
    app = ours(dependency, ttl=ttl)
    probes = 0
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://storm"
    ) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.gather(*(client.get("/health/ready") for _ in range(concurrency)))
            probes += concurrency
    app.state.observability.shutdown()
    return dependency.calls, int(seconds // ttl) + 1, probes


def serve(variant: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(os.environ, HEALTH_VARIANT=variant, PYTHONPATH=str(ROOT))
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "benchmarks.health_apps:create_app",
        "--factory",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/calls", timeout=1).read()
            return process, port
        except OSError:  # noqa: PERF203 - polling until the server answers
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{variant}: uvicorn did not start")


def calls(port: int) -> int:
    value: int = json.loads(
        urllib.request.urlopen(f"http://127.0.0.1:{port}/calls", timeout=5).read()
    )
    return value


def report(duration: float = 5.0, rounds: int = 2) -> str:
    """The probe-storm section, as Markdown."""
    lines = ["## Probe storms", ""]

    called, elapsed, statuses = asyncio.run(storm(200))
    lines += [
        f"200 concurrent `GET /health/ready`, one {CHECK_SECONDS * 1000:.0f} ms check, TTL {TTL_SECONDS:g} s: "
        f"the dependency was called **{called}** time(s); all answered {sorted(statuses)} in {elapsed * 1000:.0f} ms.",
        "",
    ]
    called, windows_seen, probes = asyncio.run(windows(ttl=0.5, seconds=3.0, concurrency=50))
    lines += [
        f"Storms of 50 concurrent probes back to back for 3 s, TTL 0.5 s: {probes} probes, "
        f"{called} dependency calls over {windows_seen} TTL windows (at most one per window).",
        "",
        f"Under uvicorn (h11, one worker), `wrk -t1 -c16 -d{duration:g}s` on `/health/ready`, "
        f"{rounds} round(s), interleaved:",
        "",
        "| variant | req/s (median) | dependency calls per 1000 probes |",
        "|---|---:|---:|",
    ]
    results: dict[str, list[tuple[float, float]]] = {"ours": [], "fastapi-health": []}
    servers = {variant: serve(variant) for variant in results}
    try:
        for _ in range(rounds):
            for variant, (_, port) in servers.items():
                before = calls(port)
                rps, _problems = wrk(f"http://127.0.0.1:{port}/health/ready", duration, 16, 1)
                made = calls(port) - before
                results[variant].append((rps, 1000 * made / max(1.0, rps * duration)))
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)
    medians = {}
    for variant, rows in results.items():
        rps = sorted(r for r, _ in rows)[len(rows) // 2]
        per_thousand = sorted(c for _, c in rows)[len(rows) // 2]
        medians[variant] = rps
        lines.append(f"| {variant} | {rps:,.0f} | {per_thousand:.2f} |")
    lines += [
        "",
        f"Ratio ours / fastapi-health: **{medians['ours'] / medians['fastapi-health']:.1f}x**.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds of wrk per variant and round"
    )
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    print(report(args.duration, args.rounds))


if __name__ == "__main__":
    main()
