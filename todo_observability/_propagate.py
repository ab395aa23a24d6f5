"""`opentelemetry.propagate`, imported once, with a fix-it error when OTEL_PROPAGATORS names a missing one.

OpenTelemetry builds its global propagator from `OTEL_PROPAGATORS` when the module is first
imported and raises a bare `ValueError` for a name no installed package provides
(`b3multi` without the B3 package). Every module of the SDK imports it from here instead, so
that error says which package to install.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace

from todo_observability.exceptions import ConfigurationError

__all__ = ["propagate", "sending_as"]

PROPAGATOR_PACKAGES = {
    "b3": "opentelemetry-propagator-b3",
    "b3multi": "opentelemetry-propagator-b3",
    "jaeger": "opentelemetry-propagator-jaeger",
    "xray": "opentelemetry-propagator-aws-xray",
    "ottrace": "opentelemetry-propagator-ot-trace",
}
"""The package that provides each propagator name the specification lists beyond W3C's."""

try:
    from opentelemetry import propagate
except ValueError as exc:
    names = [n.strip() for n in os.environ.get("OTEL_PROPAGATORS", "").split(",") if n.strip()]
    hints = sorted(
        {f"pip install {PROPAGATOR_PACKAGES[n]}" for n in names if n in PROPAGATOR_PACKAGES}
    )
    raise ConfigurationError(
        f"OTEL_PROPAGATORS names a propagator that no installed package provides, got "
        f"{os.environ.get('OTEL_PROPAGATORS', '')!r} ({exc}). "
        + (f"Install it: {'; '.join(hints)}. " if hints else "")
        + "Built in: tracecontext, baggage, todo_tracecontext, none.",
        field="OTEL_PROPAGATORS",
        value=os.environ.get("OTEL_PROPAGATORS", ""),
    ) from None


# Instrumentations of HTTP clients (httpx's, and the ones below it) stand aside while this is
# set: the key OpenTelemetry's contrib instrumentations check before starting a span.
_SUPPRESS_HTTP = getattr(otel_context, "_SUPPRESS_HTTP_INSTRUMENTATION_KEY", None)


@contextmanager
def sending_as(span: trace.Span) -> Iterator[None]:
    """While a request goes out: `span` is current, and no HTTP instrumentation adds its own.

    The SDK's clients start their CLIENT span themselves; an instrumented transport below
    them (`instrument_httpx()`, `opentelemetry-instrument`) would add a second one. Log lines
    written meanwhile carry `span`'s id.
    """
    ctx = trace.set_span_in_context(span)
    if _SUPPRESS_HTTP is not None:
        ctx = otel_context.set_value(_SUPPRESS_HTTP, True, ctx)
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)
