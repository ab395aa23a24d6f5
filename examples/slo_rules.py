"""SLOs as code: the SDK's service SLOs, one SLO of your own and one alert, as Prometheus rules.

Run it with `python -m examples.slo_rules > slo-rules.yml`, check the file with
`promtool check rules slo-rules.yml` and list it under `rule_files:` in prometheus.yml.
The output is JSON, which is YAML too: Prometheus reads it as it is, and no YAML library
is needed to write it.
"""

# --8<-- [start:rules]
import json
import sys
from typing import Any

from todo_observability.ops.slo import SLO, Alert, Events, rule_groups, service_slos

JOBS = ["orders", "payments"]
"""The Prometheus `job` of each service instrumented with the SDK."""

CHECKOUT = SLO(
    name="checkout",
    objective=0.995,
    indicator=Events(
        total='checkouts_total{job="orders"}',
        bad='checkouts_total{job="orders", outcome="failed"}',
    ),
    alert="CheckoutBelowSLO",
    description="99.5 % of checkouts complete.",
    # Checkouts come by the dozen, not by the thousand: page only above 50 in the long window.
    min_events=50,
)

PAYMENT_QUEUE = Alert(
    name="PaymentQueueBacklog",
    expr='max by (job) (payment_queue_depth{job="payments"}) > 500',
    severity="warning",
    category="messaging",
    summary="{{ $labels.job }}: more than 500 payments are waiting",
    description="The payment worker is not keeping up: check its logs and the provider's status.",
    for_="10m",
)


def rules() -> list[dict[str, Any]]:
    """The rule groups: one per SLO, the absent-metric alert, then the plain alerts."""
    return rule_groups(
        [*service_slos(JOBS), CHECKOUT],
        [PAYMENT_QUEUE],
        runbook_base="https://runbooks.example.com/alerts",
    )


def main() -> None:
    json.dump({"groups": rules()}, sys.stdout, indent=2)
    print()


# --8<-- [end:rules]

if __name__ == "__main__":
    main()
