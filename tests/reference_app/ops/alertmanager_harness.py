"""A real Alertmanager on loopback, and the sinks its receivers deliver to (HTTP and SMTP).

The committed configuration (`reference_app/deploy/monitoring/alertmanager/alertmanager.yml`) is used
as is, except for the fields in `REWRITTEN_FIELDS`, which point the real integrations (Slack,
PagerDuty Events API v2, SMTP) at sinks in this process instead of the internet.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.helpers import LoopbackServer, eventually, free_port, reply_json

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "reference_app" / "deploy" / "monitoring" / "alertmanager" / "alertmanager.yml"
# Where prometheus-operator mounts the Secret `alertmanager-receivers` (spec.secrets).
SECRETS_DIR = "/etc/alertmanager/secrets/alertmanager-receivers/"
PAGERDUTY_ROUTING_KEY = "test-routing-key-0123456789abcdef"
SLACK_SECRETS = {
    "slack-warnings-webhook-url": "/slack/warnings",
    "slack-slo-webhook-url": "/slack/slo",
    "slack-kafka-webhook-url": "/slack/kafka",
}
# Everything the tests change in the committed configuration, and why. Nothing else differs.
REWRITTEN_FIELDS = (
    "secret files: /etc/alertmanager/secrets/alertmanager-receivers/* -> files the test writes (sink URLs, a test key)",
    "global.pagerduty_url -> the HTTP sink (the Events API v2 endpoint is not a secret)",
    "global.smtp_smarthost -> the SMTP sink; global.smtp_require_tls -> false (no TLS on loopback)",
    "every route's group_wait -> 1s and group_interval -> 1s (the real 10s/1m/5m would make the "
    "suite minutes long; routing and inhibition do not depend on them)",
)
TEST_GROUP_WAIT = "1s"
TEST_GROUP_INTERVAL = "1s"
T = TypeVar("T")


# --- HTTP sink (Slack webhooks, PagerDuty Events API v2) ----------------------------------------


@dataclass(frozen=True)
class Request:
    """One POST the HTTP sink received."""

    path: str
    body: Any

    @property
    def text(self) -> str:
        """The request body as JSON text, for substring checks."""
        return json.dumps(self.body)


class HttpSink(LoopbackServer):
    """An HTTP server that answers every POST with 200 and keeps the JSON bodies, in order."""

    def __init__(self) -> None:
        self.received: list[Request] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                with sink._lock:
                    sink.received.append(Request(self.path, body))
                # PagerDuty answers 202 with a JSON status; Slack answers 200 "ok". Both are 2xx.
                status = 202 if self.path.startswith("/pagerduty") else 200
                reply_json(self, status, {"status": "success"})

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reports what it needs."""

        super().__init__(Handler)

    def requests(self, path: str) -> list[Request]:
        """The requests received on `path` so far."""
        with self._lock:
            return [request for request in self.received if request.path == path]

    def wait_for(
        self, path: str, match: Callable[[Request], bool], what: str, timeout: float = 15.0
    ) -> Request:
        """The first request on `path` that satisfies `match`, waiting for it up to `timeout`."""

        def probe() -> Request | None:
            return next((r for r in self.requests(path) if match(r)), None)

        return eventually(probe, timeout, lambda: f"{what} on {path} (received: {self.received!r})")


# --- SMTP sink ----------------------------------------------------------------------------------


class SmtpSink:
    """A real SMTP server (aiosmtpd) on loopback that keeps every message."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[EmailMessage] = []
        self._lock = threading.Lock()
        self._controller = Controller(
            self, hostname="127.0.0.1", port=self.port, server_hostname="mail.example.test"
        )

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.received.append(message)
        return "250 OK"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def wait_for(self, to: str, what: str, timeout: float = 15.0) -> EmailMessage:
        """The first message addressed `To:` `to`, waiting for it up to `timeout`."""

        def probe() -> EmailMessage | None:
            with self._lock:
                return next((m for m in self.received if m["To"] == to), None)

        return eventually(probe, timeout, f"{what}: an e-mail to {to}")


# --- Alertmanager -------------------------------------------------------------------------------


def adapted_config(
    config: Mapping[str, Any], *, secrets_dir: Path, http_sink: str, smtp_port: int
) -> dict[str, Any]:
    """The committed configuration with exactly the `REWRITTEN_FIELDS` changed for this machine."""
    text = json.dumps(config).replace(SECRETS_DIR, f"{secrets_dir}/")
    adapted: dict[str, Any] = json.loads(text)
    adapted["global"]["pagerduty_url"] = f"{http_sink}/pagerduty/v2/enqueue"
    adapted["global"]["smtp_smarthost"] = f"127.0.0.1:{smtp_port}"
    adapted["global"]["smtp_require_tls"] = False

    def shorten(route: dict[str, Any]) -> None:
        route["group_wait"] = TEST_GROUP_WAIT
        route["group_interval"] = TEST_GROUP_INTERVAL
        for child in route.get("routes", []):
            shorten(child)

    shorten(adapted["route"])
    return adapted


def write_secrets(secrets_dir: Path, http_sink: str) -> None:
    """The secret files of the committed configuration, as `kubectl create secret` would mount them."""
    secrets_dir.mkdir(parents=True, exist_ok=True)
    for name, path in SLACK_SECRETS.items():
        (secrets_dir / name).write_text(f"{http_sink}{path}\n", encoding="utf-8")
    # A trailing newline, as `--from-file` keeps it: Alertmanager must trim it.
    (secrets_dir / "pagerduty-routing-key").write_text(
        f"{PAGERDUTY_ROUTING_KEY}\n", encoding="utf-8"
    )
    (secrets_dir / "smtp-password").write_text("not-used-without-auth\n", encoding="utf-8")


def alert(
    labels: Mapping[str, str],
    *,
    summary: str = "synthetic alert",
    ends_at: datetime.datetime | None = None,
) -> dict[str, Any]:
    """One alert in the shape of `POST /api/v2/alerts`."""
    body: dict[str, Any] = {
        "labels": dict(labels),
        "annotations": {"summary": summary, "runbook_url": "https://example.com/runbook"},
    }
    if ends_at is not None:
        body["endsAt"] = ends_at.isoformat()
    return body


class Alertmanager:
    """A running `prometheus-alertmanager`: loopback only, clustering off, its own storage."""

    def __init__(self, config_file: Path, storage: Path) -> None:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            raise RuntimeError(
                "prometheus-alertmanager is not on PATH: `apt-get install prometheus-alertmanager`"
            )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = storage / "alertmanager.log"
        storage.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log.open("wb")
        self._process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.path={storage}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # empty: no gossip, no HA peers
                "--log.level=debug",
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=self.url, timeout=5.0)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Return once `/-/ready` answers 200; fail with the log if the process died first."""

        def probe() -> bool | None:
            if self._process.poll() is not None:
                raise AssertionError(f"alertmanager exited:\n{self.log.read_text()}")
            try:
                return True if self.http.get("/-/ready").status_code == 200 else None
            except httpx.TransportError:
                return None

        eventually(probe, timeout, "alertmanager to be ready")

    def post(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """Send alerts to `POST /api/v2/alerts`, as Prometheus does."""
        response = self.http.post("/api/v2/alerts", json=list(alerts))
        assert response.status_code == 200, response.text

    def alerts(self, **matchers: str) -> list[dict[str, Any]]:
        """`GET /api/v2/alerts` for alerts whose labels equal `matchers`."""
        response = self.http.get(
            "/api/v2/alerts", params=[("filter", f'{k}="{v}"') for k, v in matchers.items()]
        )
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found

    def stop(self) -> None:
        self.http.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log_file.close()


@dataclass
class Rig:
    """An Alertmanager running the adapted committed configuration, and its sinks."""

    alertmanager: Alertmanager
    http: HttpSink
    smtp: SmtpSink


@contextmanager
def running_rig(workdir: Path, *, config: Path = CONFIG) -> Iterator[Rig]:
    """Start the sinks and an Alertmanager on the committed configuration; stop all on exit."""
    http_sink = HttpSink()
    smtp_sink = SmtpSink()
    http_sink.start()
    smtp_sink.start()
    alertmanager: Alertmanager | None = None
    try:
        write_secrets(workdir / "secrets", http_sink.url)
        committed = yaml.safe_load(config.read_text(encoding="utf-8"))
        adapted = adapted_config(
            committed,
            secrets_dir=workdir / "secrets",
            http_sink=http_sink.url,
            smtp_port=smtp_sink.port,
        )
        config_file = workdir / "alertmanager.yml"
        config_file.write_text(yaml.safe_dump(adapted, sort_keys=False), encoding="utf-8")
        alertmanager = Alertmanager(config_file, workdir / "data")
        alertmanager.wait_ready()
        yield Rig(alertmanager, http_sink, smtp_sink)
    finally:
        if alertmanager is not None:
            alertmanager.stop()
        smtp_sink.stop()
        http_sink.stop()
