"""What parts cost alone and in place: why the floor is not the sum of the parts' own costs.

Three measurements, in process, each interleaved over rounds (medians of paired
differences):

1. Our middleware (sampling 0, no access line) around three apps: a plain ASGI
   app, one that runs about 14 µs of assorted Python, one that calls 400
   different small functions, and the FastAPI app of the other benchmarks. Its
   overhead over each app alone.
2. FastAPI's own time per request, measured by a timing layer right around it,
   alone and inside our middleware (the timing layer sits inside ours, so ours
   is not counted).
3. Our access line and OpenTelemetry's unrecorded server span, timed alone
   (one after the other in a loop) and timed between two FastAPI requests.

    python -m benchmarks.in_place [--rounds 40] [--requests 600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from benchmarks.apps import Message, Receive, Scope, Send, _fastapi, ours
from benchmarks.inprocess import call

_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json")],
}
_BODY: Message = {"type": "http.response.body", "body": b"{}"}


async def plain(scope: Scope, receive: Receive, send: Send) -> None:
    await send(dict(_START))
    await send(dict(_BODY))


def _assorted() -> int:
    total = 0
    for i in range(120):
        total += len(str(i)) + i * 3 % 7
    json.loads(json.dumps({"id": 42, "title": "write", "done": False}))
    return total


async def assorted(scope: Scope, receive: Receive, send: Send) -> None:
    _assorted()
    await plain(scope, receive, send)


def _many_functions(count: int) -> list[Callable[[dict[str, int]], int]]:
    functions: list[Callable[[dict[str, int]], int]] = []
    for i in range(count):
        namespace: dict[str, Any] = {}
        # 400 distinct code objects, made from a constant template.
        exec(
            f"def f(d):\n    x = d.get('a{i % 7}', {i})\n    return len([x, {i}, 'k{i}']) + x\n",
            namespace,
        )
        functions.append(namespace["f"])
    return functions


_FUNCTIONS = _many_functions(400)


async def many(scope: Scope, receive: Receive, send: Send) -> None:
    data = {"a1": 1}
    for function in _FUNCTIONS:
        function(data)
    await plain(scope, receive, send)


class Timed:
    """Adds the time its app takes to `elapsed`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.elapsed = 0.0
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        await self.app(scope, receive, send)
        self.elapsed += time.perf_counter() - start
        self.calls += 1


async def _interleaved(apps: dict[str, Any], rounds: int, requests: int) -> dict[str, list[float]]:
    state: dict[str, Any] = {}
    for app in apps.values():
        for _ in range(1000):
            await call(app, state)
    times: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            start = time.perf_counter()
            for _ in range(requests):
                await call(app, state)
            times[name].append((time.perf_counter() - start) / requests * 1e6)
    return times


def _over(times: dict[str, list[float]], name: str, base: str) -> float:
    return statistics.median(a - b for a, b in zip(times[name], times[base], strict=True))


def run(rounds: int, requests: int) -> str:
    bench = ours(0.0, access_log=False)
    observability = bench.observability

    def wrapped(app: Any) -> Any:
        from todo_observability import ObservabilityMiddleware

        return ObservabilityMiddleware(app, observability=observability)

    inner_alone, inner_wrapped = Timed(_fastapi()), Timed(_fastapi())
    apps = {
        "plain": plain,
        "plain, ours": wrapped(plain),
        "assorted": assorted,
        "assorted, ours": wrapped(assorted),
        "many": many,
        "many, ours": wrapped(many),
        "fastapi": inner_alone,
        "fastapi, ours": wrapped(inner_wrapped),
    }
    times = asyncio.run(_interleaved(apps, rounds, requests))
    out = [
        f"{rounds} rounds x {requests} requests, interleaved; ours at sampling 0, no access line.",
        "",
        "| app | app alone µs | our middleware's overhead µs |",
        "|---|---:|---:|",
    ]
    labels = {
        "plain": "plain ASGI app",
        "assorted": "about 14 µs of assorted Python",
        "many": "400 different small functions",
        "fastapi": "FastAPI (GET /tasks/{task_id})",
    }
    for key, label in labels.items():
        alone = statistics.median(times[key])
        out.append(f"| {label} | {alone:.1f} | {_over(times, f'{key}, ours', key):.1f} |")
    alone_us = inner_alone.elapsed / inner_alone.calls * 1e6
    inside_us = inner_wrapped.elapsed / inner_wrapped.calls * 1e6
    out += [
        "",
        f"FastAPI's own time per request, timed right around it: {alone_us:.1f} µs alone, "
        f"{inside_us:.1f} µs inside our middleware ({inside_us - alone_us:+.1f} µs).",
        "",
        _parts_alone_and_in_place(bench, rounds, requests),
    ]
    bench.close()
    return "\n".join(out)


def _fresh(span_context: trace.SpanContext) -> trace.SpanContext:
    return trace.SpanContext(span_context.trace_id, span_context.span_id, is_remote=False)


def _parts_alone_and_in_place(bench: Any, rounds: int, requests: int) -> str:
    """Our access line and the SDK's unrecorded span: in a tight loop, and between requests."""
    from todo_observability.logs import ACCESS_LOGGER, _emit_trusted

    access = logging.getLogger(ACCESS_LOGGER)
    tracer = bench.observability.tracer
    root = otel_context.get_current()
    span_context = trace.SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=False
    )
    fields = {
        "method": "GET",
        "route": "/tasks/{task_id}",
        "path": "/tasks/42",
        "status": 200,
        "duration_ms": 0.067,
        "client": "127.0.0.1",
        "user_agent": "wrk/4.1.0",
    }

    def access_line() -> None:
        _emit_trusted(
            access,
            logging.INFO,
            "GET /tasks/{task_id} 200",
            dict(fields),
            # A new span context each line, as in requests: its ids are formatted each time.
            ("bench", "b687915a56169439f76bfccb56e548c3", None, _fresh(span_context)),
        )

    def unrecorded_span() -> None:
        span = tracer.start_span("GET", context=root, kind=SpanKind.SERVER)
        token = otel_context.attach(trace.set_span_in_context(span, root))
        span.end()
        otel_context.detach(token)

    fastapi = _fastapi()

    async def measure(part: Callable[[], None]) -> tuple[float, float]:
        state: dict[str, Any] = {}
        alone: list[float] = []
        between: list[float] = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(requests):
                part()
            alone.append((time.perf_counter() - start) / requests * 1e6)
            start = time.perf_counter()
            for _ in range(requests):
                await call(fastapi, state)
            only = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(requests):
                await call(fastapi, state)
                part()
            between.append((time.perf_counter() - start - only) / requests * 1e6)
        return statistics.median(alone), statistics.median(between)

    out = ["| part | alone µs | between two FastAPI requests µs |", "|---|---:|---:|"]
    for label, part in (
        ("our access line (to /dev/null)", access_line),
        ("OpenTelemetry SDK span, not recorded (sampling 0)", unrecorded_span),
    ):
        alone, between = asyncio.run(measure(part))
        out.append(f"| {label} | {alone:.2f} | {between:.2f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--requests", type=int, default=600)
    args = parser.parse_args(argv)
    print(run(args.rounds, args.requests))


if __name__ == "__main__":
    main()
