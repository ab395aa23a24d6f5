"""Our metrics, the SDK's and the reference services', looked up by the series Prometheus shows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from reference_app.common import metrics as app_metrics
from todo_observability import metrics as sdk_metrics

if TYPE_CHECKING:
    from todo_observability.metrics import MetricSpec

SPECS: Mapping[str, MetricSpec] = {
    spec.name: spec for spec in (*sdk_metrics.CATALOGUE, *app_metrics.CATALOGUE)
}
"""Every catalogued metric by name."""

HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def spec_of(series: str, specs: Mapping[str, MetricSpec] = SPECS) -> tuple[MetricSpec, str] | None:
    """The metric `series` belongs to, and its suffix; None when no spec in `specs` declares it.

    The suffix is '' for the metric's own name, or a histogram's `_bucket`, `_sum`, `_count`.
    """
    spec = specs.get(series)
    if spec is not None:
        return spec, ""
    for suffix in HISTOGRAM_SERIES:
        spec = specs.get(series.removesuffix(suffix))
        if spec is not None and spec.type == "histogram" and series.endswith(suffix):
            return spec, suffix
    return None
