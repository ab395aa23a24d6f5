"""The local run's monitoring: a real Prometheus and Alertmanager, and what the report shows of them.

`start_monitoring` starts, on loopback, the alert sink (`reference_app.alert_sink`), Alertmanager
(Debian `prometheus-alertmanager`: clustering off, the committed routing with every receiver a
webhook to the sink, see `reference_app.ops.rules.local_alertmanager_config`) and Prometheus
(Debian `prometheus`: the generated rules, every service, sidecar and the Kafka exporter as
targets). Their configuration files and data live in `<data>/monitoring/`.

`show_monitoring` reports every target's health, the alerts (pending and firing), the URLs to
open and graph links for the RED and SLO panels; `drive_smtp_fault` takes the SMTP sink down
until an alert fires and shows the receiver that got its notification.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from reference_app import alert_sink
from reference_app.ops import rules

if TYPE_CHECKING:
    from reference_app.run import Layout, System

__all__ = [
    "GRAPH_DASHBOARDS",
    "Target",
    "alerts",
    "binaries",
    "drive_smtp_fault",
    "graph_links",
    "show_monitoring",
    "start_monitoring",
    "targets",
]

GRAPH_DASHBOARDS = ("service-red", "slos")
"""The dashboards whose panels the report links to as Prometheus graphs (their committed JSON in
`reference_app/deploy/monitoring/grafana/dashboards/`, read as is: running the demo needs no
dashboard generator)."""
DASHBOARDS = rules.DEPLOY / "monitoring" / "grafana" / "dashboards"

_INSTALL = (
    "{binary} is not installed: install the Debian package {package} "
    "(`sudo apt-get install {package}`; `./dev demo` installs it when it can), "
    "or run without monitoring: --no-monitoring."
)


def binaries() -> tuple[str, str]:
    """The paths of `prometheus` and `prometheus-alertmanager`.

    Raises:
        SystemExit: one is missing; the message says how to install it.
    """
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        raise SystemExit(_INSTALL.format(binary="prometheus", package="prometheus"))
    alertmanager = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if alertmanager is None:
        raise SystemExit(
            _INSTALL.format(binary="prometheus-alertmanager", package="prometheus-alertmanager")
        )
    return prometheus, alertmanager


def _shown(path: Path) -> str:
    from reference_app.run import _shown as shown

    return shown(path)


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def start_monitoring(layout: Layout, system: System, out: TextIO) -> None:
    """Write the configurations, start the alert sink, Alertmanager and Prometheus; wait for them.

    Call it once the services are ready: as in Kubernetes, where a ServiceMonitor's targets are
    the ready endpoints of a Service, a service still starting is not yet a target (its failed
    scrapes would count against the availability SLO).
    """
    from reference_app.run import wait_until

    prometheus, alertmanager = binaries()
    folder = layout.data / "monitoring"
    folder.mkdir(parents=True, exist_ok=True)
    sink = _url(layout.alert_sink_port)
    (folder / "alertmanager.yml").write_text(
        rules.dump(rules.local_alertmanager_config(sink)), encoding="utf-8"
    )
    config = rules.local_prometheus_config(
        {service.app_id: service.port for service in layout.services.values()},
        str(rules.RULES),
        sidecar_metrics_ports=[service.metrics_port for service in layout.services.values()],
        kafka_exporter_port=layout.kafka_exporter_port,
        alertmanager=f"127.0.0.1:{layout.alertmanager_port}",
    )
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
    env = dict(os.environ)
    system.start(
        "alert-sink",
        [
            sys.executable, "-m", "reference_app.alert_sink",
            "--port", str(layout.alert_sink_port), "--dir", str(layout.alerts),
        ],
        env,
    )  # fmt: skip
    system.start(
        "alertmanager",
        [
            alertmanager,
            f"--config.file={folder / 'alertmanager.yml'}",
            f"--storage.path={folder / 'alertmanager'}",
            f"--web.listen-address=127.0.0.1:{layout.alertmanager_port}",
            f"--web.external-url={_url(layout.alertmanager_port)}",
            "--cluster.listen-address=",  # empty: no gossip, no peers
        ],
        env,
    )
    system.start(
        "prometheus",
        [
            prometheus,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{layout.prometheus_port}",
            f"--web.external-url={_url(layout.prometheus_port)}",
        ],
        env,
    )
    for name, port in (
        ("alertmanager", layout.alertmanager_port),
        ("prometheus", layout.prometheus_port),
    ):
        wait_until(f"{name} ready", functools.partial(_ready, port), system, 60, out)


def _ready(port: int) -> bool:
    import httpx

    return bool(httpx.get(f"{_url(port)}/-/ready", timeout=2.0).status_code == 200)


def _get(url: str, **params: str) -> Any:
    import httpx

    response = httpx.get(url, params=params, timeout=10.0)
    response.raise_for_status()
    return response.json()


@dataclass(frozen=True)
class Target:
    """One scrape target as Prometheus sees it."""

    job: str
    url: str
    health: str
    error: str


def targets(layout: Layout) -> list[Target]:
    """Prometheus' active targets, by job and URL."""
    body = _get(f"{_url(layout.prometheus_port)}/api/v1/targets", state="active")
    return sorted(
        (
            Target(t["labels"]["job"], t["scrapeUrl"], t["health"], t.get("lastError", ""))
            for t in body["data"]["activeTargets"]
        ),
        key=lambda t: (t.job, t.url),
    )


def expected_targets(layout: Layout) -> int:
    """How many targets the configuration names: four services, four sidecars, the exporter."""
    return 2 * len(layout.services) + 1


def alerts(layout: Layout) -> list[dict[str, Any]]:
    """Prometheus' alerts now, pending and firing (`GET /api/v1/alerts`)."""
    found: list[dict[str, Any]] = _get(f"{_url(layout.prometheus_port)}/api/v1/alerts")["data"][
        "alerts"
    ]
    return found


def alerting_rules(layout: Layout) -> int:
    """How many alerting rules Prometheus has loaded."""
    body = _get(f"{_url(layout.prometheus_port)}/api/v1/rules", type="alert")
    return sum(len(group["rules"]) for group in body["data"]["groups"])


def graph_link(layout: Layout, exprs: list[str], range_input: str = "30m") -> str:
    """A Prometheus graph page showing `exprs`, one graph each."""
    params: dict[str, str] = {}
    for index, expr in enumerate(exprs):
        params[f"g{index}.expr"] = expr
        params[f"g{index}.tab"] = "0"
        params[f"g{index}.range_input"] = range_input
    return f"{_url(layout.prometheus_port)}/graph?{urllib.parse.urlencode(params)}"


def _concrete(expr: str) -> str:
    """A panel query with Grafana's variables replaced as the report's graphs show it."""
    return expr.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$job", ".+")


def graph_links(layout: Layout) -> list[tuple[str, str]]:
    """(dashboard / panel, link) for each panel of the RED and SLO dashboards."""
    import json

    links = []
    for name in GRAPH_DASHBOARDS:
        model = json.loads((DASHBOARDS / f"{name}.json").read_text(encoding="utf-8"))
        panels = []
        for panel in model.get("panels", []):
            panels.append(panel)
            panels.extend(panel.get("panels", []))
        for panel in panels:
            exprs: list[str] = []
            for target in panel.get("targets", []):
                expr = _concrete(target["expr"])
                if expr not in exprs:
                    exprs.append(expr)
            if exprs:
                links.append((f"{model['title']} / {panel['title']}", graph_link(layout, exprs)))
    return links


def _describe(alert: dict[str, Any]) -> str:
    labels = alert["labels"]
    where = ", ".join(
        f"{key}={labels[key]}" for key in ("job", "check", "app_id", "topic") if key in labels
    )
    return f"{labels['alertname']} ({labels.get('severity', '?')}{', ' + where if where else ''})"


def show_monitoring(layout: Layout, system: System, out: TextIO) -> None:
    """Every target's health, the alerts, the URLs to open and the graph links."""
    from reference_app.run import wait_until

    out.write("\nMonitoring (Prometheus scrapes every 5 s)\n")
    wanted = expected_targets(layout)

    def all_up() -> bool:
        found = targets(layout)
        return len(found) == wanted and all(t.health == "up" for t in found)

    wait_until(f"Prometheus scrapes all {wanted} targets", all_up, system, 60, out)
    # A rule evaluated before the first scrapes (ServiceDown on absent(up)) may still be
    # pending: the state shown is the one after two evaluations on the scraped data.
    time.sleep(2 * 5 + 1)
    system.check_alive()
    for target in targets(layout):
        error = f"  ({target.error})" if target.error else ""
        out.write(f"  {target.health:<5} {target.job:<24} {target.url}{error}\n")
    current = alerts(layout)
    firing = [a for a in current if a["state"] == "firing"]
    pending = [a for a in current if a["state"] == "pending"]
    out.write(
        f"  alerts: {alerting_rules(layout)} alerting rules loaded; "
        f"firing: {', '.join(map(_describe, firing)) or 'none'}; "
        f"pending: {', '.join(map(_describe, pending)) or 'none'}\n"
    )
    out.write("\nOpen\n")
    out.write(f"  {'Prometheus':<31} {_url(layout.prometheus_port)}/targets   /alerts   /graph\n")
    out.write(f"  {'Alertmanager':<31} {_url(layout.alertmanager_port)}\n")
    out.write(
        f"  {'alert sink':<31} {_url(layout.alert_sink_port)}   notifications in "
        f"{_shown(layout.alerts)}/<receiver>.jsonl\n"
    )
    for service in layout.services.values():
        out.write(
            f"  {service.app_id + ' sidecar':<31} "
            f"http://127.0.0.1:{service.metrics_port}/metrics (daprd's metrics)\n"
        )
    out.write(
        f"  {'kafka exporter':<31} http://127.0.0.1:{layout.kafka_exporter_port}/metrics "
        "(kafka_exporter's metrics of the broker)\n"
    )
    out.write("\nGraphs of the RED and SLO panels\n")
    for title, link in graph_links(layout):
        out.write(f"  {title}\n    {link}\n")


FAULT_TITLE = "Renew the passport"
"""The task whose reminder falls due while the SMTP server is down."""


def _parked(url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = _get(f"{url}/dapr/dead-letters")["parked"]
    return found


def drive_smtp_fault(layout: Layout, system: System, out: TextIO) -> dict[str, Any]:
    """The SMTP server down while a reminder falls due, until an alert fires and is routed.

    The reminder's e-mail fails, its job trigger is retried, then parked; notification-service's
    `smtp` check fails, `HealthCheckFailing` fires after its `for: 2m` and Alertmanager routes
    it to its receiver, whose notification the alert sink keeps. Then the SMTP server comes back
    and the parked reminder is replayed: the e-mail arrives.

    Returns:
        The notification the alert sink kept.
    """
    from datetime import datetime, timedelta, timezone

    import httpx

    from reference_app import run, smtp_sink
    from reference_app.common import events

    notifications = layout.services[events.NOTIFICATIONS].url
    out.write("\nFault: the SMTP server is down while a reminder falls due\n")
    kept = len(alert_sink.notifications(layout.alerts))
    parked_before = {item["park_id"] for item in _parked(notifications)}
    mail_before = set(smtp_sink.messages(layout.mail))
    sink = system.processes.pop("smtp-sink")
    sink.terminate()
    sink.wait(timeout=10)
    out.write(f"  ✗ smtp sink stopped (127.0.0.1:{layout.smtp_port} refuses connections)\n")
    found: dict[str, Any] = {}
    with httpx.Client(base_url=layout.services[events.FRONTEND].url, timeout=30.0) as browser:
        signed_in = browser.post("/login", data={"user_id": "alice"})
        if signed_in.status_code >= 400:
            raise SystemExit(f"sign-in failed: {signed_in.status_code} {signed_in.text[:300]}")
        due_at = datetime.now(timezone.utc) + timedelta(minutes=15, seconds=3)
        created = browser.post(
            "/api/tasks",
            json={"title": FAULT_TITLE, "due_at": due_at.isoformat(), "remind_minutes_before": 15},
        )
        if created.status_code != 201:
            raise SystemExit(f"creating the task failed: {created.status_code} {created.text}")
    out.write(
        f"  ✓ created task {created.json()['id']} {FAULT_TITLE!r}, reminder in a few seconds\n"
    )

    def parked() -> bool:
        new = [item for item in _parked(notifications) if item["park_id"] not in parked_before]
        if new:
            found["parked"] = new[0]
        return bool(new)

    def firing() -> bool:
        active = [a for a in alerts(layout) if a["state"] == "firing"]
        if active:
            found["alert"] = active[0]
        return bool(active)

    def notified() -> bool:
        for item in alert_sink.notifications(layout.alerts)[kept:]:
            if item["notification"].get("status") == "firing":
                found["notification"] = item
                return True
        return False

    def mailed() -> bool:
        for path in smtp_sink.messages(layout.mail):
            if path not in mail_before and FAULT_TITLE in path.read_text(errors="replace"):
                found["mail"] = path
                return True
        return False

    try:
        run.wait_until("the reminder fails, is retried, then parked", parked, system, 90, out)
        item = found["parked"]
        out.write(
            f"    parked {item['park_id']}: {item.get('reason')} ({item.get('detail', '')})\n"
        )
        # HealthCheckFailing waits 2 minutes (`for: 2m`) before it fires.
        run.wait_until("an alert fires", firing, system, 240, out, every=30)
        alert = found["alert"]
        out.write(f"    {_describe(alert)}: {alert['annotations']['summary']}\n")
        run.wait_until("Alertmanager notifies its receiver", notified, system, 60, out)
    finally:
        system.start(
            "smtp-sink",
            [
                sys.executable, "-m", "reference_app.smtp_sink",
                "--port", str(layout.smtp_port), "--dir", str(layout.mail),
            ],
            run.base_env(layout),
        )  # fmt: skip
    notification: dict[str, Any] = found["notification"]
    names = sorted(
        {a["labels"]["alertname"] for a in notification["notification"].get("alerts", [])}
    )
    out.write(
        f"    receiver {notification['receiver']} got {', '.join(names)} "
        f"(kept in {run._shown(layout.alerts / (notification['receiver'] + '.jsonl'))})\n"
    )
    out.write("  ✓ smtp sink started again\n")
    run.wait_until(
        "notification-service ready again", lambda: run.ready(notifications), system, 60, out
    )
    replayed = httpx.post(f"{notifications}/dapr/dead-letters/replay", timeout=60.0)
    if replayed.status_code != 200:
        raise SystemExit(f"replaying the park failed: {replayed.status_code} {replayed.text}")
    out.write("  ✓ replayed the parked reminder (POST /dapr/dead-letters/replay)\n")
    run.wait_until("the reminder e-mail arrives", mailed, system, 60, out)
    out.write(f"    {run._shown(found['mail'])}\n")
    return notification
