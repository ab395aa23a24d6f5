"""`todo-obs sidecar`: emulated Dapr sidecars for local apps (see `todo_observability.testing.sidecar`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import argparse


__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Serve the emulated sidecars until interrupted."""
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
        kafka_exporter_port=args.kafka_exporter_port,
        log_level=args.log_level,
    )


def add_parser(subcommands: Any) -> None:
    """Register `sidecar` on the `todo-obs` subcommands."""
    sidecar = subcommands.add_parser(
        "sidecar",
        help="run emulated Dapr sidecars (daprd's HTTP API) for local apps",
        description="Serve an emulated Dapr sidecar per app, sharing an in-memory broker. "
        "Tokens come from DAPR_API_TOKEN (expected from apps) and APP_API_TOKEN (sent to apps).",
    )
    sidecar.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="ID:APP_PORT:DAPR_HTTP_PORT[:METRICS_PORT]",
        help="an app and its sidecar's port, e.g. backend:8001:3501, and optionally the "
        "sidecar's metrics port (daprd --metrics-port), e.g. backend:8001:3501:9091 (repeatable)",
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
    sidecar.add_argument(
        "--kafka-exporter-port",
        type=int,
        metavar="PORT",
        help="serve the broker's topics and consumer groups on /metrics under kafka_exporter's "
        "names (its default port is 9308)",
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
    sidecar.set_defaults(run=run)
