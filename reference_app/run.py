"""Run the whole reference system locally, drive its scenario, and show its observability.

    python -m reference_app                 # start, run the scenario, show, stop
    python -m reference_app --keep-running  # ... and leave it running to explore in a browser
    python -m reference_app --faults        # ... then take SMTP down until an alert is routed

It starts, on loopback: the Dapr sidecar emulator (one sidecar per app id, one process, each
sidecar's metrics on its own port, the broker's under kafka_exporter's names), the four services
as separate uvicorn processes, an SMTP sink that keeps received mail, SQLite files in the data
folder, and spans written as Zipkin v2 JSON to a file (also sent to Zipkin when
`--zipkin-endpoint` is given); once the services are ready, Prometheus, Alertmanager and an
alert sink (`reference_app.monitoring`; `--no-monitoring` leaves them out). The scenario: alice
creates "Daily standup at 9am" (DAILY, reminder 15 minutes before a due time 15 minutes and a
few seconds away), the reminder fires and the e-mail arrives, she completes the task and the
next occurrence appears (completing a task first would cancel its reminder). Then it shows the
completion trace as a tree, the request id found in every service's log, each service's
readiness, the key RED numbers, every Prometheus target and the alerts, the URLs to open and
graph links for the RED and SLO panels. Ctrl-C, SIGTERM (`kill`) and SIGHUP (the terminal
closed) stop everything cleanly (spans flushed, no process left behind).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from reference_app.common import events

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Service:
    """One of the four services: its app id, module and ports (its sidecar's API and metrics)."""

    app_id: str
    module: str
    port: int
    dapr_port: int
    metrics_port: int

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Layout:
    """Where everything runs and lives."""

    data: Path
    services: dict[str, Service]
    smtp_port: int
    kafka_exporter_port: int
    prometheus_port: int
    alertmanager_port: int
    alert_sink_port: int
    zipkin_endpoint: str | None = None
    monitoring: bool = False
    """Whether the run starts Prometheus, Alertmanager and the alert sink (`reference_app.monitoring`)."""
    database_url: str | None = None
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def logs(self) -> Path:
        """The folder of the processes' output."""
        return self.data / "logs"

    @property
    def mail(self) -> Path:
        """The folder where the SMTP sink keeps mail."""
        return self.data / "mail"

    @property
    def alerts(self) -> Path:
        """The folder where the alert sink keeps Alertmanager's notifications."""
        return self.data / "alerts"

    @property
    def spans(self) -> Path:
        """The span file (Zipkin v2 JSON, one array per line)."""
        return self.data / "spans.jsonl"

    @classmethod
    def at(cls, data: Path, base_port: int, zipkin_endpoint: str | None) -> Layout:
        """The default layout: services on base_port..+3, the rest shifted alike.

        At base port 8000: sidecars on 3500..3503 (their metrics on 9190..9193), SMTP on 1025,
        the Kafka exporter on 9308 (its own default), Prometheus on 9090, Alertmanager on 9093
        (theirs), the alert sink on 9099.
        """
        shift = base_port - 8000
        apps = [
            (events.FRONTEND, "reference_app.frontend"),
            (events.BACKEND, "reference_app.backend"),
            (events.RECURRING, "reference_app.recurring"),
            (events.NOTIFICATIONS, "reference_app.notifications"),
        ]
        services = {
            app_id: Service(
                app_id, module, base_port + index, 3500 + shift + index, 9190 + shift + index
            )
            for index, (app_id, module) in enumerate(apps)
        }
        return cls(
            data.resolve(),
            services,
            smtp_port=1025 + shift,
            kafka_exporter_port=9308 + shift,
            prometheus_port=9090 + shift,
            alertmanager_port=9093 + shift,
            alert_sink_port=9099 + shift,
            zipkin_endpoint=zipkin_endpoint,
        )

    def ports(self) -> list[int]:
        """Every port the system listens on (with `monitoring`, Prometheus' and the rest too)."""
        ports = [self.smtp_port, self.kafka_exporter_port]
        for service in self.services.values():
            ports += [service.port, service.dapr_port, service.metrics_port]
        if self.monitoring:
            ports += [self.prometheus_port, self.alertmanager_port, self.alert_sink_port]
        return ports


class System:
    """The running processes; stops them all, children first, on exit."""

    def __init__(self, layout: Layout, out: TextIO):
        self.layout = layout
        self.out = out
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        """Start `command` with its output in `<logs>/<name>.log`."""
        log = (self.layout.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(  # noqa: S603 - our own command lines
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # A session of its own: a Ctrl-C or a hang-up of the terminal reaches the runner
            # alone, which stops the processes in order (services before their sidecars).
            start_new_session=True,
        )
        log.close()

    def check_alive(self) -> None:
        """Raise when a process has exited, with the end of its log."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.layout.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"{name} exited with status {process.returncode}:\n{tail}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every process, then wait for it.

        Prometheus first (it would only record the shutdown), then the services, their sidecars,
        the SMTP sink, Alertmanager and the alert sink.
        """
        last = ("sidecars", "smtp-sink", "alertmanager", "alert-sink")
        order = [n for n in ("prometheus",) if n in self.processes]
        order += [n for n in self.processes if n not in (*last, "prometheus")]
        order += [n for n in last if n in self.processes]
        for name in order:
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)
            if process.poll() is None:
                process.kill()
                process.wait()


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def base_env(layout: Layout) -> dict[str, str]:
    """The environment every service shares."""
    exporters = "file,zipkin" if layout.zipkin_endpoint else "file"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "PYTHONUNBUFFERED": "1",
        "TODO_OBS_ENVIRONMENT": "dev",
        "JWT_SECRET": layout.jwt_secret,
        "OTEL_TRACES_EXPORTER": exporters,
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
        "TODO_OBS_TRACES_FILE": str(layout.spans),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(layout.smtp_port),
        "DATABASE_URL": layout.database_url or f"sqlite+aiosqlite:///{layout.data / 'backend.db'}",
    }
    if layout.zipkin_endpoint:
        env["OTEL_EXPORTER_ZIPKIN_ENDPOINT"] = layout.zipkin_endpoint
    return env


def service_env(layout: Layout, service: Service) -> dict[str, str]:
    """The environment of one service: the shared one, its ports and its dead-letter database.

    Each service parks dead letters in a SQLite file of its own in the data folder
    (`<app id>-dlq.db`); notification-service keeps there, too, the reminders it e-mailed and
    the ones cancelled. So a service stopped and started again (`start_service`) finds its
    park, and a reminder e-mailed before the restart is not e-mailed again.
    """
    return {
        **base_env(layout),
        "PORT": str(service.port),
        "DAPR_HTTP_PORT": str(service.dapr_port),
        "DLQ_DATABASE_URL": f"sqlite+aiosqlite:///{layout.data / (service.app_id + '-dlq.db')}",
    }


def start_service(system: System, app_id: str) -> None:
    """Start the service `app_id` (again, after it stopped: its log goes on in the same file)."""
    service = system.layout.services[app_id]
    command = [sys.executable, "-m", service.module]
    system.start(app_id, command, service_env(system.layout, service))


def start_system(layout: Layout, out: TextIO) -> System:
    """Start the SMTP sink, the sidecars and the four services."""
    taken = [port for port in layout.ports() if _port_taken(port)]
    if taken:
        raise SystemExit(
            f"ports already in use: {', '.join(map(str, taken))}. Stop what uses them, "
            "or move the whole system with --base-port (e.g. --base-port 9000)."
        )
    for folder in (layout.data, layout.logs, layout.mail):
        folder.mkdir(parents=True, exist_ok=True)
    system = System(layout, out)
    try:
        env = base_env(layout)
        python = sys.executable
        system.start(
            "smtp-sink",
            [
                python,
                "-m",
                "reference_app.smtp_sink",
                "--port",
                str(layout.smtp_port),
                "--dir",
                str(layout.mail),
            ],
            env,
        )
        sidecar_command = [
            python,
            "-m",
            "todo_observability.cli",
            "sidecar",
            "--retry",
            "constant:1s:3",
        ]
        for service in layout.services.values():
            sidecar_command += [
                "--app",
                f"{service.app_id}:{service.port}:{service.dapr_port}:{service.metrics_port}",
            ]
        sidecar_command += ["--kafka-exporter-port", str(layout.kafka_exporter_port)]
        sidecar_command += ["--span-file", str(layout.spans)]
        if layout.zipkin_endpoint:
            sidecar_command += ["--zipkin-endpoint", layout.zipkin_endpoint]
        system.start("sidecars", sidecar_command, env)
        for app_id in layout.services:
            start_service(system, app_id)
    except BaseException:
        # Interrupted or failed half way (a signal, a port taken meanwhile): stop what started.
        system.stop()
        raise
    return system


def wait_until(
    what: str,
    check: Callable[[], bool],
    system: System,
    timeout: float,
    out: TextIO,
    *,
    every: int = 5,
) -> float:
    """Poll `check` until it holds, showing progress every `every` seconds; the seconds it took."""
    start = time.monotonic()
    shown = 0
    while True:
        system.check_alive()
        with contextlib.suppress(Exception):
            if check():
                took = time.monotonic() - start
                out.write(f"  ✓ {what} ({took:.1f} s)\n")
                out.flush()
                return took
        waited = time.monotonic() - start
        if waited > timeout:
            raise SystemExit(
                f"gave up waiting for: {what} (after {timeout:.0f} s); see {system.layout.logs}"
            )
        if int(waited) >= shown + every:
            shown = int(waited)
            out.write(f"    … still waiting: {what} ({shown} s)\n")
            out.flush()
        time.sleep(0.2)


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def log_lines(layout: Layout, app_id: str) -> Iterator[dict[str, Any]]:
    """The JSON lines of a service's log."""
    path = layout.logs / f"{app_id}.log"
    if not path.exists():
        return
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                yield json.loads(line)


# --- the scenario ---------------------------------------------------------------------------------

TITLE = "Daily standup at 9am"


@dataclass
class Scenario:
    """What the scenario did, for the report."""

    task_id: int = 0
    next_task_id: int = 0
    create_request_id: str = ""
    complete_request_id: str = ""
    mail: Path | None = None


def ready(url: str) -> bool:
    """Whether `url`/health/ready answers 200."""
    import httpx

    return httpx.get(f"{url}/health/ready", timeout=2.0).status_code == 200


def run_scenario(layout: Layout, system: System, out: TextIO) -> Scenario:
    """Sign in as alice, create the daily task with a reminder, complete it, wait for the results."""
    from datetime import datetime, timedelta, timezone

    import httpx

    from reference_app import smtp_sink

    result = Scenario()
    frontend = layout.services[events.FRONTEND].url
    out.write("\nScenario\n")
    with httpx.Client(base_url=frontend, timeout=30.0) as browser:
        response = browser.post("/login", data={"user_id": "alice"})
        if response.status_code >= 400:
            raise SystemExit(f"sign-in failed: {response.status_code} {response.text[:300]}")
        out.write("  ✓ signed in as alice\n")
        # The mail folder outlives a run: only a message that arrives from now on is this
        # run's reminder, not one a run before left with the same subject.
        earlier = set(smtp_sink.messages(layout.mail))
        due_at = datetime.now(timezone.utc) + timedelta(minutes=15, seconds=8)
        response = browser.post(
            "/api/tasks",
            json={
                "title": TITLE,
                "due_at": due_at.isoformat(),
                "recurrence": "DAILY",
                "remind_minutes_before": 15,
                "tags": ["work"],
            },
        )
        if response.status_code != 201:
            raise SystemExit(
                f"creating the task failed: {response.status_code} {response.text[:300]}"
            )
        result.task_id = int(response.json()["id"])
        result.create_request_id = response.headers.get("x-request-id", "")
        out.write(
            f"  ✓ created task {result.task_id} {TITLE!r}: DAILY, due {due_at:%H:%M:%S} UTC, "
            "reminder 15 minutes before (so in a few seconds)\n"
        )

        def mail_arrived() -> bool:
            for path in smtp_sink.messages(layout.mail):
                if path not in earlier and TITLE in path.read_text(errors="replace"):
                    result.mail = path
                    return True
            return False

        # Before completing: completing the task would cancel its reminder.
        wait_until("the reminder e-mail arrives", mail_arrived, system, 90, out)
        assert result.mail is not None
        subject = next(
            (
                line
                for line in result.mail.read_text(errors="replace").splitlines()
                if line.startswith("Subject:")
            ),
            "",
        )
        out.write(f"    {_shown(result.mail)}: {subject}\n")

        def reminder_recorded() -> bool:
            tasks = browser.get("/api/tasks").json()
            items = tasks.get("tasks", tasks) if isinstance(tasks, dict) else tasks
            return any(t.get("id") == result.task_id and t.get("reminder_sent_at") for t in items)

        # And after notification-service told backend the reminder went out: that change's
        # event is ahead of the completion's in backend's outbox (one task's events leave in
        # order), and a completion racing it would publish from the retry loop, in a new trace.
        wait_until("backend records the reminder as sent", reminder_recorded, system, 30, out)
        response = browser.post(f"/api/tasks/{result.task_id}/complete")
        if response.status_code >= 400:
            raise SystemExit(
                f"completing the task failed: {response.status_code} {response.text[:300]}"
            )
        result.complete_request_id = response.headers.get("x-request-id", "")
        out.write(f"  ✓ completed task {result.task_id} (request {result.complete_request_id})\n")

        def next_occurrence() -> bool:
            tasks = browser.get("/api/tasks").json()
            items = tasks.get("tasks", tasks) if isinstance(tasks, dict) else tasks
            for task in items:
                if task.get("recurrence_of") == result.task_id:
                    result.next_task_id = int(task["id"])
                    return True
            return False

        wait_until("the next occurrence appears", next_occurrence, system, 60, out)
        out.write(f"    next occurrence: task {result.next_task_id}, due tomorrow\n")
    return result


# --- the report -------------------------------------------------------------------------------------


def show_trace(layout: Layout, system: System, request_id: str, out: TextIO) -> None:
    """The completion's trace as a tree, from the span file."""
    from todo_observability.ops.spans import load_spans, render_trace_tree

    trace_id = next(
        (
            line["trace_id"]
            for line in log_lines(layout, events.FRONTEND)
            if line.get("request_id") == request_id and line.get("trace_id")
        ),
        None,
    )
    out.write(f"\nThe completion's trace ({trace_id})\n")
    if trace_id is None:
        out.write("  (no log line of the frontend names this request)\n")
        return
    wanted = {events.FRONTEND, events.BACKEND, events.RECURRING}

    def complete() -> bool:
        if not layout.spans.exists():
            return False
        mine = [span for span in load_spans(layout.spans) if span.get("traceId") == trace_id]
        services = {span["localEndpoint"]["serviceName"] for span in mine}
        # Every parent there too: a sidecar exports the hop it saw before the service behind
        # it exports its batch (a span ends after its children, so its batch holds them).
        ids = {span["id"] for span in mine}
        linked = all(span["parentId"] in ids for span in mine if span.get("parentId"))
        return wanted <= services and linked

    with contextlib.suppress(SystemExit):
        wait_until("the spans of every hop are exported", complete, system, 30, out)
    spans = load_spans(layout.spans) if layout.spans.exists() else []
    for line in render_trace_tree(spans, trace_id):
        out.write(f"  {line}\n")


def show_request_ids(layout: Layout, scenario: Scenario, out: TextIO) -> None:
    """Which services logged each request id of the scenario."""
    out.write("\nOne request id across the services' logs\n")
    for label, request_id in (
        ("create (→ reminder)", scenario.create_request_id),
        ("complete (→ next occurrence)", scenario.complete_request_id),
    ):
        seen = []
        for app_id in layout.services:
            count = sum(
                1 for line in log_lines(layout, app_id) if line.get("request_id") == request_id
            )
            if count:
                seen.append(f"{app_id} ({count} lines)")
        out.write(f"  {label} {request_id}: {', '.join(seen) or 'nowhere'}\n")


def show_readiness(layout: Layout, out: TextIO) -> None:
    """Each service's /health/ready."""
    import httpx

    out.write("\nReadiness\n")
    for app_id, service in layout.services.items():
        response = httpx.get(f"{service.url}/health/ready", timeout=5.0)
        body = response.json()
        checks = ", ".join(
            f"{check.get('name', name)} {check.get('status')}" for name, check in _checks(body)
        )
        out.write(
            f"  {app_id:<24} {response.status_code} {body.get('status')} ({checks or 'no checks'})\n"
        )


def _checks(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    checks = body.get("checks", {})
    if isinstance(checks, dict):
        return [(name, value) for name, value in checks.items() if isinstance(value, dict)]
    return [(str(item.get("name")), item) for item in checks if isinstance(item, dict)]


KEY_METRICS = (
    "http_server_requests_total",
    "messaging_publish_messages_total",
    "messaging_process_messages_total",
    "messaging_duplicate_messages_total",
    "messaging_dead_letters_parked",
    "recurring_next_occurrences_total",
    "reminders_scheduled_total",
    "reminder_emails_total",
    "reminder_delivery_latency_seconds_count",
    "job_triggers_total",
)


def show_metrics(layout: Layout, out: TextIO) -> None:
    """The key RED numbers from each service's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out.write("\nKey RED numbers (/metrics)\n")
    for app_id, service in layout.services.items():
        text = httpx.get(f"{service.url}/metrics", timeout=5.0).text
        rows = []
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in KEY_METRICS and sample.value:
                    labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    rows.append(f"{sample.name}{{{labels}}} {sample.value:g}")
        out.write(f"  {app_id}\n")
        for row in rows:
            out.write(f"    {row}\n")


class Stop(Exception):
    """A signal asked the run to stop (SIGTERM or SIGHUP; Ctrl-C is KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, frame: object) -> None:
    raise Stop(signum)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Besides Ctrl-C (SIGINT), what stops the run cleanly: `kill <pid>` and a closed terminal."""


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Stop` in the main thread, as SIGINT raises KeyboardInterrupt."""
    previous = {signum: signal.signal(signum, _raise_stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _ignoring_signals() -> Iterator[None]:
    """While the processes stop: a second Ctrl-C or `kill` must not cut the stop short."""
    signums = (signal.SIGINT, *STOP_SIGNALS)
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Run the reference system; the exit status."""
    from reference_app import monitoring

    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="python -m reference_app",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=Path("data"), help="data folder (%(default)s)")
    parser.add_argument(
        "--base-port", type=int, default=8000, help="frontend port; the rest follow"
    )
    parser.add_argument(
        "--zipkin-endpoint", help="also send spans to this Zipkin /api/v2/spans URL"
    )
    parser.add_argument(
        "--database-url",
        help="backend's database (SQLAlchemy async URL; default: SQLite in the data folder)",
    )
    parser.add_argument(
        "--keep-running", action="store_true", help="leave the system running after the scenario"
    )
    parser.add_argument("--no-scenario", action="store_true", help="only start the system")
    parser.add_argument(
        "--no-monitoring",
        action="store_true",
        help="start no Prometheus, Alertmanager or alert sink",
    )
    parser.add_argument(
        "--faults",
        action="store_true",
        help="after the scenario, take the SMTP server down until an alert fires and its "
        "receiver is notified (about 2.5 minutes), then bring it back",
    )
    args = parser.parse_args(argv)
    if args.faults and (args.no_monitoring or args.no_scenario):
        parser.error(
            "--faults needs the scenario and the monitoring: drop --no-scenario and --no-monitoring"
        )
    layout = Layout.at(args.data, args.base_port, args.zipkin_endpoint)
    layout.database_url = args.database_url
    layout.monitoring = not args.no_monitoring
    if layout.monitoring:
        monitoring.binaries()  # before anything starts: say what to install
    out.write("Starting the reference todo system (Ctrl-C stops everything)\n")
    out.flush()
    system: System | None = None
    with _stop_on_signals():
        try:
            system = start_system(layout, out)
            for app_id, service in layout.services.items():
                out.write(
                    f"  {app_id:<24} {service.url}   sidecar http://127.0.0.1:{service.dapr_port}\n"
                )
            out.write(
                f"  {'smtp sink':<24} 127.0.0.1:{layout.smtp_port}   mail in {layout.mail}\n"
                f"  {'logs':<24} {layout.logs}\n  {'spans':<24} {layout.spans}\n"
            )
            if layout.monitoring:
                out.write(
                    f"  {'prometheus':<24} http://127.0.0.1:{layout.prometheus_port}\n"
                    f"  {'alertmanager':<24} http://127.0.0.1:{layout.alertmanager_port}"
                    f"   notifications in {layout.alerts}\n"
                )
            for app_id, service in layout.services.items():
                wait_until(
                    f"{app_id} ready", functools.partial(ready, service.url), system, 90, out
                )
            if layout.monitoring:
                monitoring.start_monitoring(layout, system, out)
            if not args.no_scenario:
                scenario = run_scenario(layout, system, out)
                show_trace(layout, system, scenario.complete_request_id, out)
                show_request_ids(layout, scenario, out)
                show_readiness(layout, out)
                show_metrics(layout, out)
            if layout.monitoring:
                monitoring.show_monitoring(layout, system, out)
            if args.faults:
                monitoring.drive_smtp_fault(layout, system, out)
            if args.keep_running or args.no_scenario:
                out.write(
                    f"\nRunning. Open {layout.services[events.FRONTEND].url} and sign in; "
                    "Ctrl-C (or kill, or closing the terminal) stops everything.\n"
                )
                out.flush()
                while True:
                    system.check_alive()
                    time.sleep(0.5)
        except (KeyboardInterrupt, Stop) as stop:
            why = f" ({stop})" if isinstance(stop, Stop) else ""
            out.write(f"\nStopping{why}…\n")
        finally:
            with _ignoring_signals():
                if system is not None:
                    system.stop()
                    out.write("Stopped: every process exited, spans flushed.\n")
                out.flush()
    return 0
