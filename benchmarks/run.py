"""Run every benchmark and print the results as Markdown.

    python -m benchmarks.run            # full run, about 5 minutes on 2 cores
    python -m benchmarks.run --quick    # smoke run, under 2 minutes

Absolute times depend on the machine and its neighbours; compare the ratios,
which are measured side by side in one interleaved run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass

from benchmarks import (
    health_storm,
    import_time,
    inprocess,
    logging_throughput,
    messaging,
    scrape_lag,
    span_export,
    uvicorn_wrk,
)
from benchmarks.apps import NO_NATIVE_TELEMETRY

#: ours overhead / peer overhead, in process, by sampling ratio: at most.
OVERHEAD_TARGETS = {1.0: 0.12, 0.1: 0.10}
#: ours req/s / peer req/s under uvicorn with httptools and uvloop (what production runs), by
#: sampling ratio: at least. uvicorn's pure-Python server is measured too, as context: its own
#: cost leaves a ceiling (bare/peer) below these.
RPS_TARGETS = {1.0: 3.5, 0.1: 3.0}
RPS_TARGET_SERVER = ("httptools", "uvloop")
#: ours lines/s / python-json-logger's fastest formatter's lines/s (OrjsonFormatter when
#: orjson is installed, JsonFormatter when not): at least.
LOG_TARGET = 1.2
PLAIN = "python-json-logger JsonFormatter"
ORJSON = "python-json-logger OrjsonFormatter"
#: ours overhead / hand-written overhead per delivered Dapr message: at most.
MESSAGE_TARGET = messaging.TARGET

PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "opentelemetry-sdk",
    "opentelemetry-exporter-zipkin-json",
    "opentelemetry-instrumentation-fastapi",
    "prometheus-client",
    "prometheus-fastapi-instrumentator",
    "asgi-correlation-id",
    "python-json-logger",
    "orjson",
)


@dataclass(frozen=True)
class Sizes:
    rounds: int
    requests: int
    warmup: int
    wrk_rounds: int
    wrk_duration: float
    wrk_warmup: float
    log_rounds: int
    log_lines: int
    import_runs: int
    message_rounds: int
    #: span_export: wrk rounds, seconds per wrk run, exporter CPU rounds.
    export_rounds: int = 2
    export_duration: float = 10.0
    export_cpu_rounds: int = 20
    scrapes: int = 50


FULL = Sizes(40, 600, 1000, 4, 5.0, 2.0, 30, 5000, 7, 40)
QUICK = Sizes(8, 300, 300, 1, 2.0, 1.0, 5, 3000, 3, 8, 1, 3.0, 6, 10)


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _revision() -> str:
    """The commit benchmarked, and whether the package had uncommitted changes."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "todo_observability")
    return f"{commit}{' + uncommitted changes in todo_observability/' if dirty else ''}"


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _versions() -> str:
    return ", ".join(f"{name} {_version(name)}" for name in PACKAGES)


def inprocess_section(sizes: Sizes, summary: list[str]) -> str:
    result = inprocess.run(sizes.rounds, sizes.requests, sizes.warmup)
    rows = inprocess.summarize(result)
    out = [
        "## In process: the ASGI app called directly",
        "",
        f"{sizes.rounds} rounds x {sizes.requests} requests per variant, round-robin "
        f"(starting variant rotated), after {sizes.warmup} warm-up requests each. "
        "Per request = median over rounds of (requests + flush of the variant's span "
        "processors at the end of its slice) / requests, so export work done by "
        "BatchSpanProcessor threads is charged to the variant that queued it; slices are short "
        "enough that no span queue can overflow, and a short sleep off the clock follows each "
        "flush so that no worker thread runs during another variant's slice. Overheads are "
        "paired with the bare app's time in the same round; ratio = ours overhead / peer "
        "overhead at the same sampling ratio (median over rounds, interquartile range in brackets).",
        "",
        "| variant | per request µs | of which span flush µs | overhead µs | ratio to peer [IQR] | target | met? |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        overhead = f"{r.overhead_us:.1f}" if r.overhead_us is not None else "-"
        ratio = target = met = "-"
        if r.ratio_to_peer is not None and r.ratio_spread is not None:
            ratio = f"{r.ratio_to_peer:.3f} [{r.ratio_spread[0]:.3f}-{r.ratio_spread[1]:.3f}]"
            limit = OVERHEAD_TARGETS.get(r.sample_ratio or 0.0)
            if limit is not None:
                target = f"≤ {limit:g}"
                met = _met(r.ratio_to_peer <= limit)
                summary.append(
                    f"| in-process overhead ours/peer, sampling {r.sample_ratio:g} | "
                    f"{r.ratio_to_peer:.3f} | {target} | {met} |"
                )
        flush = r.per_request_us - r.request_only_us
        out.append(
            f"| {r.label} | {r.per_request_us:.1f} | {flush:.1f} | {overhead} | {ratio} | {target} | {met} |"
        )
    native = ", ".join(label for label, on in result.native_telemetry.items() if on)
    out += [
        "",
        f"Non-200 responses: {result.failures}. Fullest span queue at the end of a slice, "
        f"before its flush: {result.max_queue_fill():.0%} (below 100%: no span was dropped "
        "for a full queue). FastAPI's native OpenTelemetry telemetry: every "
        f"app is built with `FastAPI(telemetry={NO_NATIVE_TELEMETRY!r})`; "
        f"`_native_telemetry.enabled()` is true for: {native or 'none'}.",
    ]
    lines = inprocess.check_log_lines()
    out += ["", "One access line of each stack (sinks swapped for StringIO for this check):", ""]
    for name, parsed in lines.items():
        count = len(parsed)
        sample = parsed[-1] if parsed else {}
        out.append(f"- {name} ({count} lines for 2 requests): `{sample}`")
    return "\n".join(out)


def messaging_section(sizes: Sizes, summary: list[str]) -> str:
    result = messaging.run(sizes.message_rounds, sizes.requests, sizes.warmup)
    rows = messaging.summarize(result)
    summary.extend(
        f"| per-message overhead ours/hand-written (Dapr subscription), sampling "
        f"{r.variant.sample_ratio:g}, {r.variant.parents:.0%} of parents sampled | "
        f"{r.ratio:.2f} | ≤ {MESSAGE_TARGET:g} | {_met(r.ratio <= MESSAGE_TARGET)} |"
        for r in rows
        if r.ratio is not None
    )
    out = [
        "## Per-message overhead (Dapr subscriptions), in process",
        "",
        f"{sizes.message_rounds} rounds x {sizes.requests} deliveries per variant, round-robin "
        f"(starting variant rotated), after {sizes.warmup} warm-up deliveries each; every "
        "delivery a new CloudEvent id and trace, a handler doing nothing. bare: a FastAPI POST "
        "handler parsing the CloudEvent; hand-written: the same plus `propagate.extract`, one "
        "CONSUMER span and one prometheus_client counter; ours: `configure()` and "
        "`Subscriptions` (parse and validation, trace-context rule, baggage, span with "
        "attributes and producer link, in-memory idempotency, outcome, four metrics, one log "
        "line). Both instrumented apps sample ParentBased(TraceIdRatioBased(ratio)) and export "
        "through the same guarded Zipkin exporter to an unreachable endpoint. Per message = "
        "median over rounds of (deliveries + span flush) / deliveries; overheads paired with "
        "bare in the same round; ratio = ours overhead / hand-written overhead at the same "
        "setting (median over rounds, interquartile range in brackets).",
        "",
        messaging.format_rows(rows),
        "",
        messaging.describe(result),
        "",
        messaging.format_outputs(messaging.check_outputs()),
    ]
    return "\n".join(out)


def uvicorn_section(sizes: Sizes, summary: list[str]) -> str:
    out = [
        "## Under uvicorn, loaded by wrk on loopback",
        "",
        f"One uvicorn process per variant (1 worker, --no-access-log, --log-level warning), "
        f"all started up front; `wrk -t1 -c16 -d{sizes.wrk_duration:g}s` per variant, "
        f"{sizes.wrk_rounds} round(s), round-robin, after a {sizes.wrk_warmup:g} s warm-up each. "
        "Ratios are paired within a round (median, min-max). Each available uvicorn "
        "implementation is measured: pure Python (h11, asyncio) and uvicorn[standard]'s "
        "(httptools, uvloop).",
    ]
    for http, loop in uvicorn_wrk.configurations():
        result = uvicorn_wrk.run(
            sizes.wrk_rounds,
            sizes.wrk_duration,
            warmup=sizes.wrk_warmup,
            http=http,
            loop=loop,
        )
        out += [
            "",
            f"### uvicorn --http {http} --loop {loop}",
            "",
            "| variant | req/s | ours/peer [min-max] | target | met? |",
            "|---|---:|---:|---|---|",
        ]
        by_label = {r.label: r for r in uvicorn_wrk.summarize(result)}
        for r in by_label.values():
            ratio = target = met = "-"
            if r.ratio_to_peer is not None and r.ratio_spread is not None:
                ratio = f"{r.ratio_to_peer:.2f} [{r.ratio_spread[0]:.2f}-{r.ratio_spread[1]:.2f}]"
                limit = RPS_TARGETS.get(r.sample_ratio or 0.0)
                if (http, loop) != RPS_TARGET_SERVER or limit is None:
                    out.append(f"| {r.label} | {r.rps:.0f} | {ratio} | - | - |")
                    continue
                target = f"≥ {limit:g}"
                met = _met(r.ratio_to_peer >= limit)
                summary.append(
                    f"| uvicorn ({http}, {loop}) req/s ours/peer, sampling {r.sample_ratio:g} | "
                    f"{r.ratio_to_peer:.2f} | {target} | {met} |"
                )
            errors = f" ({'; '.join(r.errors)})" if r.errors else ""
            out.append(f"| {r.label}{errors} | {r.rps:.0f} | {ratio} | {target} | {met} |")
        bare_rps = by_label["bare"].rps
        ceilings = [
            f"{bare_rps / r.rps:.2f} at sampling {r.sample_ratio:g}"
            for r in by_label.values()
            if r.name == "peer" and r.rps
        ]
        out += [
            "",
            "Ceiling of ours/peer (bare/peer: what a zero-overhead SDK would reach): "
            + ", ".join(ceilings)
            + ".",
        ]
    return "\n".join(out)


def logging_section(sizes: Sizes, summary: list[str]) -> str:
    results = [
        ("orjson installed (default)", logging_throughput.run(sizes.log_rounds, sizes.log_lines))
    ]
    results.append(
        (
            "orjson hidden (fresh interpreter)",
            logging_throughput.run_without_orjson(sizes.log_rounds, sizes.log_lines),
        )
    )
    out = [
        "## JSON log lines per second (formatter.format(record))",
        "",
        f"{sizes.log_rounds} rounds x {sizes.log_lines} records per formatter, round-robin. "
        "Same fields in every line; ours reads request id and trace ids from the request "
        "context and current span, the plain formatters get them as record attributes set "
        "before timing (which favours them).",
        "",
        "| setting | formatter | JSON backend | lines/s | ratio to plain JsonFormatter [min-max] | target | met? |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for setting, result in results:
        for t in result.times:
            ratio = target = met = "-"
            if t.name != PLAIN:
                median, low, high = result.ratio(t.name, PLAIN)
                ratio = f"{median:.2f} [{low:.2f}-{high:.2f}]"
                if t.name == "ours":
                    # The target is against python-json-logger's fastest formatter here.
                    fastest = ORJSON if any(x.name == ORJSON for x in result.times) else PLAIN
                    best, _, _ = result.ratio(t.name, fastest)
                    target = f"≥ {LOG_TARGET:g} x {fastest.removeprefix('python-json-logger ')}"
                    met = _met(best >= LOG_TARGET)
                    summary.append(
                        f"| log lines/s ours/{fastest}, {setting} ({t.backend}) | "
                        f"{best:.2f} | ≥ {LOG_TARGET:g} | {met} |"
                    )
            out.append(
                f"| {setting} | {t.name} | {t.backend} | {result.median(t.name):,.0f} | {ratio} | {target} | {met} |"
            )
    samples = results[0][1].samples
    out += ["", "Lines (orjson installed):", ""]
    out += [f"- {name}: `{line}`" for name, line in samples.items()]
    return "\n".join(out)


def scrape_section(sizes: Sizes, summary: list[str]) -> str:
    result = scrape_lag.run(sizes.scrapes)
    ours = max(result.lags["ours", False] + result.lags["ours", True])
    summary.append(
        f"| longest event-loop lag during a scrape of {result.samples:,} samples, ours | "
        f"{ours:.1f} ms | ≤ {scrape_lag.TARGET_MS:g} ms | {_met(ours <= scrape_lag.TARGET_MS)} |"
    )
    return "\n".join(["## A scrape and the event loop", "", scrape_lag.format_result(result)])


def import_section(sizes: Sizes, summary: list[str]) -> str:
    result = import_time.run(sizes.import_runs)
    ok = not result.forbidden_loaded
    ours = result.median("import todo_observability")
    summary.append(
        f"| `import todo_observability` ({ours:.1f} ms) loads neither fastapi nor dapr | "
        f"{'none loaded' if ok else ', '.join(result.forbidden_loaded)} | none | {_met(ok)} |"
    )
    out = [
        "## Import time",
        "",
        f"`python -X importtime -c STATEMENT`, fresh interpreter, median of {sizes.import_runs} "
        "(interleaved); total of the statement's top-level imports, interpreter start-up excluded.",
        "",
        import_time.format_result(result),
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes (under 2 minutes)")
    parser.add_argument("--skip-uvicorn", action="store_true", help="no uvicorn/wrk section")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    revision = _revision()
    started = time.monotonic()
    summary: list[str] = []
    sections = [inprocess_section(sizes, summary), messaging_section(sizes, summary)]
    if not args.skip_uvicorn:
        sections.append(uvicorn_section(sizes, summary))
        sections.append(health_storm.report(*((2.0, 1) if args.quick else (5.0, 2))))
        sections.append(
            span_export.report(
                sizes.export_rounds, sizes.export_duration, sizes.export_cpu_rounds, summary
            )
        )
    sections.append(logging_section(sizes, summary))
    sections.append(scrape_section(sizes, summary))
    sections.append(import_section(sizes, summary))
    elapsed = time.monotonic() - started

    command = "python -m benchmarks.run " + shlex.join(sys.argv[1:] if argv is None else argv)
    print("# todo_observability benchmarks\n")
    print(f"- Command: `{command.strip()}` (in {os.getcwd()}), took {elapsed:.0f} s")
    print(f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"- Revision: {revision}")
    print(
        f"- Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"- Versions: {_versions()}")
    print("\n## Summary\n")
    print("| measure | measured | target | met? |")
    print("|---|---:|---|---|")
    print("\n".join(summary))
    for section in sections:
        print()
        print(section)


if __name__ == "__main__":
    main()
