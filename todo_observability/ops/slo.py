"""Service level objectives, and the Prometheus rules that watch them.

An `SLO` is an objective over a ratio of bad events to all events, measured by an indicator
on metrics of the catalogue (`todo_observability.metrics`): `Events` (bad and total counters),
`Latency` (requests slower than a histogram bucket boundary) or `Uptime` (scrapes of `up`).
`rule_groups` turns SLOs and plain `Alert`s into Prometheus rule groups:

- recording rules `slo:sli_error:ratio_rate<window>{slo, <by>}` for the windows of
  `WINDOWS`, `slo:sli_total:increase<window>` for the low-traffic guard, and
  `slo:objective:ratio{slo}` / `slo:error_budget:ratio{slo}` for dashboards;
- multi-window, multi-burn-rate alerts as in the Google SRE workbook ("Alerting on SLOs"):
  page (severity critical) at 14.4x over 1 h and 5 m or 6x over 6 h and 30 m, ticket
  (severity warning) at 1x over 3 d and 6 h, each only above `SLO.min_events` events in its
  long window, so that a handful of requests never pages;
- an absent-metric alert per SLO: a metric that vanished is an alert, not silence.

The result is plain data (dicts and lists) ready to be written as a Prometheus rules file or
wrapped in a prometheus-operator `PrometheusRule` with `prometheus_rule`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from todo_observability.exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "BURN_RATE_ALERTS",
    "SLO",
    "WINDOWS",
    "Alert",
    "BurnRateAlert",
    "Events",
    "Latency",
    "Uptime",
    "prometheus_rule",
    "rule_groups",
    "runbook_slug",
    "service_slos",
]

Severity = Literal["critical", "warning", "info"]

WINDOWS = ("5m", "30m", "1h", "6h", "3d", "30d")
"""The windows of the recorded error ratios (30d is the SLO period, for error budgets)."""

_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_ALERT_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _duration(value: str, what: str) -> str:
    if not _DURATION.match(value):
        raise ConfigurationError(
            f"{what} must be a Prometheus duration such as '5m' or '1h30m', got {value!r}.",
            field="duration",
        )
    return value


@dataclass(frozen=True)
class BurnRateAlert:
    """One multi-window burn-rate condition: both windows burn faster than `factor`.

    Attributes:
        factor: How many times faster than the objective allows the budget burns.
        long_window: The window that makes the alert significant.
        short_window: The window that makes it reset soon after the burn stops.
    """

    factor: float
    long_window: str
    short_window: str


@dataclass(frozen=True)
class _Policy:
    severity: Severity
    conditions: tuple[BurnRateAlert, ...]
    for_: str


BURN_RATE_ALERTS: Mapping[Severity, tuple[BurnRateAlert, ...]] = {
    "critical": (BurnRateAlert(14.4, "1h", "5m"), BurnRateAlert(6, "6h", "30m")),
    "warning": (BurnRateAlert(1, "3d", "6h"),),
}
"""The Google SRE workbook's burn rates: a page spends 2 % (or 5 %) of a 30-day budget in 1 h
(or 6 h); a ticket is 10 % in 3 days."""

_POLICIES = (
    _Policy("critical", BURN_RATE_ALERTS["critical"], "2m"),
    _Policy("warning", BURN_RATE_ALERTS["warning"], "15m"),
)
_GUARDED_WINDOWS = tuple(
    sorted({c.long_window for p in _POLICIES for c in p.conditions}, key=WINDOWS.index)
)


def _matchers(selector: str) -> tuple[str, str]:
    """Split `name{matchers}` into the name and the inside of the braces."""
    match = re.fullmatch(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*", selector, re.S)
    if match is None:
        raise ConfigurationError(
            f"a selector must be a metric name with optional matchers, such as "
            f"'http_server_requests_total{{status_code=~\"5..\"}}', got {selector!r}.",
            field="selector",
        )
    return match.group(1), (match.group(2) or "").strip()


def _select(name: str, *matchers: str) -> str:
    inside = ", ".join(m for m in matchers if m)
    return f"{name}{{{inside}}}" if inside else name


@dataclass(frozen=True)
class Events:
    """Bad events over all events, both counted by counters.

    Attributes:
        total: Selector of every event, e.g. `http_server_requests_total`.
        bad: Selector of the bad ones, e.g. `http_server_requests_total{status_code=~"5.."}`.
    """

    total: str
    bad: str

    def __post_init__(self) -> None:
        _matchers(self.total)
        _matchers(self.bad)

    def errors(self, window: str, by: str) -> str:
        """Bad events in `window`, summed by the `by` labels."""
        return f"sum by ({by}) (increase({self.bad}[{window}]))"

    def totals(self, window: str, by: str) -> str:
        """All events in `window`, summed by the `by` labels."""
        return f"sum by ({by}) (increase({self.total}[{window}]))"

    @property
    def metrics(self) -> tuple[str, ...]:
        """Selectors whose absence leaves the SLO blind."""
        return (self.total,)


@dataclass(frozen=True)
class Latency:
    """Requests slower than a bucket boundary of a histogram, over all requests.

    Attributes:
        histogram: The histogram's name, e.g. `http_server_request_duration_seconds`.
        threshold: The boundary in seconds; it must be one of the histogram's buckets.
        matchers: Extra label matchers, e.g. `route!="/login"`.
    """

    histogram: str
    threshold: float
    matchers: str = ""

    def __post_init__(self) -> None:
        from todo_observability.metrics import CATALOGUE

        _matchers(self.histogram)
        spec = next((s for s in CATALOGUE if s.name == self.histogram), None)
        if spec is not None and self.threshold not in spec.buckets:
            raise ConfigurationError(
                f"Latency threshold must be a bucket boundary of {self.histogram} "
                f"({', '.join(map(str, spec.buckets))}), got {self.threshold!r}: "
                "the ratio of requests within it is only exact at a boundary.",
                field="threshold",
            )

    def _le(self) -> str:
        # prometheus_client renders bucket bounds with repr(float): 0.5 -> "0.5", 1.0 -> "1.0".
        return f'le="{float(self.threshold)!r}"'

    def errors(self, window: str, by: str) -> str:
        """Requests slower than the threshold in `window`, summed by the `by` labels."""
        count = _select(f"{self.histogram}_count", self.matchers)
        within = _select(f"{self.histogram}_bucket", self.matchers, self._le())
        return (
            f"sum by ({by}) (increase({count}[{window}]))"
            f" - sum by ({by}) (increase({within}[{window}]))"
        )

    def totals(self, window: str, by: str) -> str:
        """All requests in `window`, summed by the `by` labels."""
        count = _select(f"{self.histogram}_count", self.matchers)
        return f"sum by ({by}) (increase({count}[{window}]))"

    @property
    def metrics(self) -> tuple[str, ...]:
        """Selectors whose absence leaves the SLO blind."""
        return (_select(f"{self.histogram}_count", self.matchers),)


@dataclass(frozen=True)
class Uptime:
    """Failed scrapes over all scrapes of `up`: the share of time a target was down.

    Attributes:
        selector: Which targets, e.g. `up{job=~"backend|frontend"}`.
    """

    selector: str = "up"

    def __post_init__(self) -> None:
        name, _ = _matchers(self.selector)
        if name != "up":
            raise ConfigurationError(
                f"Uptime measures the 'up' series of scrape targets, got {self.selector!r}; "
                "use Events for counters.",
                field="selector",
            )

    def errors(self, window: str, by: str) -> str:
        """Failed scrapes in `window`, summed by the `by` labels."""
        return (
            f"sum by ({by}) (count_over_time({self.selector}[{window}])"
            f" - sum_over_time({self.selector}[{window}]))"
        )

    def totals(self, window: str, by: str) -> str:
        """Scrapes in `window`, summed by the `by` labels."""
        return f"sum by ({by}) (count_over_time({self.selector}[{window}]))"

    @property
    def metrics(self) -> tuple[str, ...]:
        """Selectors whose absence leaves the SLO blind."""
        return (self.selector,)


Indicator = Events | Latency | Uptime


@dataclass(frozen=True)
class SLO:
    """A service level objective.

    Attributes:
        name: The `slo` label value, lowercase with dashes: `availability`.
        objective: The target ratio of good events, between 0 and 1 exclusive: `0.999`.
        indicator: How bad and total events are counted.
        alert: The name of its burn-rate alerts, e.g. `ServiceAvailabilityBelowSLO`.
        description: One sentence, shown in alert descriptions and dashboards.
        by: Labels the ratio is computed per (each gets its own alerts).
        min_events: The low-traffic guard: no burn-rate alert unless the long window saw at
            least this many events (0 turns the guard off, e.g. for `Uptime`).
        absent_for: How long its metrics may be missing before the absent-metric alert fires.
        labels: Extra labels on its alerts (e.g. `signal: latency` for inhibitions).
    """

    name: str
    objective: float
    indicator: Indicator
    alert: str
    description: str
    by: tuple[str, ...] = ("job",)
    min_events: int = 100
    absent_for: str = "1h"
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigurationError(
                f"SLO name must be lowercase letters, digits and dashes (it becomes the 'slo' "
                f"label), got {self.name!r}.",
                field="name",
            )
        if type(self.objective) is not float or not 0.0 < self.objective < 1.0:
            raise ConfigurationError(
                f"SLO {self.name!r}: objective must be a float between 0 and 1 exclusive "
                f"(0.999 for 99.9 %), got {self.objective!r}.",
                field="objective",
            )
        if not _ALERT_NAME.match(self.alert):
            raise ConfigurationError(
                f"SLO {self.name!r}: alert must be a CamelCase alert name, got {self.alert!r}.",
                field="alert",
            )
        for label in (*self.by, *self.labels):
            if not _LABEL.match(label):
                raise ConfigurationError(
                    f"SLO {self.name!r}: {label!r} is not a valid Prometheus label name.",
                    field="labels",
                )
        _check_extra_labels(self.labels, ("slo", "burn", *_ALERT_LABELS), f"SLO {self.name!r}")
        if self.min_events < 0:
            raise ConfigurationError(
                f"SLO {self.name!r}: min_events must be 0 or more, got {self.min_events!r}.",
                field="min_events",
            )
        _duration(self.absent_for, f"SLO {self.name!r}: absent_for")

    @property
    def error_budget(self) -> float:
        """The share of events allowed to be bad: `1 - objective`."""
        return round(1.0 - self.objective, 12)


_ALERT_LABELS = ("severity", "category")


def _check_extra_labels(labels: Mapping[str, str], reserved: Sequence[str], what: str) -> None:
    for label in labels:
        if not _LABEL.match(label):
            raise ConfigurationError(
                f"{what}: {label!r} is not a valid Prometheus label name.", field="labels"
            )
        if label in reserved:
            raise ConfigurationError(
                f"{what}: labels may not set {label!r}, which the rules set themselves "
                f"({', '.join(reserved)}); use the matching argument instead.",
                field="labels",
            )


@dataclass(frozen=True)
class Alert:
    """An alerting rule with the annotations every alert of ours carries.

    Attributes:
        name: CamelCase alert name.
        expr: The PromQL condition.
        severity: critical (pages), warning (a ticket, chat) or info (e-mail).
        category: Where it routes: slo, service, messaging, kafka, database, health,
            kubernetes, dapr or tracing.
        summary: One line, may use `{{ $labels.x }}`.
        description: What it means and what to check first.
        for_: How long the condition must hold before it fires.
        labels: Extra labels (`signal` for inhibitions).
    """

    name: str
    expr: str
    severity: Severity
    category: str
    summary: str
    description: str
    for_: str = "5m"
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _ALERT_NAME.match(self.name):
            raise ConfigurationError(
                f"alert name must be CamelCase, got {self.name!r}.", field="name"
            )
        if self.severity not in ("critical", "warning", "info"):
            raise ConfigurationError(
                f"alert {self.name!r}: severity must be critical, warning or info, "
                f"got {self.severity!r}.",
                field="severity",
            )
        _duration(self.for_, f"alert {self.name!r}: for_")
        if not _NAME.match(self.category):
            raise ConfigurationError(
                f"alert {self.name!r}: category must be a lowercase word that routes it "
                f"(slo, service, kafka, ...), got {self.category!r}.",
                field="category",
            )
        _check_extra_labels(self.labels, _ALERT_LABELS, f"alert {self.name!r}")

    def rule(self, runbook_url: str) -> dict[str, Any]:
        """The alerting rule, with `runbook_url` pointing at its runbook page."""
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity, "category": self.category, **self.labels},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": runbook_url,
            },
        }


def runbook_slug(alert_name: str) -> str:
    """`ServiceDown` -> `service-down`; `ServiceLatencyAboveSLO` -> `service-latency-above-slo`."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", alert_name).lower()


def _ratio(slo: SLO, window: str) -> str:
    by = ", ".join(slo.by)
    errors = slo.indicator.errors(window, by)
    totals = slo.indicator.totals(window, by)
    # `or totals * 0`: with no bad event yet, the bad counter may have no series at all, and the
    # ratio would be missing instead of 0. `/ (totals > 0)`: no traffic gives no ratio, not NaN.
    return f"(\n  ({errors})\n  or\n  ({totals}) * 0\n)\n/\n({totals} > 0)"


def _slo_rules(slo: SLO, runbook_url: str) -> list[dict[str, Any]]:
    label = {"slo": slo.name}
    where = f'{{slo="{slo.name}"}}'
    rules: list[dict[str, Any]] = [
        {
            "record": "slo:objective:ratio",
            "expr": f"vector({slo.objective!r})",
            "labels": dict(label),
        },
        {
            "record": "slo:error_budget:ratio",
            "expr": f"vector({slo.error_budget!r})",
            "labels": dict(label),
        },
    ]
    for window in WINDOWS:
        if window == "30d":
            # The period's ratio from the 5m one: re-reading 30 days of raw samples every
            # evaluation is what makes SLO rule groups slow.
            expr = f"avg_over_time(slo:sli_error:ratio_rate5m{where}[30d])"
        else:
            expr = _ratio(slo, window)
        rules.append(
            {"record": f"slo:sli_error:ratio_rate{window}", "expr": expr, "labels": dict(label)}
        )
    rules.extend(
        {
            "record": f"slo:sli_total:increase{window}",
            "expr": slo.indicator.totals(window, ", ".join(slo.by)),
            "labels": dict(label),
        }
        for window in _GUARDED_WINDOWS
    )
    percent = f"{slo.objective * 100:g} %"
    per = " ".join(f"{{{{ $labels.{name} }}}}" for name in slo.by)
    for policy in _POLICIES:
        clauses = []
        for condition in policy.conditions:
            threshold = f"({condition.factor:g} * {slo.error_budget!r})"
            clause = (
                f"slo:sli_error:ratio_rate{condition.long_window}{where} > {threshold}\n"
                f"and\nslo:sli_error:ratio_rate{condition.short_window}{where} > {threshold}"
            )
            if slo.min_events:
                clause += (
                    f"\nand\nslo:sli_total:increase{condition.long_window}{where}"
                    f" >= {slo.min_events}"
                )
            clauses.append(f"(\n{clause}\n)")
        windows = " or ".join(
            f"{c.factor:g}x over {c.long_window} and {c.short_window}" for c in policy.conditions
        )
        kind = "page" if policy.severity == "critical" else "ticket"
        rules.append(
            Alert(
                name=slo.alert,
                expr="\nor\n".join(clauses),
                severity=policy.severity,
                category="slo",
                for_=policy.for_,
                summary=f"{per}: {slo.name} SLO ({percent}) error budget burning ({kind})",
                description=(
                    f"{slo.description} The error budget of {per} is burning at {windows} the "
                    f"rate the {percent} objective allows; at this pace the 30-day budget "
                    f"runs out early."
                ),
                labels={"slo": slo.name, "burn": kind, **slo.labels},
            ).rule(runbook_url)
        )
    return rules


def _absent_alert(slos: Sequence[SLO]) -> Alert:
    checks: list[str] = []
    for slo in slos:
        checks.extend(
            f'label_replace(absent_over_time({metric}[{slo.absent_for}]), "slo", '
            f'"{slo.name}", "", "")'
            for metric in slo.indicator.metrics
        )
    return Alert(
        name="SLOMetricsAbsent",
        expr="\nor\n".join(checks),
        severity="warning",
        category="slo",
        for_="5m",
        summary="{{ $labels.slo }} SLO is blind: its metrics are absent",
        description=(
            "No series of a metric the {{ $labels.slo }} SLO is computed from has been scraped "
            "for the SLO's absence window: its recording rules are empty and its burn-rate "
            "alerts cannot fire. A renamed metric, a broken scrape or an unused service."
        ),
    )


def rule_groups(
    slos: Iterable[SLO],
    alerts: Iterable[Alert] = (),
    *,
    runbook_base: str,
    interval: str | None = None,
) -> list[dict[str, Any]]:
    """Prometheus rule groups: one per SLO, then one `slo-absent` and one `alerts` group.

    Args:
        slos: The SLOs; names must be unique.
        alerts: Plain alerting rules, in the `alerts` group.
        runbook_base: URL of the runbook pages; each alert's `runbook_url` is
            `<runbook_base>/<alert-name-in-kebab-case>/`.
        interval: Evaluation interval of the groups (default: Prometheus' global one).

    Raises:
        ConfigurationError: two SLOs share a name, or two alerts share a name.
    """
    slos = list(slos)
    alerts = list(alerts)
    names = [slo.name for slo in slos]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"SLO names must be unique, got {names!r}.", field="slos")
    if "absent" in names:
        raise ConfigurationError(
            "an SLO may not be named 'absent': its group would clash with 'slo-absent'.",
            field="slos",
        )
    alert_names = [a.name for a in alerts] + [s.alert for s in slos]
    if slos:
        alert_names.append("SLOMetricsAbsent")
    duplicates = sorted({n for n in alert_names if alert_names.count(n) > 1})
    if duplicates:
        raise ConfigurationError(
            f"alert names must be unique, got duplicates {duplicates!r}.", field="alerts"
        )
    base = runbook_base.rstrip("/")

    def url(name: str) -> str:
        return f"{base}/{runbook_slug(name)}/"

    groups: list[dict[str, Any]] = [
        {"name": f"slo-{slo.name}", "rules": _slo_rules(slo, url(slo.alert))} for slo in slos
    ]
    if slos:
        absent = _absent_alert(slos)
        groups.append({"name": "slo-absent", "rules": [absent.rule(url(absent.name))]})
    if alerts:
        groups.append({"name": "alerts", "rules": [a.rule(url(a.name)) for a in alerts]})
    if interval is not None:
        _duration(interval, "interval")
        for group in groups:
            group["interval"] = interval
    return groups


def prometheus_rule(
    name: str,
    groups: Sequence[Mapping[str, Any]],
    *,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Wrap rule groups in a prometheus-operator `PrometheusRule` resource."""
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    if labels:
        metadata["labels"] = dict(labels)
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata,
        "spec": {"groups": [dict(group) for group in groups]},
    }


def service_slos(jobs: Sequence[str]) -> tuple[SLO, ...]:
    """The SLOs of services instrumented with this SDK, on the catalogue's metrics.

    - `availability`, 99.9 %: the share of scrapes of `up` that succeeded
      (`ServiceAvailabilityBelowSLO`);
    - `latency`, 95 % of requests within 500 ms, i.e. p95 under 500 ms, from the 0.5 s bucket of
      `http_server_request_duration_seconds` (`ServiceLatencyAboveSLO`, `signal="latency"`);
    - `http-errors`, under 1 % of requests answered with a 5xx (`ServiceErrorRateAboveSLO`);
    - `messaging-processing`, 99.5 % of delivered messages handled rather than dropped to the
      dead-letter topic; retries are not final and do not count (`MessageProcessingBelowSLO`).

    Args:
        jobs: The Prometheus `job` of each service (its scrape job, named after the service).

    Raises:
        ConfigurationError: no job, or a job that is not a plain name.
    """
    from todo_observability import metrics

    if isinstance(jobs, str):
        raise ConfigurationError(
            f"service_slos takes a sequence of jobs, got the string {jobs!r}: "
            f"write service_slos([{jobs!r}]).",
            field="jobs",
        )
    if not jobs:
        raise ConfigurationError(
            "service_slos needs at least one job (the services' scrape jobs).", field="jobs"
        )
    for job in jobs:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", job):
            raise ConfigurationError(
                f"a job must be a plain name (letters, digits, '_', '-'), got {job!r}.",
                field="jobs",
            )
    scope = f'job=~"{"|".join(jobs)}"'
    requests = metrics.HTTP_SERVER_REQUESTS.name
    processed = metrics.MESSAGING_PROCESSED.name
    return (
        SLO(
            name="availability",
            objective=0.999,
            indicator=Uptime(f"up{{{scope}}}"),
            alert="ServiceAvailabilityBelowSLO",
            description="Services answer their scrapes 99.9 % of the time.",
            min_events=0,
        ),
        SLO(
            name="latency",
            objective=0.95,
            indicator=Latency(metrics.HTTP_SERVER_DURATION.name, 0.5, scope),
            alert="ServiceLatencyAboveSLO",
            description="95 % of HTTP requests are served within 500 ms (p95 < 500 ms).",
            labels={"signal": "latency"},
        ),
        SLO(
            name="http-errors",
            objective=0.99,
            indicator=Events(
                total=f"{requests}{{{scope}}}",
                bad=f'{requests}{{{scope}, status_code=~"5.."}}',
            ),
            alert="ServiceErrorRateAboveSLO",
            description="Fewer than 1 % of HTTP requests fail with a 5xx.",
        ),
        SLO(
            name="messaging-processing",
            objective=0.995,
            indicator=Events(
                total=f'{processed}{{{scope}, outcome=~"success|drop"}}',
                bad=f'{processed}{{{scope}, outcome="drop"}}',
            ),
            alert="MessageProcessingBelowSLO",
            description="99.5 % of delivered messages are handled, not dropped to a dead-letter topic.",
            min_events=20,
        ),
    )
