"""Requests per second of each variant under a real uvicorn, loaded by wrk on loopback.

Every variant runs in its own uvicorn process (one worker, no access log, log
level warning) on a free loopback port; all are started up front, and wrk
loads one at a time, round-robin, the starting variant rotating per round.
Ratios ours/peer are paired within a round before taking the median.

    python -m benchmarks.uvicorn_wrk --rounds 5 --duration 5
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from benchmarks.inprocess import VARIANTS

ROOT = Path(__file__).resolve().parent.parent
PATH = "/tasks/42"
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def label(name: str, ratio: float | None) -> str:
    return name if ratio is None else f"{name} (sampling {ratio:g})"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def configurations() -> list[tuple[str, str]]:
    """(--http, --loop) pairs to run: pure Python always, uvicorn[standard]'s when installed."""
    configs = [("h11", "asyncio")]
    if available("httptools") and available("uvloop"):
        configs.append(("httptools", "uvloop"))
    return configs


@dataclass
class Server:
    label: str
    name: str
    sample_ratio: float | None
    port: int
    process: subprocess.Popen[bytes]
    stderr: IO[bytes]
    rps: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def stderr_tail(self, lines: int = 20) -> str:
        self.stderr.seek(0)
        return b"".join(self.stderr.readlines()[-lines:]).decode(errors="replace")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def wait_ready(self, timeout: float = 90.0) -> None:
        # Several processes import FastAPI at once: on a loaded 2-core machine that takes a while.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.label}: uvicorn exited with {self.process.returncode}:\n"
                    + self.stderr_tail()
                )
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    conn.request("GET", PATH)
                    response = conn.getresponse()
                    response.read()
                    if response.status == 200:
                        return
                finally:
                    conn.close()
            time.sleep(0.1)
        raise RuntimeError(f"{self.label}: uvicorn not ready after {timeout} s")


ServerT = TypeVar("ServerT", bound="Server")


def start(
    name: str,
    ratio: float | None,
    http: str,
    loop: str,
    *,
    app: str = "benchmarks.apps:create_app",
    env: Mapping[str, str] | None = None,
    kind: type[ServerT],
) -> ServerT:
    """Start uvicorn serving `app` (a factory) as variant `name` at sampling `ratio`."""
    port = free_port()
    environment = dict(os.environ, BENCH_VARIANT=name, PYTHONPATH=str(ROOT), **(env or {}))
    environment.pop("BENCH_SAMPLE_RATIO", None)
    if ratio is not None:
        environment["BENCH_SAMPLE_RATIO"] = str(ratio)
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
        "--http",
        http,
        "--loop",
        loop,
    ]
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by servers()
    process = subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=stderr
    )
    return kind(label(name, ratio), name, ratio, port, process, stderr)


def wrk(url: str, duration: float, connections: int, threads: int) -> tuple[float, str]:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "-H",
        "User-Agent: wrk/4.1.0",
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = _RPS.search(out)
    if match is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    problems = []
    if non_2xx := _NON_2XX.search(out):
        problems.append(f"{non_2xx[1]} non-2xx responses")
    if (errors := _SOCKET_ERRORS.search(out)) and any(int(g) for g in errors.groups()):
        problems.append(errors[0])
    return float(match[1]), "; ".join(problems)


@contextlib.contextmanager
def servers(launch: Callable[[str, float | None], ServerT]) -> Iterator[list[ServerT]]:
    """Every variant's server started by `launch(name, ratio)`, ready, and stopped after."""
    started: list[ServerT] = []
    try:
        for name, ratio in VARIANTS:
            started.append(launch(name, ratio))
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            if server.process.poll() is None:
                server.process.terminate()
        for server in started:
            try:
                server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
            server.stderr.close()


@dataclass
class WrkResult:
    rounds: int
    duration: float
    connections: int
    threads: int
    http: str
    loop: str
    servers: list[Server]

    def by_label(self) -> dict[str, Server]:
        return {s.label: s for s in self.servers}


def run(
    rounds: int = 5,
    duration: float = 5.0,
    connections: int = 16,
    threads: int = 1,
    warmup: float = 2.0,
    http: str = "h11",
    loop: str = "asyncio",
) -> WrkResult:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")

    def launch(name: str, ratio: float | None) -> Server:
        return start(name, ratio, http, loop, kind=Server)

    with servers(launch) as started:
        for server in started:
            wrk(server.url, warmup, connections, threads)
        count = len(started)
        for round_index in range(rounds):
            for offset in range(count):
                server = started[(round_index + offset) % count]
                rps, problems = wrk(server.url, duration, connections, threads)
                server.rps.append(rps)
                if problems:
                    server.errors.append(problems)
                if server.process.poll() is not None:
                    raise RuntimeError(
                        f"{server.label}: uvicorn died during the run:\n" + server.stderr_tail()
                    )
        return WrkResult(rounds, duration, connections, threads, http, loop, started)


@dataclass
class Row:
    label: str
    name: str
    sample_ratio: float | None
    rps: float
    ratio_to_peer: float | None
    ratio_spread: tuple[float, float] | None
    errors: list[str]


def summarize(result: WrkResult) -> list[Row]:
    by_label = result.by_label()
    rows = []
    for server in result.servers:
        ratio = spread = None
        peer = by_label.get(label("peer", server.sample_ratio))
        if server.name == "ours" and peer is not None:
            ratios = [o / p for o, p in zip(server.rps, peer.rps, strict=True)]
            ratio = statistics.median(ratios)
            spread = (min(ratios), max(ratios))
        rows.append(
            Row(
                server.label,
                server.name,
                server.sample_ratio,
                statistics.median(server.rps),
                ratio,
                spread,
                server.errors,
            )
        )
    return rows


def format_rows(rows: list[Row]) -> str:
    out = ["| variant | req/s | ours/peer [min-max] |", "|---|---:|---:|"]
    for r in rows:
        ratio = "-"
        if r.ratio_to_peer is not None and r.ratio_spread is not None:
            ratio = f"{r.ratio_to_peer:.2f} [{r.ratio_spread[0]:.2f}-{r.ratio_spread[1]:.2f}]"
        out.append(f"| {r.label} | {r.rps:.0f} | {ratio} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--http", help="uvicorn --http (h11, httptools); default: every available")
    parser.add_argument("--loop", help="uvicorn --loop (asyncio, uvloop); default: every available")
    args = parser.parse_args(argv)
    configs = configurations()
    if args.http or args.loop:
        configs = [(args.http or "h11", args.loop or "asyncio")]
    for http_impl, loop_impl in configs:
        result = run(
            args.rounds,
            args.duration,
            args.connections,
            args.threads,
            http=http_impl,
            loop=loop_impl,
        )
        print(f"\nuvicorn --http {result.http} --loop {result.loop}")
        print(format_rows(summarize(result)))
        for server in result.servers:
            if server.errors:
                print(f"{server.label}: {'; '.join(server.errors)}")


if __name__ == "__main__":
    main()
