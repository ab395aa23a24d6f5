"""`./dev demo --faults`: the demo's own Prometheus and Alertmanager, on a real local run.

The test runs the command developers run (`python -m reference_app --faults --keep-running`,
on free ports) and reads what it printed and what its Prometheus holds: every target up and no
alert pending or firing on the healthy run; then SMTP down until `HealthCheckFailing` fires and
Alertmanager routes it to its receiver, whose notification the alert sink keeps. With that run
behind it, every query of every dashboard returns data from the demo's Prometheus, except those
on the series only a cluster has (`thirdparty.CLUSTER_ONLY`), which return none.

About four minutes: `HealthCheckFailing` waits its `for: 2m` before it fires.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from reference_app import run
from reference_app.common import events
from reference_app.ops import queries, rules, thirdparty
from tests.helpers import eventually
from tests.reference_app.harness import ROOT, free_layout
from todo_observability.testing.sidecar.metrics import SOURCES

pytestmark = pytest.mark.slow


@dataclass
class Demo:
    layout: run.Layout
    process: subprocess.Popen[str]
    report: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.layout.prometheus_port}/api/v1/query"
        body = httpx.get(url, params={"query": expr}, timeout=30).json()
        assert body.get("status") == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def section(self, title: str) -> str:
        """The report's lines from the heading `title` to the next heading."""
        match = re.search(rf"^{re.escape(title)}.*?(?=^\S|\Z)", self.report, re.M | re.S)
        assert match, f"no section {title!r} in:\n{self.report}"
        return match.group(0)


def children_of(pid: int) -> list[int]:
    """The pids of `pid`'s child processes (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid):
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    data = tmp_path_factory.mktemp("demo") / "data"
    layout = free_layout(data, monitoring=True)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "reference_app", "--data", str(data),
            "--base-port", str(layout.services[events.FRONTEND].port),
            "--faults", "--keep-running",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if line.startswith("Running.") or not line:
            break
    report = "".join(lines)
    try:
        assert lines[-1].startswith("Running."), report
        children = children_of(process.pid)
        yield Demo(layout, process, report)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=90)
    # Stopped by `kill <pid>`: every process it started has exited.
    assert process.returncode == 0, report + rest
    assert rest.rstrip().endswith("Stopped: every process exited, spans flushed."), rest
    assert len(children) == 9  # SMTP sink, sidecars, 4 services, Prometheus, Alertmanager, sink
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_the_report_shows_every_target_up_and_no_alert_on_the_healthy_run(demo: Demo) -> None:
    monitoring = demo.section("Monitoring")
    targets = re.findall(r"^  (\w+) +([\w-]+) +(http://\S+)$", monitoring, re.M)
    jobs = [job for _, job, _ in targets]
    assert sorted(jobs) == sorted(
        [*demo.layout.services, *[rules.SIDECAR_JOB] * 4, rules.KAFKA_EXPORTER_JOB]
    ), monitoring
    assert {health for health, _, _ in targets} == {"up"}, monitoring
    loaded = sum(1 for group in rules.groups() for rule in group["rules"] if "alert" in rule)
    assert f"alerts: {loaded} alerting rules loaded; firing: none; pending: none" in monitoring


def test_the_fault_fires_an_alert_that_reaches_its_receiver(demo: Demo) -> None:
    fault = demo.section("Fault: the SMTP server is down")
    assert "✓ the reminder fails, is retried, then parked" in fault
    assert "HealthCheckFailing (warning, job=notification-service, check=smtp)" in fault
    # The committed routing sends a warning outside the special routes to this receiver.
    receiver = "slack-todo-alerts-warnings"
    assert f"receiver {receiver} got HealthCheckFailing" in fault
    kept = [
        json.loads(line)
        for line in (demo.layout.alerts / f"{receiver}.jsonl").read_text().splitlines()
    ]
    firing = [k for k in kept if k["notification"]["status"] == "firing"]
    assert firing, kept
    labels = firing[0]["notification"]["alerts"][0]["labels"]
    assert (labels["alertname"], labels["check"]) == ("HealthCheckFailing", "smtp")
    assert "✓ the reminder e-mail arrives" in fault  # replayed once SMTP was back


def test_the_urls_and_graph_links_of_the_report_work(demo: Demo) -> None:
    opened = demo.section("Open")
    for url in re.findall(r"http://127\.0\.0\.1:\d+/metrics", opened):
        assert httpx.get(url, timeout=10).status_code == 200, url
    graphs = demo.section("Graphs of the RED and SLO panels")
    links = re.findall(r"^    (http://\S+)$", graphs, re.M)
    panels = {
        (q.dashboard, q.panel)
        for q in queries.queries()
        if q.dashboard in ("todo-service-red", "todo-slos")
    }
    assert len(links) == len(panels), graphs
    for link in links:
        # Debian's Prometheus serves its classic UI: /graph redirects there, the query kept.
        page = httpx.get(link, timeout=10, follow_redirects=True)
        assert page.status_code == 200, link
        assert "g0.expr=" in str(page.url), page.url
        params = urllib.parse.parse_qs(urllib.parse.urlparse(link).query)
        exprs = [value[0] for key, value in params.items() if key.endswith(".expr")]
        assert exprs, link
        for expr in exprs:
            assert demo.query(expr), f"{link}: {expr} returns nothing"


@pytest.fixture(scope="module")
def scraped(demo: Demo) -> Demo:
    """The demo's run, plus a publish the broker refuses (the one failure the run lacks) and
    two state reads."""
    sidecar = f"http://127.0.0.1:{demo.layout.services[events.BACKEND].dapr_port}"
    fault = httpx.post(f"{sidecar}/emulator/v1/faults/publish", json={"count": 1}, timeout=10)
    assert fault.status_code == 204, fault.text
    refused = httpx.post(f"{sidecar}/v1.0/publish/pubsub/probe", json={"n": 1}, timeout=10)
    assert refused.status_code == 500, refused.text
    eventually(
        lambda: demo.query('dapr_component_pubsub_egress_count{success="false"}'),
        30,
        "the refused publish to be scraped",
    )
    # The run completed one recurring task, before recurring-task-service's histogram was
    # scraped twice: bob completes one more, so the next-occurrence panels have a rate.
    with httpx.Client(base_url=demo.layout.services[events.FRONTEND].url, timeout=30) as browser:
        assert browser.post("/login", data={"user_id": "bob"}).status_code < 400
        created = browser.post(
            "/api/tasks", json={"title": "Water the plants", "recurrence": "DAILY"}
        )
        assert created.status_code == 201, created.text
        done = browser.post(f"/api/tasks/{created.json()['id']}/complete")
        assert done.status_code == 200, done.text
    eventually(
        lambda: demo.query("sum(recurring_next_occurrences_total) >= 2"),
        30,
        "the second next occurrence to be scraped",
    )
    # recurring-task-service reads its state store only when a task is completed, which the
    # run did once, before its series could be scraped twice: read it twice, scrapes apart.
    # (A rate needs an increase between two scrapes: a counter's first sample is its birth.)
    state = f"http://127.0.0.1:{demo.layout.services[events.RECURRING].dapr_port}"
    for _ in range(2):
        read = httpx.get(f"{state}/v1.0/state/statestore/probe", timeout=10)
        assert read.status_code == 204, read.text
        time.sleep(6)
    return demo


def _has_data(result: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(sample["value"][1])) for sample in result)


def _cluster_only(query: queries.Query) -> bool:
    return any(thirdparty.base_name(name) in thirdparty.CLUSTER_ONLY for name in query.metrics)


QUERIES = queries.queries()


@pytest.mark.parametrize(
    "query", QUERIES, ids=[f"{q.dashboard}:{q.panel}:{q.ref_id}" for q in QUERIES]
)
def test_every_dashboard_query_returns_data_but_the_cluster_only_ones(
    scraped: Demo, query: queries.Query
) -> None:
    expr = query.concrete(rate_interval="5m", range_="1h")
    if _cluster_only(query):
        assert not _has_data(scraped.query(expr)), f"{expr}: a cluster-only series has local data"
    else:
        assert _has_data(scraped.query(expr)), f"{query.dashboard} / {query.panel}: no data: {expr}"


def test_every_third_party_metric_is_served_locally_or_documented_as_cluster_only() -> None:
    served = {thirdparty.base_name(name) for name in SOURCES}
    assert served <= set(thirdparty.THIRD_PARTY), served - set(thirdparty.THIRD_PARTY)
    for name in served:
        assert thirdparty.THIRD_PARTY[name].source in ("dapr", "kafka_exporter"), name
    missing = (
        set(thirdparty.THIRD_PARTY)
        - served
        - thirdparty.CLUSTER_ONLY
        - thirdparty.NOT_EMULATED
        - {"up"}
    )
    assert not missing, f"neither emulated nor listed as cluster-only: {sorted(missing)}"
    assert not thirdparty.CLUSTER_ONLY & served


def test_no_alert_but_the_faults_own_fires_after_the_run(scraped: Demo) -> None:
    firing = {s["metric"]["alertname"] for s in scraped.query('ALERTS{alertstate="firing"}')}
    # SMTP is back, so HealthCheckFailing resolves at its next evaluation; nothing else may fire.
    assert firing <= {"HealthCheckFailing"}, firing
    assert scraped.query("kafka_brokers == 1"), "the Kafka exporter reports no broker"
