"""Zipkin v2 span files (the file exporter's output): read them, and draw a trace as a tree."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

__all__ = ["load_spans", "render_trace_tree"]


def load_spans(path: Path) -> list[dict[str, Any]]:
    """Spans of a Zipkin v2 JSON file: one span array per line, or one array for the file.

    Raises:
        OSError: the file cannot be read.
        SystemExit: a line is not a JSON array of spans; the message says which.
    """
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
