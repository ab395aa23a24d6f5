"""The emulator's Prometheus metrics: daprd's names and labels for what it does, kafka_exporter's
for its broker, each in a registry of its own (`todo_observability.testing.sidecar.metrics`)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import JSONResponse, Response

from todo_observability.testing.sidecar import Broker, Sidecar
from todo_observability.testing.sidecar.metrics import LATENCY_BUCKETS_MS
from todo_observability.testing.sidecar.metrics import kafka_exporter_registry as kafka_registry
from todo_observability.testing.sidecar.runner import SidecarSpec

from .conftest import FakeApp, SidecarFactory, subscription

pytestmark = pytest.mark.anyio


def samples(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of `registry`'s page, by series name, as Prometheus reads the page."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The value of the one sample of `name` whose labels include `labels`."""
    matching = [
        v for found, v in samples(registry).get(name, []) if labels.items() <= found.items()
    ]
    assert len(matching) == 1, (name, labels, samples(registry).get(name))
    return matching[0]


async def publish(sidecar: Sidecar, topic: str = "orders", body: Any = None) -> httpx.Response:
    async with sidecar.client() as client:
        return await client.post(f"/v1.0/publish/pubsub/{topic}", json=body or {"n": 1})


async def test_each_delivery_is_counted_by_process_status_as_daprd_counts_it(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp(subscriptions=[subscription()])
    app.answer(
        "/orders",
        Response(status_code=500),  # retry
        JSONResponse({"status": "DROP"}),  # drop, with status "success"
        Response(status_code=200),
        Response(status_code=404),  # drop
    )
    sidecar = await make_sidecar(app)
    for n in range(3):
        assert (await publish(sidecar, body={"n": n})).status_code == 204
    await broker.wait_for(lambda: len(sidecar.results) == 3)
    registry = sidecar.metrics.registry
    name = "dapr_component_pubsub_ingress_count"
    common = {"app_id": "backend", "component": "pubsub", "topic": "orders"}
    assert value(registry, name, **common, process_status="retry", status="retry") == 1
    assert value(registry, name, **common, process_status="drop", status="success") == 1
    assert value(registry, name, **common, process_status="success", status="success") == 1
    assert value(registry, name, **common, process_status="drop", status="drop") == 1
    # Latencies are daprd's: milliseconds, on its default buckets, one observation per attempt.
    buckets = samples(registry)["dapr_component_pubsub_ingress_latencies_bucket"]
    assert {labels["le"] for labels, _ in buckets} == {
        *(f"{bound:g}" for bound in LATENCY_BUCKETS_MS),
        "+Inf",
    }
    counts = samples(registry)["dapr_component_pubsub_ingress_latencies_count"]
    assert sum(v for _, v in counts) == 4


async def test_publishes_are_counted_with_success_true_or_false(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp())
    assert (await publish(sidecar)).status_code == 204
    sidecar.fail_next_publishes(1)
    assert (await publish(sidecar)).status_code == 500
    registry = sidecar.metrics.registry
    name = "dapr_component_pubsub_egress_count"
    assert value(registry, name, app_id="backend", topic="orders", success="true") == 1
    assert value(registry, name, app_id="backend", topic="orders", success="false") == 1
    assert value(registry, "dapr_component_pubsub_egress_latencies_count", success="false") == 1


async def test_a_failure_series_exists_only_after_a_failure(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    assert (await publish(sidecar)).status_code == 204
    labels = [found for found, _ in samples(sidecar.metrics.registry)[
        "dapr_component_pubsub_egress_count"
    ]]  # fmt: skip
    assert [found["success"] for found in labels] == ["true"]


async def test_job_triggers_count_2xx_as_success_and_404_as_failure(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp()
    app.answer("/job/gone", Response(status_code=404))
    sidecar = await make_sidecar(app)
    async with sidecar.client() as client:
        for name in ("cleanup", "gone"):
            response = await client.post(f"/v1.0/jobs/{name}", json={"dueTime": "0s"})
            assert response.status_code == 204
    await broker.wait_for(lambda: len(sidecar.job_triggers) == 2)
    registry = sidecar.metrics.registry
    op = {"app_id": "backend", "operation": "job_trigger_op"}
    assert value(registry, "dapr_component_job_success_count", **op) == 1
    assert value(registry, "dapr_component_job_failure_count", **op) == 1
    assert value(registry, "dapr_component_job_latencies_count", success="false") == 1


async def test_an_invocation_is_counted_by_the_caller_with_its_target_and_status(
    make_sidecar: SidecarFactory,
) -> None:
    callee_app = FakeApp()
    callee_app.answer("/tasks/7", Response(status_code=201))
    caller = await make_sidecar(FakeApp(), app_id="frontend")
    await make_sidecar(callee_app, app_id="backend")
    async with caller.client() as client:
        response = await client.post("/v1.0/invoke/backend/method/tasks/7")
    assert response.status_code == 201
    registry = caller.metrics.registry
    assert (
        value(
            registry,
            "dapr_runtime_service_invocation_req_sent_total",
            app_id="frontend",
            dst_app_id="backend",
            method="tasks/7",
        )
        == 1
    )
    received = {"app_id": "frontend", "src_app_id": "backend", "status": "201"}
    assert value(registry, "dapr_runtime_service_invocation_res_recv_total", **received) == 1
    assert value(registry, "dapr_runtime_service_invocation_res_recv_latency_ms_count", **received)
    assert (
        value(
            registry,
            "dapr_http_server_request_count",
            method="POST",
            path="/v1.0/invoke/backend/method/tasks/7",
            status="201",
        )
        == 1
    )


async def test_state_keys_are_left_out_of_the_path_label(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    async with sidecar.client() as client:
        for key in ("a", "b"):
            assert (await client.get(f"/v1.0/state/statestore/{key}")).status_code == 204
        assert (await client.get("/emulator/v1/deliveries")).status_code == 200
    paths = {
        labels["path"]
        for labels, _ in samples(sidecar.metrics.registry)["dapr_http_server_request_count"]
    }
    assert paths == {"/v1.0/state/statestore"}  # and the emulator's own API is not daprd's
    registry = sidecar.metrics.registry
    labels = {"component": "statestore", "operation": "get", "success": "true"}
    assert value(registry, "dapr_component_state_count", **labels) == 2
    assert value(registry, "dapr_component_state_latencies_count", **labels) == 2


async def test_the_broker_is_exported_under_kafka_exporter_names(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp(subscriptions=[subscription()])
    # The first message is delivered; the second fails for ever, holding the partition.
    app.answer("/orders", Response(status_code=200), Response(status_code=500))
    sidecar = await make_sidecar(app)
    for n in range(3):
        assert (await publish(sidecar, body={"n": n})).status_code == 204
    await broker.wait_for(lambda: len(app.received("/orders")) >= 3)
    registry = kafka_registry(broker)
    assert value(registry, "kafka_brokers") == 1
    assert value(registry, "kafka_topic_partitions", topic="orders") == 1
    assert value(registry, "kafka_topic_partition_current_offset", topic="orders") == 3
    group = {"consumergroup": "backend", "topic": "orders"}
    # One delivered and committed, one redelivered for ever, one waiting behind it.
    assert value(registry, "kafka_consumergroup_current_offset_sum", **group) == 1
    assert value(registry, "kafka_consumergroup_lag_sum", **group) == 2
    assert value(registry, "kafka_consumergroup_lag", **group, partition="0") == 2
    assert value(registry, "kafka_consumergroup_members", consumergroup="backend") == 1
    app.answer("/orders", Response(status_code=200))
    app.calls.clear()
    await broker.idle()
    assert value(kafka_registry(broker), "kafka_consumergroup_lag_sum", **group) == 0


async def test_metrics_never_go_to_the_global_registry(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    await publish(sidecar)
    assert sidecar.metrics.registry is not REGISTRY
    assert b"dapr_" not in generate_latest(REGISTRY)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_sidecar_process_serves_metrics_on_its_metrics_port(tmp_path: Path) -> None:
    assert SidecarSpec.parse("backend:8001:3501:9091").metrics_port == 9091
    assert SidecarSpec.parse("backend:8001:3501").metrics_port is None
    app_port, dapr_port, metrics_port, kafka_port = (_free_port() for _ in range(4))
    log = tmp_path / "sidecar.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "todo_observability.cli", "sidecar",
                "--app", f"backend:{app_port}:{dapr_port}:{metrics_port}",
                "--kafka-exporter-port", str(kafka_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the metrics port never answered"
                time.sleep(0.1)
        # The app is not there: healthz answers 500, and daprd counts it.
        httpx.get(f"http://127.0.0.1:{dapr_port}/v1.0/healthz", timeout=2)
        page = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2)
        assert page.status_code == 200
        assert 'dapr_http_server_request_count{app_id="backend",method="GET",' in page.text
        kafka = httpx.get(f"http://127.0.0.1:{kafka_port}/metrics", timeout=2)
        assert "kafka_brokers 1.0" in kafka.text
    finally:
        process.terminate()
        process.wait(timeout=20)
