"""`./dev demo`: start two services under uvicorn, drive a request through both, show what was observed.

What it shows: each service's JSON log lines sharing one request_id and
trace_id, the RED metrics on /metrics, and the cross-service trace as a tree,
read from the Zipkin v2 span file the services wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from todo_observability.ops.spans import load_spans, render_trace_tree

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(
    name: str, factory: str, port: int, workdir: Path, extra_env: dict[str, str]
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": name,
        "TODO_OBS_SERVICE_VERSION": "0.1.0",
        "TODO_OBS_ENVIRONMENT": "dev",
        "OTEL_TRACES_EXPORTER": "file",
        "TODO_OBS_TRACES_FILE": str(workdir / "spans.jsonl"),
        "PYTHONUNBUFFERED": "1",
        **extra_env,
    }
    log = (workdir / f"{name}.log").open("wb")
    command = [sys.executable, "-m", "uvicorn", f"examples.demo.services:{factory}", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 - our own command line


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url} exited early; its log:\n{log.read_text()}")
        try:
            httpx.get(f"{url}/metrics", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within 30 s; its log:\n{log.read_text()}")


def print_section(title: str) -> None:
    print(f"\n\033[1m== {title} ==\033[0m")


def show_logs(workdir: Path, request_id: str) -> None:
    for name in ("tasks", "notify"):
        for raw in (workdir / f"{name}.log").read_text().splitlines():
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if line.get("request_id") == request_id:
                print(json.dumps(line, separators=(",", ":")))


def show_metrics(urls: dict[str, str]) -> None:
    for name, url in urls.items():
        text = httpx.get(f"{url}/metrics").text
        wanted = (
            "http_server_requests_total{",
            "http_client_requests_total{",
            "operations_total{",
            "target_info{",
        )
        for line in text.splitlines():
            if line.startswith(wanted):
                print(f"{name:>6} | {line}")


def show_trace(workdir: Path, trace_id: str) -> None:
    spans = load_spans(workdir / "spans.jsonl")
    print("\n".join(render_trace_tree(spans, trace_id)))


def main() -> None:
    request_id = ""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--keep-running", action="store_true", help="leave the services up until Ctrl-C"
    )
    args = parser.parse_args()

    workdir = ROOT / "var" / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.iterdir():
        stale.unlink()
    ports = {"tasks": free_port(), "notify": free_port()}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    processes = {
        "notify": start("notify", "create_notify_app", ports["notify"], workdir, {}),
        "tasks": start(
            "tasks", "create_tasks_app", ports["tasks"], workdir, {"NOTIFY_URL": urls["notify"]}
        ),
    }
    try:
        for name, process in processes.items():
            wait_until_up(urls[name], process, workdir / f"{name}.log")
        print_section("services")
        for name, url in urls.items():
            print(f"{name:>6}: {url}   (metrics: {url}/metrics, log: {workdir / (name + '.log')})")

        response = httpx.post(
            f"{urls['tasks']}/tasks/7/complete", headers={"Authorization": "Bearer ann"}
        )
        request_id = response.headers["x-request-id"]
        print_section("request")
        print(
            f"POST /tasks/7/complete -> {response.status_code} {response.json()}  X-Request-ID: {request_id}"
        )
        httpx.post(f"{urls['tasks']}/tasks/8/complete")  # unauthenticated: a 401, counted as such
        print_section("RED metrics from each service's /metrics")
        show_metrics(urls)
        print_section("readiness")
        for name, url in urls.items():
            ready = httpx.get(f"{url}/health/ready")
            checks = ", ".join(
                f"{check} {r['status']}" for check, r in ready.json()["checks"].items()
            )
            print(
                f"{name:>6}: {ready.status_code} {ready.json()['status']} ({checks or 'no checks'})"
            )

        if args.keep_running:
            print("\nServices are running; press Ctrl-C to stop them.")
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # graceful: the lifespan shutdown flushes spans
        for process in processes.values():
            process.wait(timeout=30)

    print_section(f"log lines of request {request_id}, from both services")
    show_logs(workdir, request_id)
    trace_id = next(
        json.loads(raw)["trace_id"]
        for raw in (workdir / "tasks.log").read_text().splitlines()
        if raw.startswith("{") and json.loads(raw).get("request_id") == request_id
    )
    print_section("the trace, across both services (from the span file written at shutdown)")
    show_trace(workdir, trace_id)


if __name__ == "__main__":
    main()
