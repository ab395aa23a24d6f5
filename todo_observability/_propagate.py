"""`opentelemetry.propagate`, imported once, with a fix-it error when OTEL_PROPAGATORS names a missing one.

OpenTelemetry builds its global propagator from `OTEL_PROPAGATORS` when the module is first
imported and raises a bare `ValueError` for a name no installed package provides
(`b3multi` without the B3 package). Every module of the SDK imports it from here instead, so
that error says which package to install.
"""

from __future__ import annotations

import os

from todo_observability.exceptions import ConfigurationError

__all__ = ["propagate"]

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
