"""The page in a real headless Chromium, against real processes.

`todo-obs sidecar` emulates both sidecars, the frontend runs as `python -m reference_app.frontend`
under uvicorn, and a fake backend (the real one is tested end to end elsewhere) is served by
uvicorn in this test's event loop. Chromium is Debian's `/usr/bin/chromium`, driven by
Playwright's Python package (never `playwright install`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from reference_app.common.auth import Tokens
from reference_app.frontend.auth import SESSION_COOKIE
from tests.helpers import free_port, serve_app, todo_obs

from .conftest import SECRET
from .fake_backend import FakeBackend

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_browser() -> None:
    """Skip without Chromium or Playwright, except on CI, where that is a failure."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(
            f"Debian's chromium is not installed at {CHROMIUM} "
            "(apt-get install chromium; `./dev test` installs it)"
        )
    if importlib.util.find_spec("playwright") is None:
        missing.append("the Python package playwright is not installed (tests dependency group)")
    if not missing:
        return
    reason = "; ".join(missing)
    if os.environ.get("CI"):
        pytest.fail(f"the browser test must run on CI: {reason}")
    pytest.skip(reason)


@dataclass
class Running:
    url: str
    backend: FakeBackend
    logs: dict[str, Path]

    def output(self) -> str:
        return "\n".join(f"--- {name}\n{log.read_text()}" for name, log in self.logs.items())


async def wait_ready(url: str, expected: int, process: subprocess.Popen[bytes], log: Path) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url)).status_code == expected:
                    return
            if process.poll() is not None or loop.time() > deadline:
                raise AssertionError(f"{url} never answered {expected}:\n{log.read_text()}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    require_browser()
    ports = {name: free_port() for name in ("frontend", "frontend-dapr", "backend", "backend-dapr")}
    backend = FakeBackend(secret=SECRET)
    logs = {name: tmp_path / f"{name}.log" for name in ("sidecars", "frontend")}
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DAPR_", "OTEL_", "TODO_OBS_", "JWT_", "DEMO_"))
    }
    env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, command: list[str], extra: dict[str, str]) -> subprocess.Popen[bytes]:
        with logs[name].open("wb") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT
            )
        processes.append(process)
        return process

    try:
        async with serve_app(backend.app, ports["backend"]):
            sidecars = start(
                "sidecars",
                [
                    *todo_obs(),
                    "sidecar",
                    "--app",
                    f"frontend:{ports['frontend']}:{ports['frontend-dapr']}",
                    "--app",
                    f"backend:{ports['backend']}:{ports['backend-dapr']}",
                ],
                {},
            )
            frontend = start(
                "frontend",
                [sys.executable, "-m", "reference_app.frontend"],
                {
                    "PORT": str(ports["frontend"]),
                    "DAPR_HTTP_PORT": str(ports["frontend-dapr"]),
                    "JWT_SECRET": SECRET,
                    "TODO_OBS_ENVIRONMENT": "dev",
                    "OTEL_TRACES_EXPORTER": "none",
                },
            )
            url = f"http://127.0.0.1:{ports['frontend']}"
            for dapr in ("frontend-dapr", "backend-dapr"):
                await wait_ready(
                    f"http://127.0.0.1:{ports[dapr]}/v1.0/healthz", 204, sidecars, logs["sidecars"]
                )
            await wait_ready(f"{url}/health/ready", 200, frontend, logs["frontend"])
            running = Running(url, backend, logs)
            yield running
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:  # noqa: PERF203 - each process gets its grace period
                process.kill()
                process.wait()
        # Shown by pytest when the test fails.
        print("\n".join(f"--- {name}\n{log.read_text()}" for name, log in logs.items()))


async def test_sign_in_add_complete_and_see_backends_message(
    running: Running, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            page = await context.new_page()
            await page.goto(running.url)

            # Sign in as alice.
            await page.select_option("#user_id", "alice")
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#signed-in-as")).to_contain_text("Signed in as alice")
            [cookie] = [c for c in await context.cookies() if c["name"] == SESSION_COOKIE]
            assert cookie.get("httpOnly") is True
            assert cookie.get("sameSite") == "Lax"
            assert Tokens(SECRET).verify(cookie["value"]).user_id == "alice"

            # A daily task with a reminder.
            await page.fill("#title", "Daily standup at 9am")
            await page.fill("#due_at", "2026-12-01T09:00")
            await page.select_option("#recurrence", "DAILY")
            await page.fill("#remind_minutes_before", "15")
            await page.get_by_role("button", name="Add task").click()
            await expect(page.locator("#status")).to_have_text(
                "Added \u201cDaily standup at 9am\u201d."
            )
            item = page.locator("#open-tasks li.task", has_text="Daily standup at 9am")
            await expect(item).to_contain_text("\u21bb DAILY")
            await expect(item).to_contain_text("Due 2026-12-01 09:00 UTC")
            await expect(item).to_contain_text("Reminder 2026-12-01 08:45 UTC")
            [created] = [r for r in running.backend.received("/tasks") if r.method == "POST"]
            assert created.body["recurrence"] == "DAILY"
            assert created.body["due_at"] == "2026-12-01T09:00:00+00:00"
            assert created.body["remind_at"] == "2026-12-01T08:45:00+00:00"
            assert created.headers["authorization"] == f"Bearer {cookie['value']}"
            assert created.headers["dapr-caller-app-id"] == "frontend"

            # Complete it: it moves to the completed list.
            await item.get_by_role("button", name="Complete").click()
            done = page.locator("#completed-tasks li.task", has_text="Daily standup at 9am")
            await expect(done).to_contain_text("Completed")
            await expect(page.locator("#open-tasks li.task")).to_have_count(0)
            await expect(page.locator("#status")).to_contain_text("next occurrence")
            await page.reload()  # and the server renders it there too
            await expect(done).to_have_count(1)
            await expect(done.get_by_role("button", name="Complete")).to_have_count(0)

            # A custom rule that backend refuses: its message, naming the part, on the page.
            await page.fill("#title", "Broken rule")
            await page.select_option("#recurrence", "custom")
            await page.fill("#custom_rule", "FREQ=DAILY;BYDAY=XX")
            await page.get_by_role("button", name="Add task").click()
            error = page.locator("#error")
            await expect(error).to_be_visible()
            await expect(error).to_contain_text(
                "recurrence: invalid recurrence 'FREQ=DAILY;BYDAY=XX': BYDAY"
            )
            await expect(page.locator("#open-tasks li.task")).to_have_count(0)

            # Backend no longer accepts the session: back to sign-in.
            running.backend.fail_next(401, "the token has expired; sign in again")
            await page.fill("#custom_rule", "FREQ=WEEKLY")
            await page.get_by_role("button", name="Add task").click()
            await expect(page.locator("#signin")).to_contain_text(
                "Your session has ended: sign in again."
            )
            assert [c for c in await context.cookies() if c["name"] == SESSION_COOKIE] == []
        finally:
            await context.close()
