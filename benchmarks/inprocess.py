"""Per-request cost of each variant, driving the ASGI callables directly (no HTTP client).

All variants live in one process and one event loop. Each round runs N
requests per variant, round-robin, the starting variant rotating from round to
round; at the end of its slice a variant's span processors are flushed on the
calling thread, so the spans a variant queued are exported (or dropped) on its
own clock and never on the next variant's. A round's per-request time is
(requests + flush) / N; the reported figure is the median over rounds, and
overheads and ratios are paired within a round before taking medians.

Slices are kept short (600 requests: 1,800 spans for the peer stack at
sampling 1.0, which makes three per request) so that no span queue (2,048
spans) can overflow within a slice: the main thread here never blocks, and its
short writes to the log sink keep the batch processor's worker thread from
winning the GIL, so the worker exports little during a slice. Every span a
variant makes is then exported, or dropped by its exporter's own policy, in
the flush, and charged to that variant. After the flush the harness sleeps
briefly, off the clock, so that a worker thread still waiting for the GIL gets
it then, finds its queue empty and goes back to sleep, instead of contending
for the GIL during the next variant's slice.

    python -m benchmarks.inprocess --rounds 40 --requests 600
    python -m benchmarks.inprocess --profile ours:1.0 --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.apps import BenchApp, Message, build, native_telemetry_enabled

PATH = "/tasks/42"
EXPECTED_BODY = {"id": 42, "title": "write the benchmarks", "done": False}
HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"wrk/4.1.0"),
    (b"accept", b"*/*"),
)
SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
    "scheme": "http",
    "method": "GET",
    "root_path": "",
    "path": PATH,
    "raw_path": PATH.encode(),
    "query_string": b"",
}
_REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}

#: Requests per slice by default (see the module docstring).
SLICE = 600
#: Seconds slept between slices, off the clock (see the module docstring).
SETTLE = 0.02
#: (variant, sample ratio) in the order they are built and reported.
VARIANTS: tuple[tuple[str, float | None], ...] = (
    ("bare", None),
    ("peer", 1.0),
    ("peer", 0.1),
    ("ours", 1.0),
    ("ours", 0.1),
)


def request_scope(state: dict[str, Any]) -> dict[str, Any]:
    # Fresh headers and state per request: middlewares (asgi-correlation-id) mutate them.
    return {**SCOPE, "headers": list(HEADERS), "state": dict(state)}


class Lifespan:
    """Runs an app's ASGI lifespan protocol (startup now, shutdown later)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._events: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    async def _send(self, message: Message) -> None:
        self._events.setdefault(message["type"], asyncio.Event()).set()

    async def _wait(self, *types: str) -> str:
        while True:
            for kind in types:
                event = self._events.get(kind)
                if event is not None and event.is_set():
                    return kind
            if self._task is not None and self._task.done():
                self._task.result()
                return "lifespan.unsupported"
            await asyncio.sleep(0.001)

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self._task = asyncio.ensure_future(self.app(scope, self._queue.get, self._send))
        await self._queue.put({"type": "lifespan.startup"})
        kind = await self._wait("lifespan.startup.complete", "lifespan.startup.failed")
        if kind == "lifespan.startup.failed":
            raise RuntimeError("lifespan startup failed")

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._queue.put({"type": "lifespan.shutdown"})
        await self._wait("lifespan.shutdown.complete", "lifespan.shutdown.failed")
        await self._task


async def call(app: Any, state: dict[str, Any]) -> int:
    """One GET /tasks/42 through `app`; returns the status code."""
    status = 0
    received = False

    async def receive() -> Message:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return _REQUEST

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(request_scope(state), receive, send)
    return status


async def call_recorded(app: Any, state: dict[str, Any]) -> list[Message]:
    """One request, returning every message the app sent (for checks)."""
    messages: list[Message] = []
    received = False

    async def receive() -> Message:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return _REQUEST

    async def send(message: Message) -> None:
        messages.append(message)

    await app(request_scope(state), receive, send)
    return messages


def check_response(bench: BenchApp, messages: list[Message]) -> None:
    start = messages[0]
    body = b"".join(m.get("body", b"") for m in messages[1:])
    if start["status"] != 200 or json.loads(body) != EXPECTED_BODY:
        raise RuntimeError(f"{bench.label}: unexpected response {start['status']} {body!r}")
    headers = {name.lower() for name, _ in start["headers"]}
    if bench.name.startswith(("ours", "peer")) and b"x-request-id" not in headers:
        raise RuntimeError(f"{bench.label}: response lacks X-Request-ID")


@dataclass
class VariantTimes:
    label: str
    name: str
    sample_ratio: float | None
    request_us: list[float] = field(default_factory=list)
    flush_us: list[float] = field(default_factory=list)
    #: How full its fullest span queue was at the end of each slice, before the flush.
    queue_fill: list[float] = field(default_factory=list)

    @property
    def total_us(self) -> list[float]:
        return [r + f for r, f in zip(self.request_us, self.flush_us, strict=True)]


@dataclass
class InProcessResult:
    rounds: int
    requests: int
    times: list[VariantTimes]
    native_telemetry: dict[str, bool]
    failures: int

    def by_label(self) -> dict[str, VariantTimes]:
        return {t.label: t for t in self.times}

    def max_queue_fill(self) -> float:
        return max((max(t.queue_fill, default=0.0) for t in self.times), default=0.0)


async def _measure(
    benches: list[BenchApp],
    rounds: int,
    requests: int,
    warmup: int,
    collect: bool = True,
    settle: float = SETTLE,
) -> tuple[list[VariantTimes], int]:
    lifespans = [Lifespan(b.app) for b in benches]
    for lifespan in lifespans:
        await lifespan.startup()
    try:
        for bench, lifespan in zip(benches, lifespans, strict=True):
            check_response(bench, await call_recorded(bench.app, lifespan.state))
            for _ in range(warmup):
                await call(bench.app, lifespan.state)
            bench.flush()
        times = [VariantTimes(b.label, b.name, b.sample_ratio) for b in benches]
        failures = 0
        count = len(benches)
        perf = time.perf_counter_ns
        for round_index in range(rounds):
            for offset in range(count):
                i = (round_index + offset) % count
                bench, state, app = benches[i], lifespans[i].state, benches[i].app
                gc.collect()
                if not collect:
                    gc.disable()
                t0 = perf()
                for _ in range(requests):
                    if await call(app, state) != 200:
                        failures += 1
                t1 = perf()
                times[i].queue_fill.append(bench.fullest_queue())
                bench.flush()
                t2 = perf()
                gc.enable()
                times[i].request_us.append((t1 - t0) / requests / 1000)
                times[i].flush_us.append((t2 - t1) / requests / 1000)
                # Let worker threads still waiting for the GIL run now (their
                # queue is empty) rather than during the next variant's slice.
                time.sleep(settle)
        return times, failures
    finally:
        for lifespan in lifespans:
            await lifespan.shutdown()


def build_variants(
    variants: tuple[tuple[str, float | None], ...] = VARIANTS,
) -> list[BenchApp]:
    return [build(name, ratio) for name, ratio in variants]


def run(
    rounds: int = 40,
    requests: int = SLICE,
    warmup: int = 500,
    variants: tuple[tuple[str, float | None], ...] = VARIANTS,
) -> InProcessResult:
    benches = build_variants(variants)
    try:
        native = {b.label: native_telemetry_enabled(b.app) for b in benches}
        times, failures = asyncio.run(_measure(benches, rounds, requests, warmup))
    finally:
        for bench in benches:
            bench.close()
    return InProcessResult(rounds, requests, times, native, failures)


@dataclass
class Row:
    label: str
    name: str
    sample_ratio: float | None
    per_request_us: float
    request_only_us: float
    overhead_us: float | None
    ratio_to_peer: float | None
    ratio_spread: tuple[float, float] | None


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def summarize(result: InProcessResult) -> list[Row]:
    """Median per-request times; overheads and ratios paired within rounds."""
    by_label = result.by_label()
    bare = by_label["bare"].total_us
    rows: list[Row] = []
    for t in result.times:
        total = t.total_us
        overhead = ratio = None
        spread = None
        if t.name != "bare":
            paired = [v - b for v, b in zip(total, bare, strict=True)]
            overhead = statistics.median(paired)
            peer = by_label.get(f"peer (sampling {t.sample_ratio:g})")
            if t.name == "ours" and peer is not None:
                peer_paired = [v - b for v, b in zip(peer.total_us, bare, strict=True)]
                ratios = [o / p for o, p in zip(paired, peer_paired, strict=True) if p > 0]
                if ratios:
                    ratio = statistics.median(ratios)
                    spread = _quartiles(ratios)
        rows.append(
            Row(
                t.label,
                t.name,
                t.sample_ratio,
                statistics.median(total),
                statistics.median(t.request_us),
                overhead,
                ratio,
                spread,
            )
        )
    return rows


def check_log_lines(requests: int = 2) -> dict[str, list[dict[str, Any]]]:
    """The access lines each stack writes for a few requests, parsed (sinks are StringIO)."""
    sinks = {"peer": io.StringIO(), "ours": io.StringIO()}
    # Peer first: ours then owns the root logger, which also takes the peer
    # exporter's error lines, until the peer has shut down.
    benches = {name: build(name, 1.0, sink) for name, sink in sinks.items()}

    async def drive() -> None:
        for bench in benches.values():
            lifespan = Lifespan(bench.app)
            await lifespan.startup()
            for _ in range(requests):
                await call(bench.app, lifespan.state)
            await lifespan.shutdown()

    texts: dict[str, str] = {}
    try:
        asyncio.run(drive())
        texts = {name: sink.getvalue() for name, sink in sinks.items()}
    finally:
        for bench in benches.values():
            bench.close()
    lines: dict[str, list[dict[str, Any]]] = {}
    for name, text in texts.items():
        parsed = [json.loads(line) for line in text.splitlines() if line.strip()]
        lines[name] = [p for p in parsed if str(p.get("logger", "")).endswith(".access")]
    return lines


def profile(spec: str, requests: int, sort: str, limit: int) -> None:
    import cProfile
    import pstats

    name, _, ratio = spec.partition(":")
    bench = build(name, float(ratio) if ratio else None)

    async def loop() -> None:
        lifespan = Lifespan(bench.app)
        await lifespan.startup()
        for _ in range(500):
            await call(bench.app, lifespan.state)
        bench.flush()
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(requests):
            await call(bench.app, lifespan.state)
            if i % SLICE == SLICE - 1:  # as in the measurement: no span queue overflows
                bench.flush()
        bench.flush()
        profiler.disable()
        await lifespan.shutdown()
        stats = pstats.Stats(profiler, stream=sys.stdout)
        print(f"# cProfile of {bench.label}, {requests} requests (per-request = time / {requests})")
        stats.sort_stats(sort).print_stats(limit)

    try:
        asyncio.run(loop())
    finally:
        bench.close()


def format_rows(rows: list[Row]) -> str:
    out = ["| variant | per request µs | request path µs | overhead µs | ratio to peer [IQR] |"]
    out.append("|---|---:|---:|---:|---:|")
    for r in rows:
        overhead = f"{r.overhead_us:.1f}" if r.overhead_us is not None else "-"
        ratio = "-"
        if r.ratio_to_peer is not None and r.ratio_spread is not None:
            ratio = f"{r.ratio_to_peer:.3f} [{r.ratio_spread[0]:.3f}-{r.ratio_spread[1]:.3f}]"
        out.append(
            f"| {r.label} | {r.per_request_us:.1f} | {r.request_only_us:.1f} | {overhead} | {ratio} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--requests", type=int, default=SLICE)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--profile", metavar="VARIANT[:RATIO]", help="cProfile one variant")
    parser.add_argument("--sort", default="tottime", help="pstats sort key for --profile")
    parser.add_argument("--limit", type=int, default=40, help="rows printed by --profile")
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.profile, args.requests, args.sort, args.limit)
        return
    result = run(args.rounds, args.requests, args.warmup)
    print(format_rows(summarize(result)))
    print(f"\nnative FastAPI telemetry enabled: {result.native_telemetry}")
    print(f"fullest span queue at a slice's end: {result.max_queue_fill():.0%}")
    print(f"non-200 responses: {result.failures}")


if __name__ == "__main__":
    main()
