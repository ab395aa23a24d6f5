"""`todo-obs trace`: a trace from a Zipkin v2 span file, as a tree."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from todo_observability.ops.spans import load_spans, render_trace_tree

if TYPE_CHECKING:
    import argparse


__all__ = ["add_parser", "run"]


def add_parser(subcommands: Any) -> None:
    """Register `trace` on the `todo-obs` subcommands."""
    trace = subcommands.add_parser(
        "trace", help="show a trace from a Zipkin v2 span file as a tree"
    )
    trace.add_argument("file", help="span file written by the file exporter (TODO_OBS_TRACES_FILE)")
    trace.add_argument(
        "--trace-id",
        help="the trace to show (default: the latest one with a server span, a user's request)",
    )
    trace.add_argument("--all", action="store_true", help="show every trace in the file")
    trace.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Print the chosen traces of the span file as trees."""
    try:
        spans = load_spans(Path(args.file))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SystemExit(
            f"{args.file}: cannot read the span file ({reason}). The file exporter writes one: "
            "OTEL_TRACES_EXPORTER=file TODO_OBS_TRACES_FILE=spans.jsonl"
        ) from None
    if not spans:
        out.write(f"{args.file}: no spans\n")
        return 1
    if args.trace_id:
        trace_ids = [args.trace_id.lower()]
        if not any(s.get("traceId") == trace_ids[0] for s in spans):
            out.write(
                f"{args.file}: no span of trace {args.trace_id}; `todo-obs trace {args.file} "
                "--all` lists every trace in it\n"
            )
            return 1
    elif args.all:
        trace_ids = list(dict.fromkeys(s["traceId"] for s in spans))
    else:
        trace_ids = [_latest_request(spans)]
    for trace_id in trace_ids:
        out.write("\n".join(render_trace_tree(spans, trace_id)) + "\n")
    if not args.trace_id and not args.all:
        out.write("(the latest trace with a server span; --trace-id ID shows another, --all all)\n")
    return 0


def _latest_request(spans: list[dict[str, Any]]) -> str:
    """The trace of the latest request a service served, else simply the latest trace.

    A span file also holds traces of background work (a health check's calls, a sidecar's
    own spans): a trace with a SERVER span is what a user caused.
    """
    served = [s for s in spans if s.get("kind") == "SERVER"] or spans
    latest = max(served, key=lambda s: (s.get("timestamp", 0), served.index(s)))
    return str(latest["traceId"])
