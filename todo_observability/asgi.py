"""`ObservabilityMiddleware`: one pure-ASGI pass per request for context, metrics, span and access log.

It composes the other modules and re-implements none of them: the correlation
context comes from `context`, RED metrics from `metrics`, spans from the
`Observability`'s tracer and the access line from `logs`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import baggage, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TraceFlags

from todo_observability._observability import Observability, _active_observability
from todo_observability._propagate import propagate
from todo_observability._unit import UnitOfWork, baggage_ids
from todo_observability.config import _probe_paths
from todo_observability.context import (
    BAGGAGE_REQUEST_ID,
    BAGGAGE_USER_ID,
    RequestContext,
    new_request_id,
    valid_request_id,
    valid_user_id,
)
from todo_observability.exceptions import ConfigurationError
from todo_observability.health.endpoints import HealthEndpoints
from todo_observability.logs import (
    _TRUSTED_CONTEXT_ATTR,
    ACCESS_LOGGER,
    Correlation,
    _emit_trusted,
    _mark_logged,
)
from todo_observability.metrics import (
    HTTP_SERVER_IN_FLIGHT,
    OTHER_METHOD,
    STANDARD_METHODS,
    UNMATCHED_ROUTE,
    increment,
)
from todo_observability.propagation import _add_field
from todo_observability.tracing import _record_exception

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ObservabilityMiddleware"]

_MAX_CACHED_TEMPLATES = 1024
_SAMPLED = TraceFlags.SAMPLED


class ObservabilityMiddleware:
    """Request id, user id, W3C trace context, a server span, RED metrics and an access line.

    `configure(app)` installs it as the outermost layer of a Starlette or
    FastAPI app, so that it also sees the 500 that Starlette's error handler
    sends. It can wrap any ASGI app on its own:

        app = ObservabilityMiddleware(app, observability=configure(service_name="api"))

    It also answers `/metrics` and the health probes, whether or not their paths
    are in `excluded_paths` (which only means: no span, metrics or access line).

    Args:
        app: The ASGI app to wrap.
        observability: What to record into; by default the `Observability` configured last.
        routes_app: The app whose routes (and mounts) name the `route` label; defaults to `app`.

    Raises:
        ConfigurationError: `observability` is omitted and nothing is configured yet.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        observability: Observability | None = None,
        routes_app: object | None = None,
    ):
        if observability is None:
            observability = _active_observability()
            if observability is None:
                raise ConfigurationError(
                    "ObservabilityMiddleware(app) needs an Observability and none is configured; "
                    "pass observability=configure(service_name=...), or call configure() first.",
                    field="observability",
                )
        self.app = app
        self.observability = obs = observability
        settings = obs.settings
        self._signals = obs.signals
        self._routes_app = app if routes_app is None else routes_app
        self._tracer = obs.tracer
        self._metrics = obs.metrics
        self._in_flight = increment(obs.metrics.gauge(HTTP_SERVER_IN_FLIGHT))
        self._metrics_path = settings.metrics_path
        self._metrics_app = obs.metrics_app
        self._health_app = HealthEndpoints(
            obs.health,
            _probe_paths(settings.health_path),
            service=settings.service_name,
            version=settings.service_version,
            details=settings.health_details,
            token=settings.health_token,
        )
        self._probes = frozenset(self._health_app.paths)
        self._excluded = frozenset(settings.excluded_paths)
        self._self_observed, self._self_observed_prefixes = _self_observed_paths(self._routes_app)
        self._request_id_header = settings.request_id_header.encode("latin-1")
        self._trust_incoming = settings.trust_incoming_context
        self._user_id_header = (
            settings.user_id_header.encode("latin-1")
            if settings.user_id_header and settings.trust_incoming_context
            else None
        )
        self._captured = {
            name.encode("latin-1"): f"http.request.header.{name.replace('-', '_')}"
            for name in settings.capture_headers
        }
        self._redactor = obs.redactor
        # Header names any configured propagator reads (traceparent, tracestate, baggage, ...).
        self._propagation_headers = frozenset(
            name.lower().encode("latin-1") for name in propagate.get_global_textmap().fields
        )
        self._access = logging.getLogger(ACCESS_LOGGER)
        self._access_log = settings.access_log
        self._service_name = settings.service_name
        self._span_enrichers = obs.plugins.span_enrichers
        self._user_id_resolvers = obs.user_id_resolvers
        self._templates: dict[tuple[str, str, int], str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection; HTTP requests are observed, other scopes pass through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == self._metrics_path:
            await self._metrics_app(scope, receive, send)
            return

        if path in self._self_observed or (
            self._self_observed_prefixes and path.startswith(self._self_observed_prefixes)
        ):
            # Message deliveries and job triggers record their own span, metrics and log line.
            await self.app(scope, receive, send)
            return

        # One pass over the request headers for everything we read.
        raw_request_id = raw_user_id = None
        user_agent = b""
        carrier: dict[str, str] | None = None
        captured: dict[str, str] | None = None
        request_id_header = self._request_id_header
        user_id_header = self._user_id_header
        propagation_headers = self._propagation_headers
        captured_headers = self._captured
        for name, value in scope["headers"]:
            if name == request_id_header:
                raw_request_id = value
            elif name == b"user-agent":
                user_agent = value
            elif name in propagation_headers:
                if carrier is None:
                    carrier = {}
                _add_field(carrier, name.decode("latin-1"), value.decode("latin-1"))
            elif name == user_id_header:
                raw_user_id = value
            if captured_headers and name in captured_headers:
                if captured is None:
                    captured = {}
                captured[captured_headers[name]] = value.decode("latin-1")

        parent = propagate.extract(carrier) if carrier is not None else None
        request_id = valid_request_id(raw_request_id.decode("latin-1")) if raw_request_id else None
        # The application's own word on who the user is wins over anything a caller sent.
        user_id = None
        for resolve in self._user_id_resolvers:
            user_id = resolve(scope)
            if user_id is not None:
                break
        if self._trust_incoming:
            if user_id is None and raw_user_id:
                user_id = valid_user_id(raw_user_id.decode("latin-1"))
            if parent is not None and (request_id is None or user_id is None):
                upstream_request_id, upstream_user_id = baggage_ids(parent)
                request_id = request_id or upstream_request_id
                user_id = user_id or upstream_user_id
        elif parent is not None:
            # An edge: identity a caller put in baggage is neither believed nor passed on.
            parent = _without_identity(parent)
        if request_id is None:
            request_id = new_request_id()
        ctx = RequestContext(request_id, user_id, self._signals)
        target = self._health_app if path in self._probes else self.app

        if path in self._excluded:
            # No span, no metrics, no access line unless it fails.
            with _Unobserved(self, ctx, scope, send, user_agent) as unit:
                try:
                    await target(scope, receive, unit.send)
                except Exception:
                    if not unit.started:
                        await _answer_500(unit.send)
                    raise
            return

        method: str = scope["method"]
        if method not in STANDARD_METHODS:
            method = OTHER_METHOD
        with _Request(self, ctx, scope, send, method, parent, user_agent, captured) as unit:
            if unit.recording:
                for enrich in self._span_enrichers:
                    enrich(unit.span, scope)
            try:
                await target(scope, receive, unit.send)
            except Exception:
                # Answer 500 (with the request id) for an app that raised before responding.
                if not unit.started:
                    await _answer_500(unit.send)
                raise

    def _finish_span(
        self,
        span: trace.Span,
        scope: Scope,
        method: str,
        route: str,
        status: int,
        user_agent: bytes,
        captured: dict[str, str] | None,
        error: BaseException | None,
    ) -> None:
        # Every attribute in one call: the SDK validates and locks per call, and
        # our sampler does not read attributes, so nothing is lost by waiting.
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
            "http.response.status_code": status,
        }
        if route != UNMATCHED_ROUTE:
            attributes["http.route"] = route
            span.update_name(f"{method} {route}")
        if method == OTHER_METHOD:
            attributes["http.request.method_original"] = scope["method"]
        client = scope.get("client")
        if client:
            attributes["client.address"] = client[0]
        server = scope.get("server")
        if server:
            attributes["server.address"] = server[0]
            if server[1] is not None:
                attributes["server.port"] = server[1]
        if user_agent:
            attributes["user_agent.original"] = user_agent.decode("latin-1")
        if captured:
            attributes.update(self._redactor.redact(captured))
        if error is not None:
            _record_exception(span, error, self._redactor)
        if status >= 500 or error is not None:
            attributes["error.type"] = (
                type(error).__qualname__ if error is not None else str(status)
            )
            span.set_status(Status(StatusCode.ERROR))
        span.set_attributes(attributes)

    def _log_access(
        self,
        scope: Scope,
        route: str,
        status: int,
        start: float,
        user_agent: bytes,
        error: BaseException | None,
        elapsed: float | None = None,
        *,
        level: int | None = None,
        correlation: Correlation | None = None,
    ) -> None:
        if level is None:
            level = logging.ERROR if status >= 500 else logging.INFO
        access = self._access
        if not access.isEnabledFor(level):
            return
        if elapsed is None:
            elapsed = time.perf_counter() - start
        client = scope.get("client")
        fields = {
            "method": scope["method"],
            "route": route or scope["path"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round(elapsed * 1000, 3),
            "client": client[0] if client else None,
            "user_agent": user_agent.decode("latin-1") if user_agent else None,
        }
        if error is None and _emit_trusted(
            access,
            level,
            f"{fields['method']} {fields['route']} {status}",
            fields,
            correlation,
        ):
            return
        exc_info = (type(error), error, error.__traceback__) if error is not None else None
        record = access.makeRecord(
            access.name,
            level,
            __file__,
            0,
            "%s %s %s",
            (fields["method"], fields["route"], status),
            exc_info,
            extra={_TRUSTED_CONTEXT_ATTR: fields},
        )
        access.handle(record)
        if error is not None:
            _mark_logged(error)

    def _route_template(self, scope: Scope) -> str:
        """The route template of a routed request, mounts included, or UNMATCHED_ROUTE."""
        route = scope.get("route")
        if route is None:
            return UNMATCHED_ROUTE
        leaf = getattr(route, "path_format", None) or getattr(route, "path", None)
        if not isinstance(leaf, str):
            return UNMATCHED_ROUTE
        app_root = scope.get("app_root_path")
        if app_root is None:
            return leaf  # no Mount was crossed
        prefix: str = scope.get("root_path", "")[len(app_root) :]
        if not prefix:
            return leaf
        key = (prefix, leaf, id(route))
        template = self._templates.get(key)
        if template is None:
            template = self._mounted_template(prefix, route, leaf)
            if len(self._templates) < _MAX_CACHED_TEMPLATES:
                self._templates[key] = template
        return template

    def _mounted_template(self, prefix: str, route: object, leaf: str) -> str:
        """Replace the concrete mount prefix by the mounts' templates (`/users/{uid}`)."""
        routes = getattr(self._routes_app, "routes", None) or []
        parts: list[str] = []
        remaining = prefix
        while remaining:
            for mount in routes:
                regex = getattr(mount, "path_regex", None)
                if regex is None or not hasattr(mount, "routes"):
                    continue
                match = regex.match(remaining + "/")
                if match is None or "path" not in match.groupdict():
                    continue
                consumed = len(remaining) - len(match["path"])
                if consumed <= 0:
                    continue
                if mount is route:
                    # The mount itself answered (a mounted non-router app): its
                    # own template ends the route.
                    return "".join(parts) + leaf
                parts.append(getattr(mount, "path", ""))
                remaining = remaining[consumed:]
                routes = getattr(mount, "routes", None) or []
                break
            else:
                # Unknown mounts: keep the concrete prefix; the label guard bounds it.
                parts.append(remaining)
                break
        return "".join(parts) + leaf


def _self_observed_paths(app: object) -> tuple[frozenset[str], tuple[str, ...]]:
    """Paths (and path prefixes) of routes whose endpoints observe themselves.

    Their endpoints (Dapr message deliveries and job triggers) set the class
    attribute `todo_observability_self_observed`; a parameterised path such as
    `/job/{name:path}` becomes the prefix `/job/`.
    """
    exact: set[str] = set()
    prefixes: list[str] = []
    for route in getattr(app, "routes", None) or ():
        endpoint = getattr(route, "endpoint", None)
        path = getattr(route, "path", None)
        if not isinstance(path, str) or not getattr(
            endpoint, "todo_observability_self_observed", False
        ):
            continue
        if "{" in path:
            prefixes.append(path.split("{", 1)[0])
        else:
            exact.add(path)
    return frozenset(exact), tuple(prefixes)


class _Response(UnitOfWork):
    """A unit of work that answers HTTP: reads the status, adds the request id to the response."""

    __slots__ = (
        "_downstream",
        "_header",
        "_request_id",
        "mw",
        "scope",
        "started",
        "status",
        "user_agent",
    )

    def __init__(
        self,
        mw: ObservabilityMiddleware,
        ctx: RequestContext,
        scope: Scope,
        send: Send,
        user_agent: bytes,
        name: str | None = None,
        parent: Any = None,
    ):
        self.mw = mw
        self.scope = scope
        self.user_agent = user_agent
        self.status = 500
        self.started = False
        self._downstream = send
        self._header = mw._request_id_header
        self._request_id = ctx.request_id.encode("latin-1")
        UnitOfWork.__init__(
            self,
            mw._signals,
            ctx,
            name,
            parent=parent,
            kind=SpanKind.SERVER,
            in_flight=None if name is None else mw._in_flight,
        )

    async def send(self, message: Message) -> None:
        """Pass `message` on; on the response start, note the status and set the request id."""
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            header = self._header
            size = len(header)
            headers = message.get("headers", ())
            # Replace any id the app set, append ours (cheaper than MutableHeaders). Only a
            # name of the header's length can be it: the others are not lowered.
            for name, _ in headers:
                if len(name) == size and name.lower() == header:
                    headers = [h for h in headers if h[0].lower() != header]
                    break
            message["headers"] = [*headers, (header, self._request_id)]
        await self._downstream(message)


class _Unobserved(_Response):
    """An excluded path (probes, by default): the context only, and a line if it fails."""

    __slots__ = ()

    def record(self, elapsed: float) -> None:
        if self.status >= 400 and self.mw._access_log:
            # A failing probe is news, not an application error.
            self.mw._log_access(
                self.scope,
                "",
                self.status,
                self.start,
                self.user_agent,
                None,
                elapsed,
                level=logging.WARNING,
            )


class _Request(_Response):
    """An observed request: a server span, RED metrics by route template, the access line."""

    __slots__ = ("captured", "method", "recording")

    def __init__(
        self,
        mw: ObservabilityMiddleware,
        ctx: RequestContext,
        scope: Scope,
        send: Send,
        method: str,
        parent: Any,
        user_agent: bytes,
        captured: dict[str, str] | None,
    ):
        self.method = method
        self.captured = captured
        _Response.__init__(self, mw, ctx, scope, send, user_agent, method, parent)
        self.recording = self.span.is_recording()

    def record(self, elapsed: float) -> None:
        mw, scope, status, span = self.mw, self.scope, self.status, self.span
        route = scope["path"] if scope["path"] in mw._probes else mw._route_template(scope)
        series = mw._metrics.server_series(self.method, route, status)
        series.count(1)
        span_context = span.get_span_context()
        if span_context.trace_flags & _SAMPLED:
            series.duration.observe(elapsed, {"trace_id": "%032x" % span_context.trace_id})  # noqa: UP031
        else:
            series.duration.observe(elapsed)
        if self.recording:
            mw._finish_span(
                span, scope, self.method, route, status, self.user_agent, self.captured, self.error
            )
        if mw._access_log:
            ctx = self.context
            mw._log_access(
                scope,
                route,
                status,
                self.start,
                self.user_agent,
                self.error,
                elapsed,
                correlation=(mw._service_name, ctx.request_id, ctx.user_id, span_context),
            )


def _without_identity(parent: Context) -> Context:
    """`parent` without the identity entries of its baggage (the trace context stays)."""
    entries = baggage.get_all(parent)
    if BAGGAGE_USER_ID in entries:
        parent = baggage.remove_baggage(BAGGAGE_USER_ID, parent)
    if BAGGAGE_REQUEST_ID in entries:
        parent = baggage.remove_baggage(BAGGAGE_REQUEST_ID, parent)
    return parent


async def _answer_500(send: Send) -> None:
    """Answer 500 for an app that raised before responding.

    Outermost (as `configure` installs us), Starlette's error middleware has
    already answered. Wrapping a bare ASGI app, nobody has: answering here
    makes even this response carry the request id.
    """
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": b"Internal Server Error"})
