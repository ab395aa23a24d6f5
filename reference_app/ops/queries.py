"""Every query of every generated dashboard, as a catalogue to check and to run outside Grafana.

The tests parse each query, check its selectors against the metric catalogues, and run those
on our own metrics against a real Prometheus; `concrete()` replaces the Grafana variables a
query uses so that Prometheus' API and a PromQL parser accept it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from reference_app.ops import thirdparty
from reference_app.ops.catalogue import spec_of
from reference_app.ops.dashboards import RECORDING_RULES, build
from reference_app.ops.promql import selectors

__all__ = ["Query", "concrete", "queries"]

_VARIABLE = re.compile(r"\$\{?(\w+)")


def concrete(expr: str, *, job: str = ".+", rate_interval: str = "1m", range_: str = "1h") -> str:
    """`expr` with its Grafana variables replaced, ready for Prometheus' API or a PromQL parser.

    Args:
        expr: A panel query, using `$job`, `$__rate_interval` and `$__range`.
        job: The value of `$job`; it is matched as a regular expression (`=~`), so one service
            name selects that service and the default selects them all.
        rate_interval: The value of `$__rate_interval` (at least 4 scrape intervals).
        range_: The value of `$__range` (the dashboard's time range).

    Raises:
        ValueError: `expr` uses a variable this function does not know.
    """
    result = (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$__range", range_)
        .replace("$job", job)
    )
    leftover = _VARIABLE.search(result)
    if leftover is not None:
        raise ValueError(
            f"query uses the Grafana variable {leftover.group(0)!r}, which concrete() does not "
            f"substitute: {expr!r}. Use $job, $__rate_interval or $__range, or teach concrete() "
            "the new variable."
        )
    return result


@dataclass(frozen=True)
class Query:
    """One query of one panel of one dashboard.

    Attributes:
        dashboard: The dashboard's uid.
        panel: The panel's title.
        ref_id: The query's refId within the panel (A, B, ...).
        expr: The PromQL as Grafana runs it, with `$job`, `$__rate_interval`, `$__range`.
    """

    dashboard: str
    panel: str
    ref_id: str
    expr: str

    def concrete(self, *, job: str = ".+", rate_interval: str = "1m", range_: str = "1h") -> str:
        """The PromQL with its variables replaced (see the module function `concrete`)."""
        return concrete(self.expr, job=job, rate_interval=rate_interval, range_=range_)

    @property
    def metrics(self) -> frozenset[str]:
        """The metric names (series names, e.g. `x_bucket`) the query selects."""
        return frozenset(selector.name for selector in selectors(self.concrete()))

    @property
    def kind(self) -> str:
        """`own` (only our catalogues' metrics), `slo` (reads recording rules) or `thirdparty`."""
        bases = {found[0].name if (found := spec_of(name)) else name for name in self.metrics}
        if any(thirdparty.base_name(name) in thirdparty.THIRD_PARTY for name in self.metrics):
            return "thirdparty"
        if bases & {spec.name for spec in RECORDING_RULES}:
            return "slo"
        return "own"


def queries() -> list[Query]:
    """Every query of every generated dashboard, in dashboard and panel order."""
    found: list[Query] = []
    for model in build().values():
        panels: list[dict[str, Any]] = []
        for panel in model.get("panels", []):
            panels.append(panel)
            panels.extend(panel.get("panels", []))
        found.extend(
            Query(model["uid"], panel["title"], target["refId"], target["expr"])
            for panel in panels
            for target in panel.get("targets", [])
        )
    return found
