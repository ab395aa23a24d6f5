"""How long a scrape of /metrics holds the event loop: prometheus_client's ASGI app against ours.

A registry with 1,100 series (a counter over 100 routes and 10 status codes, and a histogram over
the 100 routes: 3,500 samples) is served in process;
while each scrape runs, a ticker on the same loop asks to be woken every millisecond and the
longest wait beyond that is the scrape's lag. Both apps are scraped in the same run, alternately.

    python -m benchmarks.scrape_lag [--scrapes 50]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram, make_asgi_app

from todo_observability.metrics import LATENCY_BUCKETS, metrics_app

ROUTES = 100
STATUSES = ("200", "201", "204", "400", "404", "409", "422", "500", "503", "504")


def registry_of_1000_series() -> CollectorRegistry:
    registry = CollectorRegistry()
    requests = Counter(
        "http_server_requests", "Requests.", ["route", "status_code"], registry=registry
    )
    durations = Histogram(
        "http_server_request_duration_seconds",
        "Durations.",
        ["route"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    for route in range(ROUTES):
        for status in STATUSES:
            requests.labels(f"/r{route}/{{id}}", status).inc(route + 1)
        durations.labels(f"/r{route}/{{id}}").observe(route / 1000)
    return registry


_full_collections: list[float] = []
"""The pause of each generation-2 collection since the list was last emptied, in ms."""
_collection_started = [0.0]


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _collection_started[0] = time.perf_counter()
    elif info["generation"] == 2:
        _full_collections.append((time.perf_counter() - _collection_started[0]) * 1000)


async def lag_of(http: httpx.AsyncClient, *, gzip: bool) -> float:
    """Milliseconds the loop could not run a 1 ms timer while one scrape through `http` ran.

    Each app has one client for the whole run: a client made per scrape would put its own
    objects in the collector's counts during the scrape.
    """
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, (time.perf_counter() - before) * 1000 - 1.0)

    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    worst = 0.0
    _full_collections.clear()
    response = await http.get("/metrics", headers=headers)
    done = True
    await tick
    assert response.status_code == 200
    return worst


async def empty_page(scope: Any, receive: Any, send: Any) -> None:
    """The noise floor: a page that costs nothing, so the lag measured is the machine's."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


#: The longest the loop may wait during a scrape, in milliseconds.
TARGET_MS = 10.0
OURS = "ours"
APPS = ("an empty page (the noise floor)", "prometheus_client make_asgi_app", OURS)


@dataclass
class Result:
    samples: int
    scrapes: int
    #: (app, gzip) -> the lag of each scrape, in ms.
    lags: dict[tuple[str, bool], list[float]] = field(default_factory=dict)
    #: (app, gzip) -> the longest full collection during each scrape, in ms (0: none).
    collections: dict[tuple[str, bool], list[float]] = field(default_factory=dict)

    def over_target(self, name: str) -> tuple[int, int, int]:
        """(scrapes of `name`, of them over TARGET_MS, of those with a full collection in them)."""
        pairs = [
            (lag, paused)
            for gzip in (False, True)
            for lag, paused in zip(self.lags[name, gzip], self.collections[name, gzip], strict=True)
        ]
        over = [paused for lag, paused in pairs if lag > TARGET_MS]
        return len(pairs), len(over), sum(1 for paused in over if paused > 0)


async def measure(scrapes: int) -> Result:
    registry = registry_of_1000_series()
    apps = dict(
        zip(APPS, (empty_page, make_asgi_app(registry), metrics_app(registry)), strict=True)
    )
    result = Result(sum(len(family.samples) for family in registry.collect()), scrapes)
    clients = {
        name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://scrape")
        for name, app in apps.items()
    }
    for http in clients.values():  # the first scrape starts a worker thread: not measured
        await lag_of(http, gzip=False)
    gc.callbacks.append(_on_collection)
    try:
        for gzip in (False, True):
            for name in apps:
                result.lags[name, gzip] = []
                result.collections[name, gzip] = []
            for _ in range(scrapes):
                for name, http in clients.items():
                    result.lags[name, gzip].append(await lag_of(http, gzip=gzip))
                    result.collections[name, gzip].append(max(_full_collections, default=0.0))
    finally:
        gc.callbacks.remove(_on_collection)
        for http in clients.values():
            await http.aclose()
    return result


def run(scrapes: int) -> Result:
    return asyncio.run(measure(scrapes))


def format_result(result: Result) -> str:
    out = [
        f"{result.samples:,} samples (1,100 series), {result.scrapes} scrapes of each app, plain "
        "and gzip, the apps taking turns, after one scrape each off the record; a 1 ms ticker on "
        "the loop records the longest it waited beyond its millisecond during each scrape.",
        "",
        "| app | plain: median / p90 / max lag (ms) | gzip: median / p90 / max lag (ms) |",
        "|---|---:|---:|",
    ]
    for name in APPS:
        cells = []
        for gzip in (False, True):
            values = result.lags[name, gzip]
            p90 = statistics.quantiles(values, n=10, method="inclusive")[-1]
            cells.append(f"{statistics.median(values):.2f} / {p90:.2f} / {max(values):.2f}")
        out.append(f"| {name} | {cells[0]} | {cells[1]} |")
    scrapes, over, collected = result.over_target(OURS)
    pauses = [p for values in result.collections.values() for p in values if p > 0]
    out += [
        "",
        f"Scrapes of ours with a lag above {TARGET_MS:g} ms: {over} of {scrapes}; during "
        f"{collected} of them the process made a full (generation-2) garbage collection, "
        f"which holds every thread (full collections during all the scrapes: {len(pauses)}, "
        f"{min(pauses, default=0):.1f} to {max(pauses, default=0):.1f} ms each).",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=50)
    print(format_result(run(parser.parse_args().scrapes)))
