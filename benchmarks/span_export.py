"""What span export costs: full garbage collections and tail latency under load, CPU per span.

Two measures, each side by side in one run:

1. **Full collections and p99 under uvicorn.** One uvicorn process per variant (bare, peer
   and ours at sampling 1.0 and 0.1; httptools and uvloop when installed), loaded in turn by
   `wrk -t1 -c8 --latency`, round-robin. Each process counts its generation-2 collections
   with a `gc.callbacks` hook (and their pause times), read from a path no variant serves
   before and after each wrk run; wrk's own count of the requests it completed divides them.
   Spans go to a Zipkin sink in its own process that answers every POST with 202.
2. **Exporter CPU per span.** The spans of 512 requests to our app, exported again and again
   to the same sink, by OpenTelemetry's `ZipkinExporter` and by ours: CPU time of the
   exporting thread (`time.thread_time()`), for ours the encoding done in `on_end` (with
   the scrubbing) plus the POST of the joined batch. Interleaved rounds, median per span.

    python -m benchmarks.span_export --rounds 2 --duration 10
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchmarks import apps, uvicorn_wrk
from benchmarks.uvicorn_wrk import PATH, available

ROOT = Path(__file__).resolve().parent.parent
#: The path the counting wrapper answers with the process's collection counts.
GC_PATH = "/__bench/gc"
#: ours p99 / bare p99 at sampling 1.0: at most.
P99_TARGET = 2.0
#: Full collections per 10k requests caused by the SDK (ours minus bare): at most.
GEN2_TARGET = 0.0
#: Exporter CPU per span, µs: at most. OpenTelemetry's ZipkinExporter takes about 15 µs on a
#: quiet machine, so the same target read independently of the machine is a third of its CPU.
CPU_TARGET_US = 5.0
CPU_RATIO_TARGET = 1 / 3
BATCH = 512

_LATENCY = re.compile(r"^\s*99(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_REQUESTS = re.compile(r"(\d+) requests in")
_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


# --- inside the uvicorn process --------------------------------------------------------


class _GCCounter:
    """Counts the generation-2 collections of this process and how long they paused it."""

    def __init__(self) -> None:
        self.full = 0
        self.pause_ns = 0
        self.max_pause_ns = 0
        self._started = 0
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter_ns()
        else:
            pause = time.perf_counter_ns() - self._started
            self.full += 1
            self.pause_ns += pause
            self.max_pause_ns = max(self.max_pause_ns, pause)


def create_app() -> Any:
    """Uvicorn factory: `benchmarks.apps:create_app` wrapped to answer `GC_PATH` with the counts.

    `$BENCH_ZIPKIN`, when set, is where both instrumented stacks send their spans.
    """
    endpoint = os.environ.get("BENCH_ZIPKIN")
    if endpoint:
        # Both stacks read the module's endpoint when they are built.
        apps.UNREACHABLE_ZIPKIN = endpoint
    inner = apps.create_app()
    counter = _GCCounter()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == GC_PATH:
            body = json.dumps(
                {"full": counter.full, "pause_ns": counter.pause_ns, "max_ns": counter.max_pause_ns}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await inner(scope, receive, send)

    return app


# --- the Zipkin sink ---------------------------------------------------------------------


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(202)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def serve_sink() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    print(server.server_address[1], flush=True)
    server.serve_forever()


@contextlib.contextmanager
def sink() -> Iterator[str]:
    """A Zipkin sink in its own process; yields its spans URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.span_export", "--sink"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}/api/v2/spans"
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- measure 1: full collections and p99 under uvicorn -----------------------------------


@dataclass
class Server(uvicorn_wrk.Server):
    requests: list[int] = field(default_factory=list)
    p99_us: list[float] = field(default_factory=list)
    full: list[int] = field(default_factory=list)
    pause_ms: list[float] = field(default_factory=list)
    max_pause_ms: float = 0.0

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def counts(self) -> dict[str, int]:
        status, body = self.get(GC_PATH)
        if status != 200:
            raise RuntimeError(f"{self.label}: {GC_PATH} answered {status}")
        counts: dict[str, int] = json.loads(body)
        return counts


def _servers(
    http: str, loop: str, zipkin: str | None
) -> contextlib.AbstractContextManager[list[Server]]:
    """The variants under uvicorn, serving this module's app (which reports its collections)."""
    env = {"BENCH_ZIPKIN": zipkin} if zipkin else {}

    def launch(name: str, ratio: float | None) -> Server:
        return uvicorn_wrk.start(
            name, ratio, http, loop, app="benchmarks.span_export:create_app", env=env, kind=Server
        )

    return uvicorn_wrk.servers(launch)


def _wrk(url: str, duration: float, connections: int) -> tuple[int, float]:
    """(requests completed, p99 latency in µs) of one wrk run."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    latency, requests = _LATENCY.search(out), _REQUESTS.search(out)
    if latency is None or requests is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return int(requests[1]), float(latency[1]) * _UNITS[latency[2]]


@dataclass
class TailResult:
    http: str
    loop: str
    rounds: int
    duration: float
    connections: int
    zipkin: str
    servers: list[Server]

    def by_label(self) -> dict[str, Server]:
        return {s.label: s for s in self.servers}


def run_tail(
    rounds: int = 2,
    duration: float = 10.0,
    warmup: float = 2.0,
    connections: int = 8,
    *,
    unreachable: bool = False,
) -> TailResult:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    http, loop = (
        ("httptools", "uvloop")
        if available("httptools") and available("uvloop")
        else ("h11", "asyncio")
    )
    with contextlib.ExitStack() as stack:
        zipkin = None if unreachable else stack.enter_context(sink())
        started = stack.enter_context(_servers(http, loop, zipkin))
        for server in started:
            _wrk(f"http://127.0.0.1:{server.port}{PATH}", warmup, connections)
        count = len(started)
        for round_index in range(rounds):
            for offset in range(count):
                server = started[(round_index + offset) % count]
                before = server.counts()
                requests, p99 = _wrk(f"http://127.0.0.1:{server.port}{PATH}", duration, connections)
                after = server.counts()
                server.requests.append(requests)
                server.p99_us.append(p99)
                server.full.append(after["full"] - before["full"])
                server.pause_ms.append((after["pause_ns"] - before["pause_ns"]) / 1e6)
                server.max_pause_ms = max(server.max_pause_ms, after["max_ns"] / 1e6)
        return TailResult(
            http, loop, rounds, duration, connections, zipkin or apps.UNREACHABLE_ZIPKIN, started
        )


@dataclass
class TailRow:
    label: str
    name: str
    sample_ratio: float | None
    requests: int
    full_per_10k: float
    pause_ms_per_10k: float
    max_pause_ms: float
    p99_us: float
    p99_to_bare: float | None
    p99_spread: tuple[float, float] | None


def summarize_tail(result: TailResult) -> list[TailRow]:
    bare = result.by_label()["bare"]
    rows = []
    for s in result.servers:
        requests = sum(s.requests)
        ratios = [mine / base for mine, base in zip(s.p99_us, bare.p99_us, strict=True)]
        rows.append(
            TailRow(
                s.label,
                s.name,
                s.sample_ratio,
                requests,
                sum(s.full) / requests * 10_000,
                sum(s.pause_ms) / requests * 10_000,
                s.max_pause_ms,
                statistics.median(s.p99_us),
                None if s is bare else statistics.median(ratios),
                None if s is bare else (min(ratios), max(ratios)),
            )
        )
    return rows


def format_tail(rows: list[TailRow]) -> str:
    out = [
        "| variant | requests | full collections per 10k requests | their pause ms per 10k requests | longest pause ms | p99 µs (median) | p99 / bare's [min-max] |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = "-"
        if r.p99_to_bare is not None and r.p99_spread is not None:
            ratio = f"{r.p99_to_bare:.2f} [{r.p99_spread[0]:.2f}-{r.p99_spread[1]:.2f}]"
        out.append(
            f"| {r.label} | {r.requests} | {r.full_per_10k:.2f} | {r.pause_ms_per_10k:.1f} | "
            f"{r.max_pause_ms:.1f} | {r.p99_us:.0f} | {ratio} |"
        )
    return "\n".join(out)


# --- measure 2: exporter CPU per span ----------------------------------------------------


def _spans_of_our_app(count: int) -> list[Any]:
    """The server spans of `count` requests to the benchmarked app with our SDK."""
    import asyncio

    from benchmarks.inprocess import Lifespan, call

    bench = apps.ours(1.0, traces_exporter="memory")
    # ours() registers the Observability's flush: the spans are kept by its memory exporter.
    exporter = bench.flushers[0].__self__.span_exporter  # type: ignore[attr-defined]

    async def drive() -> None:
        lifespan = Lifespan(bench.app)
        await lifespan.startup()
        for _ in range(count):
            await call(bench.app, lifespan.state)
        await lifespan.shutdown()

    asyncio.run(drive())
    spans = list(exporter.get_finished_spans())
    bench.close()
    return spans


@dataclass
class CpuResult:
    spans: int
    rounds: int
    otel_us: list[float]
    ours_us: list[float]
    ours_encode_us: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(o / t for o, t in zip(self.ours_us, self.otel_us, strict=True))


def run_cpu(rounds: int = 20, zipkin: str | None = None) -> CpuResult:
    from opentelemetry.exporter.zipkin.json import ZipkinExporter

    from todo_observability._export import ZipkinJsonEncoder, ZipkinJsonExporter
    from todo_observability.redaction import Redactor

    with contextlib.ExitStack() as stack:
        url = zipkin or stack.enter_context(sink())
        spans = _spans_of_our_app(BATCH)
        theirs = ZipkinExporter(endpoint=url, timeout=5)
        ours = ZipkinJsonExporter(url, timeout=5, redactor=Redactor())
        encoder: ZipkinJsonEncoder = ours.encoder
        otel_us: list[float] = []
        ours_us: list[float] = []
        encode_us: list[float] = []
        clock = time.thread_time_ns
        for _ in range(3):  # warm the connections and the caches
            theirs.export(spans)
            ours.write_encoded([encoder.encode(span) for span in spans])
        for round_index in range(rounds):
            for which in (0, 1) if round_index % 2 == 0 else (1, 0):
                gc.collect()
                if which == 0:
                    t0 = clock()
                    theirs.export(spans)
                    otel_us.append((clock() - t0) / len(spans) / 1000)
                else:
                    t0 = clock()
                    encoded = [encoder.encode(span) for span in spans]
                    t1 = clock()
                    ours.write_encoded(encoded)
                    t2 = clock()
                    ours_us.append((t2 - t0) / len(spans) / 1000)
                    encode_us.append((t1 - t0) / len(spans) / 1000)
        theirs.shutdown()
        ours.shutdown()
    return CpuResult(len(spans), rounds, otel_us, ours_us, encode_us)


def format_cpu(result: CpuResult) -> str:
    ours = statistics.median(result.ours_us)
    theirs = statistics.median(result.otel_us)
    encode = statistics.median(result.ours_encode_us)
    ratios = [o / t for o, t in zip(result.ours_us, result.otel_us, strict=True)]
    return "\n".join(
        [
            "| exporter | CPU µs per span (median) | of which encoding | ours / OpenTelemetry's [min-max] |",
            "|---|---:|---:|---:|",
            f"| OpenTelemetry ZipkinExporter (JSON v2) | {theirs:.2f} | - | - |",
            f"| ours (encoded in on_end, scrubbed; joined and posted) | {ours:.2f} | {encode:.2f} | "
            f"{result.ratio:.3f} [{min(ratios):.3f}-{max(ratios):.3f}] |",
        ]
    )


# --- report ------------------------------------------------------------------------------


def report(rounds: int, duration: float, cpu_rounds: int, summary: list[str] | None = None) -> str:
    """Both measures as a Markdown section (rows for the summary appended to `summary`)."""
    tail = run_tail(rounds, duration)
    rows = summarize_tail(tail)
    cpu = run_cpu(cpu_rounds)
    by_label = {r.label: r for r in rows}
    bare = by_label["bare"]
    lines: list[str] = []
    for ratio in (1.0, 0.1):
        ours = by_label[uvicorn_wrk.label("ours", ratio)]
        caused = max(0.0, ours.full_per_10k - bare.full_per_10k)
        met = caused <= GEN2_TARGET
        lines.append(
            f"| full collections per 10k requests caused by the SDK (ours minus bare), sampling "
            f"{ratio:g} | {caused:.2f} | ≤ {GEN2_TARGET:g} | {'yes' if met else '**no**'} |"
        )
    ours1 = by_label[uvicorn_wrk.label("ours", 1.0)]
    if ours1.p99_to_bare is not None:
        met = ours1.p99_to_bare <= P99_TARGET
        lines.append(
            f"| uvicorn ({tail.http}, {tail.loop}) p99 ours/bare, sampling 1, wrk -c{tail.connections} "
            f"| {ours1.p99_to_bare:.2f} | ≤ {P99_TARGET:g} | {'yes' if met else '**no**'} |"
        )
    ours_cpu = statistics.median(cpu.ours_us)
    lines.append(
        f"| exporter CPU per span, ours (OpenTelemetry's ZipkinExporter: "
        f"{statistics.median(cpu.otel_us):.1f} µs on the same spans) | {ours_cpu:.1f} µs "
        f"| ≤ {CPU_TARGET_US:g} µs | {'yes' if ours_cpu <= CPU_TARGET_US else '**no**'} |"
    )
    lines.append(
        f"| exporter CPU per span, ours / OpenTelemetry's ZipkinExporter | {cpu.ratio:.3f} "
        f"| ≤ {CPU_RATIO_TARGET:.3f} (5 of its 15 µs) | {'yes' if cpu.ratio <= CPU_RATIO_TARGET else '**no**'} |"
    )
    if summary is not None:
        summary.extend(lines)
    out = [
        "## Span export: full collections, p99 and exporter CPU",
        "",
        f"Under uvicorn --http {tail.http} --loop {tail.loop} (1 worker), `wrk -t1 "
        f"-c{tail.connections} -d{tail.duration:g}s --latency` per variant, {tail.rounds} round(s), "
        "round-robin, after a 2 s warm-up each; spans posted to a Zipkin sink in its own process "
        "(202 to every POST). Generation-2 collections counted in each server process with a "
        "`gc.callbacks` hook, per 10k requests wrk completed; p99 ratios paired within a round "
        "(median, min-max).",
        "",
        format_tail(rows),
        "",
        f"Exporter CPU per span: the server spans of {cpu.spans} requests to our app, exported "
        f"{cpu.rounds} times by each exporter to the same sink, interleaved; `time.thread_time()` "
        "of the exporting thread, per span (median over rounds).",
        "",
        format_cpu(cpu),
        "",
        "| measure | measured | target | met? |",
        "|---|---:|---|---|",
        *lines,
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--cpu-rounds", type=int, default=20)
    parser.add_argument("--cpu-only", action="store_true", help="only the exporter CPU measure")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink:
        serve_sink()
        return
    if args.cpu_only:
        print(format_cpu(run_cpu(args.cpu_rounds)))
        return
    print(report(args.rounds, args.duration, args.cpu_rounds))


if __name__ == "__main__":
    main()
