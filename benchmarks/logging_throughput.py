"""JSON log lines per second: our JsonFormatter against python-json-logger's plain one.

Both produce the same fields: timestamp, level, service_name, logger, message,
request_id, user_id, trace_id, span_id and context. Ours reads the correlation
ids from the request context and the current span, as in production; the
plain formatter gets them as record attributes, as a logging.Filter or
``extra=`` would put them there, set before the clock starts (which favours
the plain formatter). Each round formats a fresh list of records with every
formatter, round-robin; ratios are paired within a round.

    python -m benchmarks.logging_throughput [--no-orjson] [--json]

``--no-orjson`` hides orjson before our package is imported, so that ours
falls back to the standard library's json, as it does where orjson is not installed.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REQUEST_ID = "0af7651916cd43dd8448eb211c80319c"
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
MESSAGE = "task %s completed"


@dataclass
class FormatterTimes:
    name: str
    backend: str
    lines_per_second: list[float] = field(default_factory=list)


@dataclass
class LoggingResult:
    rounds: int
    lines: int
    orjson_available: bool
    times: list[FormatterTimes]
    samples: dict[str, str]

    def median(self, name: str) -> float:
        for t in self.times:
            if t.name == name:
                return statistics.median(t.lines_per_second)
        raise KeyError(name)

    def ratio(self, name: str, to: str) -> tuple[float, float, float]:
        """Median, min and max of the per-round ratio of lines/s of `name` to `to`."""
        a = next(t for t in self.times if t.name == name).lines_per_second
        b = next(t for t in self.times if t.name == to).lines_per_second
        ratios = [x / y for x, y in zip(a, b, strict=True)]
        return statistics.median(ratios), min(ratios), max(ratios)


def _backend(formatter: logging.Formatter) -> str:
    names = {cls.__module__ + "." + cls.__name__ for cls in type(formatter).__mro__}
    if "pythonjsonlogger.orjson.OrjsonFormatter" in names:
        return "orjson"
    serializer = getattr(formatter, "json_serializer", None)
    module = getattr(serializer, "__module__", "?")
    return f"{module}.{getattr(serializer, '__name__', '?')}"


def _records(
    count: int, correlated: bool, now: Callable[[], float] = time.time
) -> list[logging.LogRecord]:
    records = []
    for i in range(count):
        record = logging.LogRecord(
            "app.tasks", logging.INFO, __file__, 42, MESSAGE, (i,), None, func="complete"
        )
        if correlated:
            # What a correlation filter or extra= adds for the plain formatter.
            record.request_id = REQUEST_ID
            record.user_id = None
            record.trace_id = f"{TRACE_ID:032x}"
            record.span_id = f"{SPAN_ID:016x}"
            record.context = {"task_id": i}
        else:
            record.task_id = i  # extra={"task_id": i}, which ours puts under context
        records.append(record)
    return records


def formatters() -> dict[str, tuple[logging.Formatter, bool]]:
    """name -> (formatter, whether its records carry the correlation fields)."""
    from pythonjsonlogger.json import JsonFormatter as PlainJsonFormatter

    from todo_observability.logs import JsonFormatter

    common: dict[str, Any] = {
        "style": "{",
        "rename_fields": {"levelname": "level", "name": "logger"},
        "static_fields": {"service_name": "bench"},
        "timestamp": True,
    }
    fmt = "{levelname}{name}{message}{request_id}{user_id}{trace_id}{span_id}{context}"
    result: dict[str, tuple[logging.Formatter, bool]] = {
        "ours": (JsonFormatter("bench"), False),
        "python-json-logger JsonFormatter": (PlainJsonFormatter(fmt, **common), True),
    }
    try:
        from pythonjsonlogger.orjson import OrjsonFormatter
    except ImportError:
        pass
    else:
        result["python-json-logger OrjsonFormatter"] = (OrjsonFormatter(fmt, **common), True)
    return result


def run(rounds: int = 10, lines: int = 20000) -> LoggingResult:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from todo_observability.context import RequestContext, _enter_context, _exit_context

    chosen = formatters()
    times = [FormatterTimes(name, _backend(f)) for name, (f, _) in chosen.items()]
    span = NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, False, TraceFlags(TraceFlags.SAMPLED)))
    token = _enter_context(RequestContext(REQUEST_ID))
    otel_token = otel_context.attach(trace.set_span_in_context(span))
    try:
        samples = {
            name: f.format(_records(1, correlated)[0]) for name, (f, correlated) in chosen.items()
        }
        for f, correlated in chosen.values():  # warm-up
            for record in _records(2000, correlated):
                f.format(record)
        entries = list(chosen.values())
        perf = time.perf_counter_ns
        for round_index in range(rounds):
            for offset in range(len(entries)):
                i = (round_index + offset) % len(entries)
                formatter, correlated = entries[i]
                records = _records(lines, correlated)
                fmt = formatter.format
                gc.collect()
                t0 = perf()
                for record in records:
                    fmt(record)
                elapsed = perf() - t0
                times[i].lines_per_second.append(lines / (elapsed / 1e9))
    finally:
        otel_context.detach(otel_token)
        _exit_context(token)
    return LoggingResult(rounds, lines, "orjson" in sys.modules, times, samples)


def run_without_orjson(rounds: int = 10, lines: int = 20000) -> LoggingResult:
    """`run` in a fresh interpreter where orjson cannot be imported."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.logging_throughput",
        "--no-orjson",
        "--json",
        "--rounds",
        str(rounds),
        "--lines",
        str(lines),
    ]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    data["times"] = [FormatterTimes(**t) for t in data["times"]]
    return LoggingResult(**data)


def format_result(result: LoggingResult, baseline: str = "python-json-logger JsonFormatter") -> str:
    out = ["| formatter | JSON backend | lines/s | ratio to plain JsonFormatter [min-max] |"]
    out.append("|---|---|---:|---:|")
    for t in result.times:
        ratio = "-"
        if t.name != baseline:
            median, low, high = result.ratio(t.name, baseline)
            ratio = f"{median:.2f} [{low:.2f}-{high:.2f}]"
        out.append(f"| {t.name} | {t.backend} | {result.median(t.name):,.0f} | {ratio} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--no-orjson", action="store_true", help="hide orjson first")
    parser.add_argument("--json", action="store_true", help="print the raw result as JSON")
    args = parser.parse_args(argv)
    if args.no_orjson:
        sys.modules["orjson"] = None  # type: ignore[assignment]
    result = run(args.rounds, args.lines)
    if args.json:
        print(json.dumps(asdict(result)))
        return
    print(format_result(result))
    for name, line in result.samples.items():
        print(f"\n{name}:\n{line}")


if __name__ == "__main__":
    main()
