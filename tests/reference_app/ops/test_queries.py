"""The query catalogue: every dashboard query, runnable once its Grafana variables are replaced."""

from __future__ import annotations

import promql_parser
import pytest

from reference_app.ops import queries

QUERIES = queries.queries()


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.dashboard}:{q.panel}:{q.ref_id}")
def test_every_query_parses_once_its_variables_are_substituted(query: queries.Query) -> None:
    promql_parser.parse(query.concrete(job="notification-service"))
    assert "$" not in query.concrete()


def test_concrete_substitutes_grafana_variables() -> None:
    expr = 'sum(rate(x{job=~"$job"}[$__rate_interval])) / sum(increase(x[$__range]))'
    assert queries.concrete(expr, job="backend", rate_interval="30s", range_="2h") == (
        'sum(rate(x{job=~"backend"}[30s])) / sum(increase(x[2h]))'
    )


def test_concrete_rejects_a_variable_it_does_not_know() -> None:
    with pytest.raises(ValueError, match=r"'\$__interval'"):
        queries.concrete("rate(x[$__interval])")


def test_query_kinds_separate_own_slo_and_third_party_queries() -> None:
    kinds = {(query.panel, query.kind) for query in QUERIES}
    assert ("Request rate", "own") in kinds
    assert ("SLO objectives", "slo") in kinds
    assert ("Consumer lag by service and topic", "thirdparty") in kinds
