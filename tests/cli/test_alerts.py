"""`todo-obs test-alerts`: its arguments, errors and report, against a small fake Alertmanager.

The routing itself is proven against the real Alertmanager in tests/reference_app/ops/test_alertmanager.py.
"""

from __future__ import annotations

import io
import json
import re
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tests.helpers import LoopbackServer, free_port, reply_json
from todo_observability.cli import main

RECEIVERS = {"critical": "page", "warning": "chat", "info": "mail"}


class FakeAlertmanager(LoopbackServer):
    """Just enough of API v2: status, alerts in, alerts and groups out; routes by severity/category."""

    def __init__(self) -> None:
        self.posts: list[list[dict[str, Any]]] = []
        self.hidden: set[str] = set()  # test_case values the fake never routes
        self.post_status = 200
        self.status_path = "/api/v2/status"
        self._alerts: dict[str, dict[str, Any]] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                if url.path == fake.status_path:
                    self.reply(200, {"versionInfo": {"version": "9.9.9-fake"}, "config": {}})
                elif url.path == "/api/v2/alerts":
                    self.reply(200, fake.alerts(query))
                elif url.path == "/api/v2/alerts/groups":
                    self.reply(200, fake.groups(query))
                else:
                    self.reply(404, "not found")

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                fake.posts.append(body)
                if fake.post_status != 200:
                    self.reply(fake.post_status, {"code": 400, "message": "labels are invalid"})
                    return
                for alert in body:
                    fake._alerts[json.dumps(alert["labels"], sort_keys=True)] = alert
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def reply(self, status: int, body: Any) -> None:
                reply_json(self, status, body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        super().__init__(Handler)
        self.start()

    def _visible(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        (selector,) = query["filter"]
        name, value = re.fullmatch(r'(\w+)="(.*)"', selector).groups()  # type: ignore[union-attr]
        return [
            {
                "labels": a["labels"],
                "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
                "receivers": [{"name": self.route(a["labels"])}],
            }
            for a in self._alerts.values()
            if a["labels"].get(name) == value
            and "endsAt" not in a
            and a["labels"]["test_case"] not in self.hidden
        ]

    @staticmethod
    def route(labels: dict[str, str]) -> str:
        return "slo" if labels.get("category") == "slo" else RECEIVERS[labels["severity"]]

    def alerts(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        return self._visible(query)

    def groups(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        alerts = self._visible(query)
        receivers = sorted({a["receivers"][0]["name"] for a in alerts})
        return [
            {
                "labels": {},
                "receiver": {"name": r},
                "alerts": [a for a in alerts if a["receivers"][0]["name"] == r],
            }
            for r in receivers
        ]


@pytest.fixture
def fake() -> Iterator[FakeAlertmanager]:
    server = FakeAlertmanager()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _no_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TODO_OBS_ALERTMANAGER_URL", raising=False)


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(["test-alerts", *argv], out), out.getvalue()


def test_reports_each_case_and_resolves_them(fake: FakeAlertmanager) -> None:
    status, output = run("--alertmanager", fake.url)
    assert status == 0, output
    lines = output.splitlines()
    assert re.fullmatch(
        rf"Alertmanager 9\.9\.9-fake at {fake.url}, test_run=[0-9a-f]{{12}}", lines[0]
    )
    assert lines[1:] == [
        "  critical    -> page",
        "  warning     -> chat",
        "  info        -> mail",
        "  slo-breach  -> slo",
        "resolved 4 test alerts",
    ]
    fired, resolved = fake.posts
    assert [a["labels"]["test_case"] for a in fired] == [
        "critical",
        "warning",
        "info",
        "slo-breach",
    ]
    assert {a["labels"]["alertname"] for a in fired} == {"TodoObsTestAlert"}
    assert fired[3]["labels"]["category"] == "slo"
    assert all("endsAt" not in a for a in fired)
    # The same alerts (labels and start) come back with an end: that is what resolves them.
    assert [(a["labels"], a["startsAt"]) for a in resolved] == [
        (a["labels"], a["startsAt"]) for a in fired
    ]
    assert all(a["endsAt"] >= a["startsAt"] for a in resolved)


def test_json_report(fake: FakeAlertmanager) -> None:
    status, output = run("--alertmanager", fake.url + "/", "--json")
    assert status == 0
    report = json.loads(output)
    assert report["alertmanager"] == fake.url
    assert report["resolved"] is True
    run_id = report["test_run"]
    assert [
        (a["case"], a["routed"], a["receivers"], a["labels"]["test_run"]) for a in report["alerts"]
    ] == [
        ("critical", True, ["page"], run_id),
        ("warning", True, ["chat"], run_id),
        ("info", True, ["mail"], run_id),
        ("slo-breach", True, ["slo"], run_id),
    ]


def test_an_alert_not_routed_in_time_fails_and_is_still_resolved(fake: FakeAlertmanager) -> None:
    fake.hidden.add("info")
    status, output = run("--alertmanager", fake.url, "--timeout", "0.5")
    assert status == 1
    assert "  info        -> NOT ROUTED within 0.5s" in output
    assert "resolved 4 test alerts" in output
    assert len(fake.posts) == 2


def test_keep_does_not_resolve(fake: FakeAlertmanager) -> None:
    status, output = run("--alertmanager", fake.url, "--keep")
    assert status == 0
    assert len(fake.posts) == 1
    assert "kept 4 test alerts firing" in output


def test_the_url_can_come_from_the_environment(
    fake: FakeAlertmanager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TODO_OBS_ALERTMANAGER_URL", fake.url)
    assert run()[0] == 0


def test_without_a_url_it_says_how_to_give_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert run()[0] == 2
    assert "pass --alertmanager http://HOST:9093 or set TODO_OBS_ALERTMANAGER_URL" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "localhost:9093",
            "must be an http(s) base URL like http://127.0.0.1:9093, got 'localhost:9093'",
        ),
        ("ftp://am:9093", "must be an http(s) base URL"),
        ("http://", "must be an http(s) base URL"),
        ("http://am:9093/?x=1", "must be an http(s) base URL"),
        ("http://am:99999", "invalid port, got 'http://am:99999'"),
    ],
)
def test_a_malformed_url_is_a_usage_error(
    url: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("--alertmanager", url)[0] == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--timeout", "0", "> 0"),
        ("--timeout", "-1", ">= 0"),
        ("--timeout", "soon", ">= 0"),
        ("--timeout", "nan", ">= 0"),
        ("--hold", "inf", ">= 0"),
    ],
)
def test_a_bad_duration_is_a_usage_error(
    option: str, value: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run("--alertmanager", "http://127.0.0.1:9093", option, value)
    assert exited.value.code == 2
    message = f"argument {option}: must be a number of seconds {expected}, got '{value}'"
    assert message in capsys.readouterr().err


def test_an_unreachable_alertmanager_is_reported() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    status, output = run("--alertmanager", url, "--timeout", "2")
    assert status == 1
    assert output.startswith(f"test-alerts: cannot reach the Alertmanager at {url}/api/v2/status: ")
    assert output.endswith("(is it running, and is --alertmanager right?)\n")


def test_a_url_that_is_not_an_alertmanager_is_reported(fake: FakeAlertmanager) -> None:
    fake.status_path = "/prefix/api/v2/status"  # as if served under --web.route-prefix=/prefix
    status, output = run("--alertmanager", fake.url)
    assert status == 1
    assert f"{fake.url}/api/v2/status answered 404: {fake.url} is not an Alertmanager" in output
    assert fake.posts == []
    assert run("--alertmanager", fake.url + "/prefix")[0] == 1  # status found, then POST 404s


def test_refused_alerts_are_reported(fake: FakeAlertmanager) -> None:
    fake.post_status = 400
    status, output = run("--alertmanager", fake.url)
    assert status == 1
    assert f"POST {fake.url}/api/v2/alerts answered 400: " in output
    assert "labels are invalid" in output


def test_help_explains_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["test-alerts", "--help"], io.StringIO())
    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    assert "exit status: 0 every alert was routed" in help_text
    assert "--alertmanager URL" in help_text
