"""The `todo-obs` command: inspect configuration, the metric catalogue, and traces in a span file."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from todo_observability._version import __version__
from todo_observability.config import OPTIONS, resolve_settings
from todo_observability.exceptions import ConfigurationError

__all__ = ["main", "render_trace_tree"]


def _config(args: argparse.Namespace, out: TextIO) -> int:
    settings = resolve_settings()
    resource = settings.resource_attributes
    from_resource = {
        "service_name": "service.name" in resource,
        "service_version": "service.version" in resource,
        "environment": "deployment.environment.name" in resource
        or "deployment.environment" in resource,
    }
    out.write(f"{'setting':<20} {'value':<45} source\n")
    for option in OPTIONS:
        value = getattr(settings, option.field)
        if os.environ.get(option.env, "").strip():
            source = f"${option.env}"
        elif from_resource.get(option.field):
            source = "$OTEL_RESOURCE_ATTRIBUTES"
        else:
            source = "default"
        if isinstance(value, tuple):
            value = ",".join(value)
        out.write(f"{option.field:<20} {value!s:<45} {source}\n")
    return 0


def _metrics(args: argparse.Namespace, out: TextIO) -> int:
    from todo_observability.metrics import CATALOGUE

    if args.json:
        rows = [
            {"name": s.name, "type": s.type, "labels": list(s.labels), "help": s.help}
            for s in CATALOGUE
        ]
        out.write(json.dumps(rows, indent=2) + "\n")
        return 0
    for spec in CATALOGUE:
        labels = "{" + ",".join(spec.labels) + "}" if spec.labels else ""
        out.write(f"{spec.type:<10} {spec.name}{labels}\n           {spec.help}\n")
    return 0


def load_spans(path: Path) -> list[dict[str, Any]]:
    """Spans of a Zipkin v2 JSON file: one span array per line, or one array for the file."""
    text = path.read_text(encoding="utf-8").strip()
    if text.startswith("[") and "\n" not in text:
        return list(json.loads(text))
    spans: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            spans.extend(json.loads(line))
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{path}:{number}: not a JSON array of spans ({exc.msg})") from None
    return spans


def render_trace_tree(spans: Sequence[dict[str, Any]], trace_id: str) -> list[str]:
    """One line per span of `trace_id`, indented under its parent: service, kind, name, duration."""
    mine = [span for span in spans if span.get("traceId") == trace_id]
    ids = {span["id"] for span in mine}
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for span in mine:
        parent = span.get("parentId")
        children[parent if parent in ids else None].append(span)
    lines = [f"trace {trace_id}: {len(mine)} spans"]

    def service_of(span: dict[str, Any]) -> str:
        return str((span.get("localEndpoint") or {}).get("serviceName", "?"))

    width = max([12, *(len(service_of(span)) for span in mine)])

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children[parent], key=lambda s: s.get("timestamp", 0)):
            kind = span.get("kind") or "INTERNAL"
            duration = span.get("duration", 0) / 1000
            lines.append(
                f"{'  ' * depth}{service_of(span):<{width}} {kind:<8} "
                f"{span.get('name', ''):<44} {duration:9.2f} ms"
            )
            walk(span["id"], depth + 1)

    walk(None, 1)
    return lines


def _trace(args: argparse.Namespace, out: TextIO) -> int:
    spans = load_spans(Path(args.file))
    if not spans:
        out.write(f"{args.file}: no spans\n")
        return 1
    trace_ids = (
        [args.trace_id] if args.trace_id else list(dict.fromkeys(s["traceId"] for s in spans))
    )
    if not args.trace_id and not args.all:
        trace_ids = trace_ids[-1:]
    for trace_id in trace_ids:
        out.write("\n".join(render_trace_tree(spans, trace_id)) + "\n")
    return 0


def _sidecar(args: argparse.Namespace, out: TextIO) -> int:
    # Imported here: the emulator pulls in Starlette, httpx and uvicorn.
    from todo_observability.testing.sidecar.runner import build_specs, serve

    specs = build_specs(
        args.app, app_id=args.app_id, app_port=args.app_port, dapr_http_port=args.dapr_http_port
    )
    return serve(
        specs,
        host=args.host,
        sampling_rate=args.sampling_rate,
        retry=args.retry,
        zipkin_endpoint=args.zipkin_endpoint,
        span_file=args.span_file,
        pubsubs=args.pubsub or ["pubsub"],
        state_stores=args.statestore or ["statestore"],
        partitions=args.partitions,
        runtime_version=args.runtime_version,
        log_level=args.log_level,
    )


def _add_sidecar_command(commands: Any) -> None:
    sidecar = commands.add_parser(
        "sidecar",
        help="run emulated Dapr sidecars (daprd's HTTP API) for local apps",
        description="Serve an emulated Dapr sidecar per app, sharing an in-memory broker. "
        "Tokens come from DAPR_API_TOKEN (expected from apps) and APP_API_TOKEN (sent to apps).",
    )
    sidecar.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="ID:APP_PORT:DAPR_HTTP_PORT",
        help="an app and its sidecar's port, e.g. backend:8001:3501 (repeatable)",
    )
    sidecar.add_argument("--app-id", help="one app's id (default: $APP_ID)")
    sidecar.add_argument("--app-port", type=int, help="its port (default: $APP_PORT)")
    sidecar.add_argument(
        "--dapr-http-port", type=int, help="its sidecar's port (default: $DAPR_HTTP_PORT, 3500)"
    )
    sidecar.add_argument("--host", default="127.0.0.1", help="interface to serve the APIs on")
    sidecar.add_argument(
        "--sampling-rate",
        type=float,
        default=1.0,
        help="tracing samplingRate; 0 turns the sidecars' tracing off (default: 1)",
    )
    sidecar.add_argument(
        "--retry",
        metavar="POLICY",
        help="pub/sub inbound retry policy: constant:1s:3 or exponential:200ms:5[:10s] "
        "(default: none, one attempt per delivery)",
    )
    sidecar.add_argument("--zipkin-endpoint", metavar="URL", help="export spans to Zipkin")
    sidecar.add_argument("--span-file", metavar="PATH", help="append spans to a Zipkin JSON file")
    sidecar.add_argument(
        "--pubsub", action="append", metavar="NAME", help="a pub/sub component (default: pubsub)"
    )
    sidecar.add_argument(
        "--statestore",
        action="append",
        metavar="NAME",
        help="a state store component (default: statestore)",
    )
    sidecar.add_argument("--partitions", type=int, default=1, help="partitions per topic")
    sidecar.add_argument(
        "--runtime-version",
        default="1.18.3",
        help="the daprd version to emulate (below 1.18: no stable Jobs API)",
    )
    sidecar.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    sidecar.set_defaults(run=_sidecar)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run `todo-obs`; returns the exit status."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="todo-obs", description=__doc__)
    parser.add_argument("--version", action="version", version=f"todo-obs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "config", help="show the settings resolved from the environment, and where each comes from"
    ).set_defaults(run=_config)
    metrics = commands.add_parser("metrics", help="list the metric catalogue")
    metrics.add_argument("--json", action="store_true", help="as JSON")
    metrics.set_defaults(run=_metrics)
    trace = commands.add_parser("trace", help="show a trace from a Zipkin v2 span file as a tree")
    trace.add_argument("file", help="span file written by the file exporter (TODO_OBS_TRACES_FILE)")
    trace.add_argument("--trace-id", help="the trace to show (default: the last one in the file)")
    trace.add_argument("--all", action="store_true", help="show every trace in the file")
    trace.set_defaults(run=_trace)
    from todo_observability import _cli_alerts, _cli_dlq, _cli_traces

    _cli_dlq.add_parser(commands)
    _cli_alerts.add_parser(commands)
    _cli_traces.add_parser(commands)
    _add_sidecar_command(commands)
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args, out)
    except ConfigurationError as exc:
        sys.stderr.write(f"todo-obs: {exc}\n")
        return 2
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
