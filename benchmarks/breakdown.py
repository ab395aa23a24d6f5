"""Where our per-request overhead goes: our SDK with parts switched off, in process.

Interleaved like `benchmarks.inprocess`, against the bare app and against a
do-nothing pure-ASGI middleware (the floor of any middleware: one more layer
and a send wrapper). Differences between rows are the cost of the part
switched off. Three rows measure what OpenTelemetry's SDK costs on its own, in
the same place: a middleware that only starts, attaches, fills (the ten
attributes ours sets) and ends an SDK server span, through the provider and span
processor `configure()` builds, at 1.0, 0.1 and never sampled; any SDK-based
server span pays it. ``--no-gc`` disables the garbage collector within slices
(it runs between them), which shows how much of a variant's cost is collection.

    python -m benchmarks.breakdown [--rounds 30] [--requests 600] [--no-gc]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from benchmarks.apps import BenchApp, Message, Receive, Scope, Send, bare, ours
from benchmarks.inprocess import SETTLE, _measure

#: label -> (sample ratio, configure() overrides)
OURS: dict[str, tuple[float, dict[str, Any]]] = {
    "ours 1.0": (1.0, {}),
    "ours 1.0, no access log": (1.0, {"access_log": False}),
    "ours 1.0, no exporter": (1.0, {"traces_exporter": "none"}),
    "ours 1.0, no exporter, no access log": (1.0, {"traces_exporter": "none", "access_log": False}),
    "ours 0.1": (0.1, {}),
    "ours 0.1, no access log": (0.1, {"access_log": False}),
    "ours 0.0": (0.0, {}),
    "ours 0.0, no access log": (0.0, {"access_log": False}),
}


class Passthrough:
    """A middleware that does nothing but wrap `send`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_wrapper(message: Message) -> None:
            await send(message)

        await self.app(scope, receive, send_wrapper)


class SdkSpanOnly:
    """A middleware doing only what OpenTelemetry's SDK needs for a server span."""

    def __init__(self, app: Any, tracer: Any) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        parent = otel_context.get_current()
        span = self.tracer.start_span(scope["method"], context=parent, kind=SpanKind.SERVER)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if span.is_recording():
                route = getattr(scope.get("route"), "path", scope["path"])
                span.update_name(f"{scope['method']} {route}")
                span.set_attributes(
                    {
                        "http.request.method": scope["method"],
                        "url.path": scope["path"],
                        "url.scheme": scope["scheme"],
                        "network.protocol.version": scope["http_version"],
                        "http.response.status_code": status,
                        "http.route": route,
                        "client.address": scope["client"][0],
                        "server.address": scope["server"][0],
                        "server.port": scope["server"][1],
                        "user_agent.original": "wrk/4.1.0",
                    }
                )
            span.end()
            otel_context.detach(token)


def sdk_span_only(ratio: float) -> BenchApp:
    """The bare app under `SdkSpanOnly`, with the tracer and exporter `configure()` builds."""
    helper = ours(ratio, access_log=False)  # for its provider, processor and exporter only
    bench = bare()
    app = bench.app
    build = app.build_middleware_stack
    tracer = helper.observability.tracer
    app.build_middleware_stack = lambda: SdkSpanOnly(build(), tracer)
    bench.name = f"bare + OpenTelemetry SDK server span only, {ratio:g}"
    bench.flushers = helper.flushers
    bench.closers = helper.closers
    bench.span_queues = helper.span_queues
    return bench


def passthrough() -> BenchApp:
    bench = bare()
    app = bench.app
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: Passthrough(build())
    return BenchApp("bare + pass-through middleware", app)


def variants() -> list[BenchApp]:
    benches = [bare(), passthrough(), *(sdk_span_only(ratio) for ratio in (1.0, 0.1, 0.0))]
    for label, (ratio, overrides) in OURS.items():
        bench = ours(ratio, **overrides)
        bench.name = label
        bench.sample_ratio = None  # the label says it
        benches.append(bench)
    return benches


def run(rounds: int, requests: int, warmup: int, collect: bool, settle: float = SETTLE) -> str:
    benches = variants()
    try:
        times, failures = asyncio.run(_measure(benches, rounds, requests, warmup, collect, settle))
    finally:
        for bench in benches:
            bench.close()
    bare_total = times[0].total_us
    out = [
        f"{rounds} rounds x {requests} requests, gc {'on' if collect else 'off within slices'}, "
        f"{settle:g} s settle between slices, non-200: {failures}",
        "",
        "| variant | per request µs | of which flush µs | over bare µs |",
        "|---|---:|---:|---:|",
    ]
    for t in times:
        total = statistics.median(t.total_us)
        flush = statistics.median(t.flush_us)
        over = statistics.median([v - b for v, b in zip(t.total_us, bare_total, strict=True)])
        out.append(f"| {t.label} | {total:.1f} | {flush:.1f} | {over:.1f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--no-gc", action="store_true")
    parser.add_argument("--settle", type=float, default=SETTLE, help="seconds between slices")
    args = parser.parse_args(argv)
    print(run(args.rounds, args.requests, args.warmup, not args.no_gc, args.settle))


if __name__ == "__main__":
    main()
