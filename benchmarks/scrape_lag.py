"""How long a scrape of /metrics holds the event loop: prometheus_client's ASGI app against ours.

A registry with 1,100 series (a counter over 100 routes and 10 status codes, and a histogram over
the 100 routes: 3,500 samples) is served in process;
while each scrape runs, a ticker on the same loop asks to be woken every millisecond and the
longest wait beyond that is the scrape's lag. Both apps are scraped in the same run, alternately.

    python -m benchmarks.scrape_lag [--scrapes 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
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


async def lag_of(app: Any, *, gzip: bool) -> float:
    """Milliseconds the loop could not run a 1 ms timer while one scrape of `app` ran."""
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, (time.perf_counter() - before) * 1000 - 1.0)

    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scrape") as http:
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.01)
        worst = 0.0
        response = await http.get("/metrics", headers=headers)
        done = True
        await tick
    assert response.status_code == 200
    return worst


async def empty_page(scope: Any, receive: Any, send: Any) -> None:
    """The noise floor: a page that costs nothing, so the lag measured is the machine's."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def main(scrapes: int) -> None:
    registry = registry_of_1000_series()
    series = sum(len(family.samples) for family in registry.collect())
    apps = {
        "an empty page (noise floor)": empty_page,
        "prometheus_client make_asgi_app": make_asgi_app(registry),
        "ours": metrics_app(registry),
    }
    print(f"scrape lag, {series} samples, {scrapes} scrapes each, alternating (max lag, ms)")
    for gzip in (False, True):
        lags: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(scrapes):
            for name, app in apps.items():
                lags[name].append(await lag_of(app, gzip=gzip))
        for name, values in lags.items():
            print(
                f"  {'gzip' if gzip else 'plain'} {name:34s} median {statistics.median(values):6.2f}"
                f"  p90 {statistics.quantiles(values, n=10)[-1]:6.2f}  max {max(values):6.2f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=30)
    asyncio.run(main(parser.parse_args().scrapes))
