"""The reference system's image (`Containerfile`), built with podman and run as the cluster would.

The image is built from the repository with `podman build`; its base is `$TODO_IMAGE_BASE`
(the `image` nox session makes one with debootstrap where no registry is reachable), else the
Containerfile's default. Each service is then started from the image with `buildah run` (on
the host's network, as the image's own user), next to a sidecar emulator and an SMTP sink
running on the host, and must answer its readiness probe UP and serve `/metrics`.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import eventually, free_port

ROOT = Path(__file__).resolve().parents[3]
K8S_BASE = ROOT / "reference_app" / "deploy" / "k8s" / "base"
IMAGE = "localhost/todo-reference-app:image-test"
CA_BUNDLE = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
START_TIMEOUT = 90.0
"""Seconds a service has to answer UP: the startup probe allows 60 s, on a busy machine more."""


@dataclass(frozen=True)
class Service:
    app_id: str
    module: str
    folder: str


SERVICES = (
    Service("frontend", "reference_app.frontend", "frontend"),
    Service("backend", "reference_app.backend", "backend"),
    Service("recurring-task-service", "reference_app.recurring", "recurring-task-service"),
    Service("notification-service", "reference_app.notifications", "notification-service"),
)


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not on PATH: install the Debian package {package!r} "
            f"(apt-get install {package}; ./dev does), then rerun."
        )
    return path


def run(*command: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The image, built from the working tree now."""
    podman = tool("podman", "podman")
    command = [podman, "build", "--isolation=chroot", "-f", "Containerfile", "-t", IMAGE]
    base = os.environ.get("TODO_IMAGE_BASE")
    if base:
        command += ["--build-arg", f"BASE_IMAGE={base}"]
    if CA_BUNDLE.is_file():
        # This machine's TLS may go through a CA of its own: pip in the builder must trust it.
        command += ["--secret", f"id=ca,src={CA_BUNDLE}"]
    run(*command, ".")
    yield IMAGE
    subprocess.run([podman, "rmi", "--force", IMAGE], capture_output=True, check=False)


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[str]:
    """A working container of the image, for `buildah run`."""
    buildah = tool("buildah", "buildah")
    name = run(buildah, "from", image).stdout.strip().splitlines()[-1]
    yield name
    subprocess.run([buildah, "rm", name], capture_output=True, check=False)


def config(image: str) -> dict[str, object]:
    (inspected,) = json.loads(run("podman", "image", "inspect", image).stdout)
    found: dict[str, object] = inspected["Config"]
    return found


def deployment(service: Service) -> dict[str, Any]:
    """The service's Deployment, as the base declares it."""
    path = K8S_BASE / service.folder / "deployment.yaml"
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def container_spec(service: Service) -> dict[str, Any]:
    """The service's container in its Deployment."""
    spec: dict[str, Any] = deployment(service)["spec"]["template"]["spec"]["containers"][0]
    return spec


def test_image_runs_as_the_user_the_deployments_name_and_has_no_healthcheck(image: str) -> None:
    settings = config(image)
    assert "Healthcheck" not in settings or not settings["Healthcheck"], settings
    user, _, group = str(settings["User"]).partition(":")
    for service in SERVICES:
        pod = deployment(service)["spec"]["template"]["spec"]
        context = pod["securityContext"]
        assert (user, group) == (str(context["runAsUser"]), str(context["runAsGroup"])), service
        assert context["runAsNonRoot"] is True
    assert user != "0"


def test_the_runtime_stage_has_no_compiler_and_the_deployments_python(container: str) -> None:
    probe = subprocess.run(
        ["buildah", "run", "--isolation=chroot", container, "--", "sh", "-c",
         "command -v gcc cc c++ make; id -u; command -v python"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    lines = probe.stdout.split()
    # `command -v` prints nothing for a missing tool: only the uid and python are left.
    assert lines == ["10001", "/opt/venv/bin/python"], probe.stdout + probe.stderr


@pytest.fixture(scope="module")
def neighbours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, int]]]:
    """A sidecar emulator (one sidecar per service) and an SMTP sink, on the host's loopback.

    Yields each app id's ports: `app` (the service's) and `dapr` (its sidecar's), and the
    sink's under "smtp".
    """
    mail = tmp_path_factory.mktemp("mail")
    ports = {s.app_id: {"app": free_port(), "dapr": free_port()} for s in SERVICES}
    ports["smtp"] = {"app": free_port(), "dapr": 0}
    sidecars = [sys.executable, "-m", "todo_observability.cli", "sidecar"]
    for app_id in (s.app_id for s in SERVICES):
        sidecars += ["--app", f"{app_id}:{ports[app_id]['app']}:{ports[app_id]['dapr']}"]
    sink = [sys.executable, "-m", "reference_app.smtp_sink", "--port", str(ports["smtp"]["app"])]
    logs = tmp_path_factory.mktemp("logs")
    processes = []
    for name, command in (("sidecars", sidecars), ("smtp-sink", [*sink, "--dir", str(mail)])):
        with (logs / f"{name}.log").open("w") as log:
            processes.append(
                subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            )
    try:
        for app_id in (s.app_id for s in SERVICES):
            url = f"http://127.0.0.1:{ports[app_id]['dapr']}/v1.0/healthz/outbound"
            eventually(functools.partial(_answers, url), 30, f"the sidecar emulator at {url}")
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def started(
    container: str, service: Service, ports: dict[str, dict[str, int]]
) -> subprocess.Popen[str]:
    """`python -m <module>` in the image, as the Deployment's command runs it."""
    env = {
        "HOST": "127.0.0.1",
        "PORT": str(ports[service.app_id]["app"]),
        "DAPR_HTTP_PORT": str(ports[service.app_id]["dapr"]),
        "TODO_OBS_ENVIRONMENT": "dev",
        "OTEL_TRACES_EXPORTER": "none",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(ports["smtp"]["app"]),
        # The Deployments mount /tmp as an emptyDir; here the working container's /tmp.
        "DATABASE_URL": "sqlite+aiosqlite:////tmp/backend.db",
    }
    command = ["buildah", "run", "--isolation=chroot"]
    for name, value in env.items():
        command += ["--env", f"{name}={value}"]
    command += [
        container,
        "--",
        *container_spec(service)["command"],
    ]
    # A session of its own: whatever is left of it can be killed at once at the end.
    return subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def descendants(pid: int) -> list[int]:
    """The processes below `pid`, from /proc (chroot isolation shares the host's PID space)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended while we looked
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def service_pid(process: subprocess.Popen[str], module: str) -> int | None:
    """The PID of `python -m <module>` that `buildah run` started, if it still runs."""
    # buildah-chroot-exec carries the same arguments: the deepest match is the service.
    found = None
    for pid in descendants(process.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if module.encode() in argv:
            found = pid
    return found


def stop(process: subprocess.Popen[str], module: str) -> tuple[bool, str]:
    """SIGTERM to the service, as the kubelet sends it; whether it ended by itself in the
    grace period (30 s, the kubelet's default), and all it wrote."""
    pid = service_pid(process, module)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return False, output
    return pid is not None, output


@pytest.fixture(scope="module")
def system(
    container: str, neighbours: dict[str, dict[str, int]]
) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """The four services, each started from the image, as one system (frontend calls backend)."""
    processes = {service.app_id: started(container, service, neighbours) for service in SERVICES}
    yield processes
    for service in SERVICES:
        if processes[service.app_id].poll() is None:
            stop(processes[service.app_id], service.module)


def probe_path(service: Service, probe: str) -> str:
    path: str = container_spec(service)[probe]["httpGet"]["path"]
    return path


@pytest.mark.parametrize("service", SERVICES, ids=[s.app_id for s in SERVICES])
def test_each_service_starts_from_the_image_ready_and_measured(
    system: dict[str, subprocess.Popen[str]],
    neighbours: dict[str, dict[str, int]],
    service: Service,
) -> None:
    process = system[service.app_id]
    base = f"http://127.0.0.1:{neighbours[service.app_id]['app']}"
    ready_path = probe_path(service, "readinessProbe")
    deadline = time.monotonic() + START_TIMEOUT
    answer: httpx.Response | None = None
    while time.monotonic() < deadline and process.poll() is None:
        try:
            answer = httpx.get(base + ready_path, timeout=3)
            if answer.status_code == 200 and answer.json()["status"] == "UP":
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    assert process.poll() is None, f"{service.app_id} exited:\n{stop(process, service.module)[1]}"
    assert answer is not None, f"{service.app_id} never answered on {base}{ready_path}"
    body = answer.json()
    assert (answer.status_code, body["status"]) == (200, "UP"), body
    assert body["service"] == service.app_id, body
    for probe in ("livenessProbe", "startupProbe"):
        assert httpx.get(base + probe_path(service, probe), timeout=5).status_code == 200, probe
    metrics = httpx.get(base + "/metrics", timeout=5)
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain"), metrics.headers
    assert "http_server_requests_total" in metrics.text


def test_every_service_stops_cleanly_on_sigterm_having_logged_json(
    system: dict[str, subprocess.Popen[str]],
) -> None:
    # Run after the services were asked: each must still be up, then drain within the grace
    # period on SIGTERM, as the kubelet expects during a rollout.
    for app_id, process in system.items():
        assert process.poll() is None, f"{app_id} had exited with {process.returncode}"
    for service in SERVICES:
        app_id = service.app_id
        ended, output = stop(system[app_id], service.module)
        assert ended, f"{app_id} did not end within 30 s of SIGTERM:\n{output}"
        # buildah's own lines are not JSON; every line of the service is one JSON object,
        # which Fluent Bit parses so.
        records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        others = [line for line in output.splitlines() if line and not line.startswith("{")]
        assert all(
            line.startswith(("subprocess exited", "Error: exit status")) for line in others
        ), others
        assert {record["service_name"] for record in records} == {app_id}
        messages = [record["message"] for record in records]
        # Readiness turned DOWN first, then the app's lifespan shut down (uvicorn's line).
        assert any(
            m.startswith("shutdown started: readiness now reports DOWN") for m in messages
        ), messages
        assert "Application shutdown complete." in messages, messages
