"""A Zipkin server's API v2, in memory, as a Starlette app: for tests and for local debugging.

It keeps what the exporters POST and answers the query API the way Zipkin does (names lower-cased
on ingest, the `QueryRequest` rules for `/api/v2/traces`, most recent traces first), so
`todo-obs verify-traces --zipkin` and the Zipkin queries of the docs can run without a Java server:

    uvicorn --factory todo_observability.testing.zipkin:create_app --port 9411

Endpoints: `POST /api/v2/spans` (JSON, optionally gzip), `GET /api/v2/services`,
`/api/v2/spans?serviceName=`, `/api/v2/remoteServices?serviceName=`, `/api/v2/traces`,
`/api/v2/trace/{traceId}`, `/api/v2/traceMany?traceIds=`, `/api/v2/autocompleteKeys`,
`/api/v2/autocompleteValues?key=` and `/health`. Not emulated: protobuf bodies (415),
`/api/v2/dependencies`, the UI.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from starlette.requests import Request

__all__ = [
    "DEFAULT_LOOKBACK_MS",
    "ZipkinEmulator",
    "ZipkinError",
    "create_app",
    "normalize_span",
]

DEFAULT_LOOKBACK_MS = 86_400_000
"""Zipkin's `QUERY_LOOKBACK` default (one day): the lookback when a query gives none."""

_HEX = re.compile(r"[0-9a-f]+")
_KINDS = {"CLIENT", "SERVER", "PRODUCER", "CONSUMER"}


class ZipkinError(ValueError):
    """A request Zipkin would refuse with 400 Bad Request; the message says why."""


def _hex_id(value: Any, field: str, *, width: int) -> str | None:
    """A lower-hex id left-padded as Zipkin does: 16 digits, or 32 for a 128-bit trace id."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ZipkinError(f"{field} must be a non-empty hex string, got {value!r}")
    text = value.lower()
    if len(text) > width or not _HEX.fullmatch(text):
        raise ZipkinError(f"{field} should be a 1 to {width} character lower-hex string: {value!r}")
    return text.rjust(16 if len(text) <= 16 else 32, "0")


def _endpoint(value: Any, field: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ZipkinError(f"{field} must be an object, got {value!r}")
    endpoint = {k: v for k, v in value.items() if k in {"serviceName", "ipv4", "ipv6", "port"}}
    service = endpoint.get("serviceName")
    if service is not None and not isinstance(service, str):
        raise ZipkinError(f"{field}.serviceName must be a string, got {service!r}")
    if service:
        endpoint["serviceName"] = service.lower()
    else:
        endpoint.pop("serviceName", None)
    if not endpoint.get("port"):
        endpoint.pop("port", None)
    # An endpoint with nothing left in it is the same as no endpoint.
    return endpoint or None


def _micros(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ZipkinError(f"{field} must be a non-negative integer (microseconds), got {value!r}")
    return value or None


def normalize_span(raw: Any) -> dict[str, Any]:
    """One span as Zipkin stores it: ids padded, names lower-cased, empty fields dropped.

    Raises:
        ZipkinError: The span is not a Zipkin v2 span (what is wrong is in the message).
    """
    if not isinstance(raw, dict):
        raise ZipkinError(f"a span must be a JSON object, got {raw!r}")
    trace_id = _hex_id(raw.get("traceId"), "traceId", width=32)
    span_id = _hex_id(raw.get("id"), "id", width=16)
    if trace_id is None or span_id is None:
        missing = " ".join(f for f, v in (("traceId", trace_id), ("id", span_id)) if v is None)
        raise ZipkinError(f"Missing: {missing}")
    span: dict[str, Any] = {"traceId": trace_id, "id": span_id}
    parent_id = _hex_id(raw.get("parentId"), "parentId", width=16)
    # Zipkin treats a zero parent, or a span that is its own parent, as a root.
    if parent_id is not None and int(parent_id, 16) != 0 and parent_id != span_id:
        span["parentId"] = parent_id
    kind = raw.get("kind")
    if kind is not None:
        if kind not in _KINDS:
            raise ZipkinError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
        span["kind"] = kind
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise ZipkinError(f"name must be a string, got {name!r}")
    if name:
        span["name"] = name.lower()
    for field in ("timestamp", "duration"):
        if (value := _micros(raw.get(field), field)) is not None:
            span[field] = value
    for field in ("localEndpoint", "remoteEndpoint"):
        if (endpoint := _endpoint(raw.get(field), field)) is not None:
            span[field] = endpoint
    annotations = raw.get("annotations") or []
    if not isinstance(annotations, list) or not all(
        isinstance(a, dict)
        and isinstance(a.get("value"), str)
        and isinstance(a.get("timestamp"), int)
        and not isinstance(a.get("timestamp"), bool)
        for a in annotations
    ):
        raise ZipkinError(
            f"annotations must be a list of {{timestamp, value}}, got {annotations!r}"
        )
    if annotations:
        span["annotations"] = [
            {"timestamp": a["timestamp"], "value": a["value"]} for a in annotations
        ]
    tags = raw.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise ZipkinError(f"tags must be an object of string values, got {tags!r}")
    if tags:
        span["tags"] = dict(tags)
    for flag in ("debug", "shared"):
        if raw.get(flag) is True:
            span[flag] = True
    return span


def _service(span: Mapping[str, Any], endpoint: str = "localEndpoint") -> str | None:
    service = (span.get(endpoint) or {}).get("serviceName")
    return str(service) if service else None


class _Query:
    """`GET /api/v2/traces` parameters, validated like Zipkin's `QueryRequest`."""

    def __init__(self, params: Mapping[str, str], *, now_ms: int) -> None:
        def name(key: str) -> str | None:
            value = params.get(key, "").strip().lower()
            return None if value in ("", "all") else value

        def number(key: str) -> int | None:
            value = params.get(key)
            if value is None or value == "":
                return None
            try:
                return int(value)
            except ValueError:
                raise ZipkinError(f"{key} must be an integer, got {value!r}") from None

        self.service = name("serviceName")
        self.remote_service = name("remoteServiceName")
        self.span_name = name("spanName")
        self.annotations = self._annotation_query(params.get("annotationQuery", ""))
        self.min_duration = number("minDuration")
        self.max_duration = number("maxDuration")
        end_ts = number("endTs")
        self.end_ts = now_ms if end_ts is None else end_ts
        lookback = number("lookback")
        self.lookback = DEFAULT_LOOKBACK_MS if lookback is None else lookback
        limit = number("limit")
        self.limit = 10 if limit is None else limit
        if self.end_ts <= 0:
            raise ZipkinError("endTs <= 0")
        if self.limit <= 0:
            raise ZipkinError("limit <= 0")
        if self.lookback <= 0:
            raise ZipkinError("lookback <= 0")
        if self.min_duration is not None:
            if self.min_duration <= 0:
                raise ZipkinError("minDuration <= 0")
            if self.max_duration is not None and self.max_duration < self.min_duration:
                raise ZipkinError("maxDuration < minDuration")
        elif self.max_duration is not None:
            raise ZipkinError("maxDuration is only valid with minDuration")

    @staticmethod
    def _annotation_query(text: str) -> dict[str, str]:
        """`http.uri=/foo and retried` → {"http.uri": "/foo", "retried": ""}."""
        terms: dict[str, str] = {}
        for term in text.split(" and "):
            term = term.strip()
            if not term:
                continue
            key, sep, value = term.partition("=")
            terms[key.strip()] = value.strip() if sep else ""
        return terms

    def matches(self, spans: list[dict[str, Any]]) -> bool:
        """Zipkin's `QueryRequest.test`: time window first, then the per-service criteria."""
        timestamp = 0
        for span in spans:
            start = span.get("timestamp") or 0
            if not start:
                continue
            if "parentId" not in span:
                timestamp = start
                break
            if timestamp == 0 or start < timestamp:
                timestamp = start
        if (
            timestamp == 0
            or timestamp < (self.end_ts - self.lookback) * 1000
            or timestamp > self.end_ts * 1000
        ):
            return False
        service_found = self.service is None
        remote = self.remote_service
        span_name = self.span_name
        remaining = dict(self.annotations)
        duration_ok = self.min_duration is None and self.max_duration is None
        for span in spans:
            # The service name, when given, constrains every other criterion to its spans;
            # they may be met by different spans of that service.
            if self.service is not None and _service(span) != self.service:
                continue
            service_found = True
            for annotation in span.get("annotations", []):
                if remaining.get(annotation["value"]) == "":
                    del remaining[annotation["value"]]
            for key, value in (span.get("tags") or {}).items():
                wanted = remaining.get(key)
                if wanted is not None and (wanted == "" or wanted == value):
                    del remaining[key]
            if remote is not None and remote == _service(span, "remoteEndpoint"):
                remote = None
            if span_name is not None and span_name == span.get("name"):
                span_name = None
            if not duration_ok and self.min_duration is not None:
                duration = span.get("duration") or 0
                duration_ok = duration >= self.min_duration and (
                    self.max_duration is None or duration <= self.max_duration
                )
        return (
            service_found
            and remote is None
            and span_name is None
            and not remaining
            and (duration_ok)
        )


class ZipkinEmulator:
    """In-memory Zipkin storage and its API v2 as a Starlette app (`emulator.app`).

    Thread-safe: a test may add spans or read them while uvicorn serves the app in another
    thread.
    """

    def __init__(self, spans: Iterable[Mapping[str, Any]] = ()) -> None:
        self._lock = threading.Lock()
        self._traces: dict[str, dict[tuple[str, bool, str | None], dict[str, Any]]] = {}
        self.add(spans)
        self.app = Starlette(
            routes=[
                Route("/api/v2/spans", self._post_spans, methods=["POST"]),
                Route("/api/v2/spans", self._span_names, methods=["GET"]),
                Route("/api/v2/services", self._services, methods=["GET"]),
                Route("/api/v2/remoteServices", self._remote_services, methods=["GET"]),
                Route("/api/v2/traces", self._get_traces, methods=["GET"]),
                Route("/api/v2/trace/{trace_id}", self._get_trace, methods=["GET"]),
                Route("/api/v2/traceMany", self._trace_many, methods=["GET"]),
                Route("/api/v2/autocompleteKeys", self._autocomplete_keys, methods=["GET"]),
                Route("/api/v2/autocompleteValues", self._autocomplete_values, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
            ]
        )

    def add(self, spans: Iterable[Mapping[str, Any]]) -> int:
        """Store spans as if POSTed; how many. Raises `ZipkinError` for an invalid span."""
        normalized = [normalize_span(dict(span)) for span in spans]
        with self._lock:
            for span in normalized:
                trace = self._traces.setdefault(span["traceId"], {})
                key = (span["id"], bool(span.get("shared")), _service(span))
                # Zipkin merges the parts of one span reported separately (late tags, say).
                if key in trace:
                    merged = {**trace[key], **span}
                    merged["tags"] = {**trace[key].get("tags", {}), **span.get("tags", {})}
                    if not merged["tags"]:
                        del merged["tags"]
                    trace[key] = merged
                else:
                    trace[key] = span
        return len(normalized)

    def clear(self) -> None:
        """Forget every span."""
        with self._lock:
            self._traces.clear()

    @property
    def spans(self) -> list[dict[str, Any]]:
        """Every stored span, as stored (normalised)."""
        with self._lock:
            return [dict(span) for trace in self._traces.values() for span in trace.values()]

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans of one trace, by start time (empty if unknown)."""
        with self._lock:
            spans = list(self._traces.get(trace_id.lower().rjust(16, "0"), {}).values())
        return sorted(spans, key=lambda span: span.get("timestamp") or 0)

    @contextlib.contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0) -> Iterator[str]:
        """Serve the API over HTTP with uvicorn in a thread; yields the base URL.

        Args:
            host: The interface to listen on.
            port: The port; 0 picks a free one (read it from the URL).
            timeout: Seconds to wait for the server to start, and to stop.

        Raises:
            ImportError: uvicorn is not installed.
            RuntimeError: The server did not start in time (the port is taken, say).
        """
        try:
            import uvicorn
        except ImportError:  # pragma: no cover - uvicorn comes with the test dependencies
            raise ImportError("ZipkinEmulator.serve needs uvicorn: pip install uvicorn") from None

        class _Server(uvicorn.Server):
            # The thread's owner handles signals; uvicorn must not install its own.
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        # No log config: uvicorn would reconfigure its loggers for the whole process.
        config = uvicorn.Config(
            self.app, host=host, port=port, log_config=None, log_level=None, lifespan="off"
        )
        server = _Server(config)
        thread = threading.Thread(target=server.run, name="zipkin-emulator", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(timeout)
                raise RuntimeError(f"the Zipkin emulator did not start on {host}:{port}")
            time.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://{host}:{bound}"
        finally:
            server.should_exit = True
            thread.join(timeout)

    # The API: errors are plain text with 400, as Zipkin's armeria server answers them.

    async def _post_spans(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "application/json")
        if "protobuf" in content_type or "thrift" in content_type:
            return PlainTextResponse(
                f"this emulator reads JSON only, not {content_type}; "
                "configure the exporter for JSON (OTEL_EXPORTER_ZIPKIN_ENDPOINT uses JSON)",
                status_code=415,
            )
        body = await request.body()
        if request.headers.get("content-encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except OSError as exc:
                return PlainTextResponse(f"Cannot gunzip spans: {exc}", status_code=400)
        try:
            spans = json.loads(body) if body.strip() else []
            if not isinstance(spans, list):
                raise ZipkinError("Expected a JSON array of spans")
            self.add(spans)
        except (ValueError, ZipkinError) as exc:
            return PlainTextResponse(f"Malformed reading List<Span> from json: {exc}", 400)
        return Response(status_code=202)

    async def _services(self, request: Request) -> Response:
        names = {_service(span) for span in self.spans}
        return JSONResponse(sorted(name for name in names if name))

    def _required(self, request: Request, key: str) -> str:
        value = request.query_params.get(key, "").strip()
        if not value:
            raise ZipkinError(f"{key} is required")
        return value

    async def _span_names(self, request: Request) -> Response:
        # The schema says ListOfSpans; Zipkin really answers the span names (strings).
        try:
            service = self._required(request, "serviceName").lower()
        except ZipkinError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        names = {span.get("name") for span in self.spans if _service(span) == service}
        return JSONResponse(sorted(name for name in names if name))

    async def _remote_services(self, request: Request) -> Response:
        try:
            service = self._required(request, "serviceName").lower()
        except ZipkinError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        names = {
            _service(span, "remoteEndpoint") for span in self.spans if _service(span) == service
        }
        return JSONResponse(sorted(name for name in names if name))

    async def _get_traces(self, request: Request) -> Response:
        try:
            query = _Query(request.query_params, now_ms=int(time.time() * 1000))
        except ZipkinError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        with self._lock:
            traces = [list(trace.values()) for trace in self._traces.values()]
        found = [trace for trace in traces if query.matches(trace)]

        def start(trace: list[dict[str, Any]]) -> int:
            return min((span.get("timestamp") or 0 for span in trace), default=0)

        # Nearest to endTs first, as Zipkin's storages return them.
        found.sort(key=start, reverse=True)
        return JSONResponse(
            [sorted(trace, key=lambda s: s.get("timestamp") or 0) for trace in found[: query.limit]]
        )

    async def _get_trace(self, request: Request) -> Response:
        raw = request.path_params["trace_id"]
        try:
            trace_id = _hex_id(raw, "traceId", width=32)
        except ZipkinError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        spans = self.trace(trace_id or "")
        if not spans:
            return PlainTextResponse(f"{raw} not found", status_code=404)
        return JSONResponse(spans)

    async def _trace_many(self, request: Request) -> Response:
        raw = request.query_params.get("traceIds", "")
        try:
            ids = [_hex_id(part.strip(), "traceIds", width=32) for part in raw.split(",") if part]
        except ZipkinError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        unique = list(dict.fromkeys(i for i in ids if i))
        if len(unique) < 2 or len(unique) != len(ids):
            return PlainTextResponse(
                "at least two unique trace IDs are required; use /api/v2/trace/{traceId} for one",
                status_code=400,
            )
        traces = [self.trace(trace_id) for trace_id in unique]
        return JSONResponse([trace for trace in traces if trace])

    async def _autocomplete_keys(self, request: Request) -> Response:
        # Zipkin lists only the keys configured in AUTOCOMPLETE_KEYS, none by default.
        return JSONResponse([])

    async def _autocomplete_values(self, request: Request) -> Response:
        try:
            self._required(request, "key")
        except ZipkinError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        return JSONResponse([])

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "UP", "zipkin": {"status": "UP", "details": {}}})


def create_app() -> Starlette:
    """A fresh, empty emulator's app (for `uvicorn --factory`)."""
    return ZipkinEmulator().app
