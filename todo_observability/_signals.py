"""`Signals`: what every signal of a unit of work records into, in one small record.

A log line needs the service's name; a span, the service's tracer; a metric, the
service's metric set; a captured header or attribute, the service's redactor. The
correlation context carries this record (not the whole `Observability`), so the
modules that record signals never reach up to the one that configures them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from opentelemetry import trace

from todo_observability._version import __version__
from todo_observability.metrics import MetricSet, _metric_set
from todo_observability.redaction import Redactor

__all__ = ["TRACER_NAME", "Signals", "fallback_signals"]

TRACER_NAME = "todo_observability"
"""The instrumentation scope of the SDK's own spans."""
DEFAULT_SERVICE_NAME = "unknown_service"
"""The service name of lines and spans recorded before anything was configured."""


@dataclass(frozen=True, slots=True)
class Signals:
    """Where one service's signals go.

    Attributes:
        service_name: Written on every log line.
        tracer: Starts the service's spans.
        metrics: The catalogue's metrics in the service's registry.
        redactor: Scrubs what the service's signals carry.
        request_id_header: The header that carries the request id (`X-Request-ID`).
        internal_hosts: Hosts (or `*.suffix` patterns) outgoing calls carry the ids to.
        tracer_provider: The provider behind `tracer`, which the spans of instrumented
            libraries go through (None: OpenTelemetry's global one).
    """

    service_name: str
    tracer: trace.Tracer
    metrics: MetricSet
    redactor: Redactor
    request_id_header: str = "X-Request-ID"
    internal_hosts: tuple[str, ...] = ()
    tracer_provider: trace.TracerProvider | None = None

    def is_internal(self, host: str) -> bool:
        """Whether calls to `host` may carry `user_id` and `request_id` (see `internal_hosts`)."""
        host = host.lower()
        for pattern in self.internal_hosts:
            if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
                return True
        return False


_fallback: Signals | None = None
_fallback_lock = threading.Lock()


def fallback_signals() -> Signals:
    """The record used before any `Observability` exists, built once on first use.

    Its tracer follows OpenTelemetry's global provider (a proxy until one is set),
    its metrics go to prometheus_client's default registry.
    """
    global _fallback
    if _fallback is None:
        with _fallback_lock:
            if _fallback is None:
                _fallback = Signals(
                    DEFAULT_SERVICE_NAME,
                    trace.get_tracer(TRACER_NAME, __version__),
                    _metric_set(),
                    Redactor(),
                )
    return _fallback
