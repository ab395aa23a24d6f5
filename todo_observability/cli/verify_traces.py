"""`todo-obs verify-traces`: the expected flows' span topology, from Zipkin or a span file."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from todo_observability.exceptions import ConfigurationError

if TYPE_CHECKING:
    import argparse

    import httpx

    from todo_observability.ops.traceflows import Flow, FlowReport

__all__ = ["add_parser", "run"]

FLOWS_ENV = "TODO_OBS_TRACE_FLOWS"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def add_parser(subcommands: Any) -> None:
    """Register `verify-traces` on the `todo-obs` subcommands."""
    verify = subcommands.add_parser(
        "verify-traces",
        help="check that the expected flows exist with the expected span topology",
        description="Find each expected flow's trace in a Zipkin server or a span file and "
        "report missing services, missing spans, broken parent links and slow traces. "
        "Exit status: 0 every flow intact, 1 a flow broken or missing (or slow, with "
        "--fail-on-slow), 2 bad usage.",
    )
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--zipkin", metavar="URL", help="a Zipkin server, e.g. http://127.0.0.1:9411 (API v2)"
    )
    source.add_argument(
        "--spans", metavar="FILE", help="a span file written by the file exporter (Zipkin v2 JSON)"
    )
    verify.add_argument(
        "--flows",
        default=os.environ.get(FLOWS_ENV) or None,
        metavar="MODULE:ATTR|FILE.json",
        help=f"the expected flows (default: ${FLOWS_ENV}); "
        "for the reference system: reference_app.ops.flows:FLOWS",
    )
    verify.add_argument(
        "--slow",
        default="1s",
        metavar="DURATION",
        help="report traces longer than this (500ms, 1s, 2m; default: %(default)s)",
    )
    verify.add_argument(
        "--fail-on-slow", action="store_true", help="exit 1 when a trace is slow (default: warn)"
    )
    verify.add_argument(
        "--lookback",
        default="1h",
        metavar="DURATION",
        help="with --zipkin: how far back to search (default: %(default)s)",
    )
    verify.add_argument(
        "--limit",
        type=int,
        default=10,
        help="with --zipkin: traces fetched per query (default: %(default)s)",
    )
    verify.add_argument("--timeout", type=float, default=10.0, help="seconds per Zipkin call")
    verify.add_argument("--json", action="store_true", help="print the reports as JSON")
    verify.set_defaults(run=run)


def parse_duration(text: str, option: str) -> float:
    """Seconds in `text` (`500ms`, `1s`, `1.5s`, `2m`, `1h`, `1d`, or a number of seconds)."""
    match = _DURATION.fullmatch(text.strip())
    if not match or float(match[1]) <= 0:
        raise ConfigurationError(
            f"{option} must be a positive duration such as 500ms, 1s, 30m or 1h, got {text!r}.",
            field=option.lstrip("-"),
            value=text,
        )
    return float(match[1]) * _UNITS[match[2]]


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Check the flows against the chosen source; the exit status (0 intact, 1 not)."""
    from todo_observability.ops.traceflows import check_flows, load_flows

    if not args.flows:
        raise ConfigurationError(
            f"verify-traces needs the expected flows: pass --flows MODULE:ATTRIBUTE or a .json "
            f"file, or set ${FLOWS_ENV} (for the reference system: "
            "--flows reference_app.ops.flows:FLOWS).",
            field="flows",
            env_var=FLOWS_ENV,
        )
    if args.limit <= 0:
        raise ConfigurationError(
            f"--limit must be a positive number of traces, got {args.limit!r}.",
            field="limit",
            value=args.limit,
        )
    slow = parse_duration(args.slow, "--slow")
    flows = load_flows(args.flows)
    if args.spans:
        spans = _read_span_file(args.spans)
        services = None
        origin = f"{args.spans} ({len(spans)} spans)"
    else:
        import httpx

        lookback = parse_duration(args.lookback, "--lookback")
        base = _zipkin_base(args.zipkin)
        try:
            with httpx.Client(base_url=base, timeout=args.timeout) as http:
                services, spans = _query_zipkin(http, flows, lookback, args.limit)
        except httpx.HTTPError as exc:
            out.write(f"cannot query Zipkin at {base}: {exc} (is it running? see --zipkin)\n")
            return 1
        except ValueError as exc:
            out.write(f"Zipkin at {base} answered unexpectedly: {exc}\n")
            return 1
        origin = f"Zipkin {base} (last {args.lookback}, {len(spans)} spans fetched)"
    reports = check_flows(flows, spans, services=services, slow_seconds=slow)
    broken = sum(not report.intact for report in reports)
    slow_count = sum(bool(report.slow_traces) for report in reports)
    if args.json:
        out.write(json.dumps([report.as_dict() for report in reports], indent=2) + "\n")
    else:
        out.write(f"verify-traces: {len(flows)} flows, from {origin}\n")
        for report, flow in zip(reports, flows, strict=True):
            _print_report(report, flow, slow, out)
        out.write(
            f"\n{len(reports) - broken} of {len(reports)} flows intact"
            + (f"; {slow_count} with slow traces" if slow_count else "")
            + "\n"
        )
    return 1 if broken or (args.fail_on_slow and slow_count) else 0


def _read_span_file(path: str) -> list[dict[str, Any]]:
    from todo_observability.ops.spans import load_spans

    try:
        return load_spans(Path(path))
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read span file {path!r}: {exc.strerror} (the file exporter writes it where "
            "TODO_OBS_TRACES_FILE says).",
            field="spans",
            value=path,
        ) from None
    except (SystemExit, ValueError) as exc:
        raise ConfigurationError(
            f"{path} is not a Zipkin v2 span file: {exc}", field="spans", value=path
        ) from None


def _zipkin_base(url: str) -> str:
    """The server's base URL, also from the collector URL exporters are given (`/api/v2/spans`)."""
    base = url.rstrip("/")
    for suffix in ("/api/v2/spans", "/api/v2"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    if not base.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"--zipkin must be an http(s) URL such as http://127.0.0.1:9411, got {url!r}.",
            field="zipkin",
            value=url,
        )
    return base


def _get_json(http: httpx.Client, path: str, params: dict[str, str] | None = None) -> Any:
    response = http.get(path, params=params)
    if response.status_code != 200:
        raise ValueError(f"GET {response.request.url} → {response.status_code}: {response.text}")
    return response.json()


def _query_zipkin(
    http: httpx.Client, flows: list[Flow], lookback: float, limit: int
) -> tuple[list[str], list[dict[str, Any]]]:
    """The services Zipkin knows, and the spans of the traces each flow could be in."""
    services = [str(name) for name in _get_json(http, "/api/v2/services")]
    window = {
        "endTs": str(int(time.time() * 1000)),
        "lookback": str(int(lookback * 1000)),
        "limit": str(limit),
    }
    spans: list[dict[str, Any]] = []
    for flow in flows:
        spans += _traces(http, flow.root.service, flow.root.name, window)
        for step in flow.steps:
            if not step.follows or not step.join_tag:
                continue
            # The trace a flow continues in is found by the tag both roots share.
            followed = next(s for s in flow.steps if s.key == step.follows)
            values = {
                (span.get("tags") or {}).get(step.join_tag)
                for span in spans
                if followed.matches(span)
            }
            for value in sorted(v for v in values if isinstance(v, str)):
                spans += _traces(
                    http,
                    step.service,
                    step.name,
                    {**window, "annotationQuery": f"{step.join_tag}={value}"},
                )
    return services, spans


def _traces(
    http: httpx.Client, service: str, name: str, params: dict[str, str]
) -> list[dict[str, Any]]:
    query = {**params, "serviceName": service.lower()}
    # Zipkin matches spanName exactly; a pattern is checked locally instead.
    if not any(char in name for char in "*?["):
        query["spanName"] = name.lower()
    traces = _get_json(http, "/api/v2/traces", query)
    return [span for trace in traces for span in trace]


def _print_report(report: FlowReport, flow: Flow, slow: float, out: TextIO) -> None:
    mark = "✓" if report.intact else "✗"
    problems = len(report.missing_services) + len(report.missing_spans) + len(report.broken_links)
    verdict = "intact" if report.intact else f"{problems} problem{'s' if problems != 1 else ''}"
    out.write(f"\n{mark} {report.flow}: {verdict}\n  {report.description}\n")
    if not report.candidates:
        out.write(f"  no trace starts with {flow.root.describe()}\n")
    else:
        traces = " → ".join(
            f"{trace_id} ({seconds:.3f} s)"
            for trace_id, seconds in zip(report.trace_ids, report.trace_seconds, strict=True)
        )
        out.write(
            f"  trace {traces}: {len(report.spans)} of {len(flow.steps)} steps found "
            f"(best of {report.candidates} candidate trace{'s' if report.candidates != 1 else ''})\n"
        )
    for service in report.missing_services:
        why = "in the flow's traces" if service["known"] else "anywhere in the source"
        out.write(f"  missing service: {service['service']} (no span {why})\n")
    for span in report.missing_spans:
        detail = f"; {span['detail']}" if span["detail"] else ""
        out.write(
            f"  missing span: {span['service']} {span['kind']} {span['name']} "
            f"(expected {span['expected']}{detail})\n"
        )
    for link in report.broken_links:
        out.write(
            f"  broken link: {link['span']} [{link['span_id']}]: {link['problem']}; "
            f"expected {link['expected']}\n"
        )
    for row in report.slow_traces:
        out.write(f"  slow trace: {row['trace_id']} took {row['seconds']:.3f} s (> {slow:g} s)\n")
