"""`todo-obs test-alerts`: synthetic alerts through a running Alertmanager (API v2)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from todo_observability.exceptions import ConfigurationError

if TYPE_CHECKING:
    import httpx

__all__ = ["add_parser", "run"]

ALERTNAME = "TodoObsTestAlert"
# The four cases and their labels: three by severity, and an SLO breach (routed by `category="slo"`).
CASES: dict[str, dict[str, str]] = {
    "critical": {"severity": "critical", "category": "service"},
    "warning": {"severity": "warning", "category": "service"},
    "info": {"severity": "info", "category": "service"},
    "slo-breach": {"severity": "critical", "category": "slo", "slo": "availability"},
}
POLL_INTERVAL = 0.2
EPILOG = """\
exit status: 0 every alert was routed; 1 an alert was not seen in time, or the Alertmanager could not
be reached or refused the alerts; 2 the arguments are wrong.

The alerts really notify their receivers (PagerDuty, Slack, e-mail) once their route's group_wait has
passed: resolving them at once (the default) usually ends them before that. Use --hold or --keep to
see the notifications arrive.
"""


def add_parser(subcommands: Any) -> None:
    """Register `test-alerts` on the `todo-obs` subcommands."""
    command = subcommands.add_parser(
        "test-alerts",
        help="post synthetic alerts to an Alertmanager and report where each was routed",
        description="Post four synthetic alerts (critical, warning, info, SLO breach) to an "
        "Alertmanager's API v2, report the receivers each one landed in, then resolve them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument(
        "--alertmanager",
        metavar="URL",
        default=os.environ.get("TODO_OBS_ALERTMANAGER_URL") or None,
        help="the Alertmanager's base URL, e.g. http://127.0.0.1:9093 "
        "(default: $TODO_OBS_ALERTMANAGER_URL)",
    )
    command.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=30.0,
        metavar="S",
        help="seconds to wait for the alerts to be routed, and per HTTP call (%(default)s)",
    )
    command.add_argument(
        "--hold",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="keep the alerts firing S seconds before resolving them, so that the receivers are "
        "notified (%(default)s)",
    )
    command.add_argument("--json", action="store_true", help="print the report as JSON")
    command.add_argument(
        "--keep",
        action="store_true",
        help="do not resolve the alerts; Alertmanager ends them after its resolve_timeout",
    )
    command.set_defaults(run=run)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def base_url(url: str | None) -> str:
    """The Alertmanager base URL without a trailing slash; a ConfigurationError if it is not one.

    Args:
        url: What was given with `--alertmanager` (or `$TODO_OBS_ALERTMANAGER_URL`).

    Raises:
        ConfigurationError: No URL, or not an absolute http(s) URL.
    """
    if not url:
        raise ConfigurationError(
            "test-alerts needs the Alertmanager's URL: pass --alertmanager http://HOST:9093 "
            "or set TODO_OBS_ALERTMANAGER_URL.",
            field="alertmanager",
            env_var="TODO_OBS_ALERTMANAGER_URL",
        )
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigurationError(
            f"--alertmanager must be an http(s) base URL like http://127.0.0.1:9093, got {url!r}.",
            field="alertmanager",
            value=url,
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a port out of range or not a number
    except ValueError:
        raise ConfigurationError(
            f"--alertmanager has an invalid port, got {url!r}.", field="alertmanager", value=url
        ) from None
    return url.rstrip("/")


@dataclass
class Case:
    """One synthetic alert and what the Alertmanager made of it."""

    name: str
    labels: dict[str, str]
    receivers: list[str] = field(default_factory=list)
    state: str = "not seen"
    suppressed_by: list[str] = field(default_factory=list)

    @property
    def seen(self) -> bool:
        """Whether the alert was found in at least one aggregation group."""
        return bool(self.receivers)


class AlertmanagerError(Exception):
    """The Alertmanager could not be reached or answered something unexpected."""


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _cases(test_run: str) -> list[Case]:
    return [
        Case(
            name,
            {"alertname": ALERTNAME, "test_case": name, "test_run": test_run, **labels},
        )
        for name, labels in CASES.items()
    ]


def _body(cases: list[Case], started: datetime.datetime, ends: datetime.datetime | None) -> Any:
    alerts = []
    for case in cases:
        alert: dict[str, Any] = {
            "labels": case.labels,
            "annotations": {
                "summary": f"Synthetic {case.name} alert from todo-obs test-alerts: no action needed",
                "description": "Checks that this alert reaches its receiver. It is resolved "
                "by the command that sent it.",
            },
            "startsAt": started.isoformat(),
        }
        if ends is not None:
            alert["endsAt"] = ends.isoformat()
        alerts.append(alert)
    return alerts


def _send(http: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    import httpx

    try:
        return http.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise AlertmanagerError(
            f"cannot reach the Alertmanager at {url}: {str(exc) or type(exc).__name__} "
            "(is it running, and is --alertmanager right?)"
        ) from None


def _request(http: httpx.Client, method: str, url: str, **kwargs: Any) -> Any:
    return _decode(_send(http, method, url, **kwargs))


def _post_alerts(http: httpx.Client, base: str, alerts: Any) -> None:
    # A 200 with an empty body: Alertmanager has taken the alerts.
    _check(_send(http, "POST", f"{base}/api/v2/alerts", json=alerts))


def _check(response: httpx.Response) -> None:
    if response.status_code != 200:
        request = response.request
        raise AlertmanagerError(
            f"{request.method} {request.url} answered {response.status_code}: "
            f"{response.text.strip()[:300]}"
        )


def _decode(response: httpx.Response) -> Any:
    _check(response)
    method, url = response.request.method, response.request.url
    try:
        return response.json()
    except ValueError:
        raise AlertmanagerError(
            f"{method} {url} did not answer JSON: is this an Alertmanager?"
        ) from None


def _version(http: httpx.Client, base: str) -> str:
    url = f"{base}/api/v2/status"
    response = _send(http, "GET", url)
    if response.status_code == 404:
        raise AlertmanagerError(
            f"{url} answered 404: {base} is not an Alertmanager with API v2 "
            "(check --alertmanager, including any --web.route-prefix path)"
        )
    status = _decode(response)
    if not isinstance(status, dict) or not isinstance(status.get("versionInfo"), dict):
        raise AlertmanagerError(f"{url} is not an Alertmanager status: {str(status)[:200]}")
    return str(status["versionInfo"].get("version", "unknown"))


def _observe(http: httpx.Client, base: str, cases: list[Case], test_run: str) -> bool:
    """Fill each case from the groups; True once every alert is in every group it routes to."""
    selector = {"filter": f'test_run="{test_run}"'}
    groups = _request(http, "GET", f"{base}/api/v2/alerts/groups", params=selector)
    # `receivers` of an alert is where the configuration routes it; the groups are where the
    # dispatcher has put it. Both must agree before the report is final.
    alerts = _request(http, "GET", f"{base}/api/v2/alerts", params=selector)
    landed: dict[str, set[str]] = {}
    for group in groups:
        for alert in group.get("alerts", []):
            name = alert.get("labels", {}).get("test_case")
            landed.setdefault(name, set()).add(group["receiver"]["name"])
    routed = {
        alert["labels"].get("test_case"): {r["name"] for r in alert.get("receivers", [])}
        for alert in alerts
    }
    statuses = {alert["labels"].get("test_case"): alert.get("status", {}) for alert in alerts}
    for case in cases:
        case.receivers = sorted(landed.get(case.name, ()))
        status = statuses.get(case.name)
        if status and case.receivers:
            case.state = status.get("state", "unknown")
            case.suppressed_by = [
                *(f"silence {s}" for s in status.get("silencedBy", [])),
                *(f"inhibited by {a}" for a in status.get("inhibitedBy", [])),
            ]
    return all(c.seen and set(c.receivers) == routed.get(c.name) for c in cases)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Post, observe and resolve the synthetic alerts; the exit status (0 routed, 1 not)."""
    base = base_url(args.alertmanager)
    import httpx

    test_run = uuid.uuid4().hex[:12]
    cases = _cases(test_run)
    started = _utcnow()
    resolved = False
    with httpx.Client(timeout=args.timeout) as http:
        try:
            version = _version(http, base)
            _post_alerts(http, base, _body(cases, started, None))
        except AlertmanagerError as exc:
            out.write(f"test-alerts: {exc}\n")
            return 1
        try:
            deadline = time.monotonic() + args.timeout
            while not _observe(http, base, cases, test_run) and time.monotonic() < deadline:
                time.sleep(POLL_INTERVAL)
            if args.hold and not args.keep:
                time.sleep(args.hold)
        except AlertmanagerError as exc:
            out.write(f"test-alerts: {exc}\n")
        finally:
            # Resolve even when observing failed: synthetic alerts must not linger and page.
            if not args.keep:
                try:
                    _post_alerts(http, base, _body(cases, started, _utcnow()))
                    resolved = True
                except AlertmanagerError as exc:
                    out.write(f"test-alerts: could not resolve the test alerts: {exc}\n")
    _report(
        out, args, base=base, version=version, test_run=test_run, cases=cases, resolved=resolved
    )
    return 0 if all(case.seen for case in cases) else 1


def _report(
    out: TextIO,
    args: argparse.Namespace,
    *,
    base: str,
    version: str,
    test_run: str,
    cases: list[Case],
    resolved: bool,
) -> None:
    if args.json:
        report = {
            "alertmanager": base,
            "version": version,
            "test_run": test_run,
            "alerts": [
                {
                    "case": case.name,
                    "labels": case.labels,
                    "routed": case.seen,
                    "receivers": case.receivers,
                    "state": case.state,
                    "suppressed_by": case.suppressed_by,
                }
                for case in cases
            ],
            "resolved": resolved,
        }
        out.write(json.dumps(report, indent=2) + "\n")
        return
    out.write(f"Alertmanager {version} at {base}, test_run={test_run}\n")
    for case in cases:
        where = ", ".join(case.receivers) if case.seen else f"NOT ROUTED within {args.timeout:g}s"
        note = f"  ({case.state}: {'; '.join(case.suppressed_by)})" if case.suppressed_by else ""
        out.write(f"  {case.name:<11} -> {where}{note}\n")
    if resolved:
        out.write(f"resolved {len(cases)} test alerts\n")
    elif args.keep:
        out.write(
            f"kept {len(cases)} test alerts firing; they end after the Alertmanager's "
            f'resolve_timeout (silence or find them with test_run="{test_run}")\n'
        )
