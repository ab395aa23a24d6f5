"""Health, metadata, the `/emulator/v1` control endpoints, and the package surface."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest
from starlette.responses import Response

import todo_observability.testing.sidecar as sidecar_package
from todo_observability.exceptions import ConfigurationError
from todo_observability.health import checks
from todo_observability.health.model import Status
from todo_observability.testing.sidecar import Broker, Sidecar
from todo_observability.testing.sidecar._json import GoNumber, dumps, loads
from todo_observability.testing.sidecar._tracing import parse_traceparent

from .conftest import FakeApp, SidecarFactory, only, publish, subscription

pytestmark = pytest.mark.anyio


async def test_healthz_is_500_until_the_subscriptions_are_loaded(broker: Broker) -> None:
    app = FakeApp([subscription()])
    sidecar = Sidecar("backend", app_transport=app.transport(), broker=broker)
    async with sidecar.client() as client:
        before = await client.get("/v1.0/healthz")
        outbound = await client.get("/v1.0/healthz/outbound")
        await sidecar.start()
        try:
            after = await client.get("/v1.0/healthz")
            mismatch = await client.get("/v1.0/healthz", params={"appid": "other"})
            matching = await client.get("/v1.0/healthz", params={"appid": "backend"})
        finally:
            await sidecar.stop()
    assert before.status_code == 500
    assert before.json() == {
        "errorCode": "ERR_HEALTH_NOT_READY",
        "message": "dapr is not ready: [app]",
    }
    assert outbound.status_code == 204
    assert (after.status_code, matching.status_code) == (204, 204)
    assert mismatch.status_code == 500
    assert mismatch.json()["errorCode"] == "ERR_HEALTH_APPID_NOT_MATCH"


async def test_metadata_describes_the_sidecar(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp([subscription()]), runtime_version="1.18.3")
    async with sidecar.client() as client:
        put = await client.put("/v1.0/metadata/team", content=b"tasks")
        metadata = (await client.get("/v1.0/metadata")).json()
    assert put.status_code == 204
    assert metadata["id"] == "backend"
    assert metadata["runtimeVersion"] == "1.18.3"
    assert metadata["components"] == [
        {
            "name": "pubsub",
            "type": "pubsub.kafka",
            "version": "v1",
            "capabilities": ["BULK_PUBSUB"],
        },
        {
            "name": "statestore",
            "type": "state.in-memory",
            "version": "v1",
            "capabilities": ["ETAG", "TRANSACTIONAL", "TTL", "DELETE_WITH_PREFIX", "ACTOR"],
        },
    ]
    assert metadata["extended"] == {"daprRuntimeVersion": "1.18.3", "team": "tasks"}
    assert metadata["appConnectionProperties"] == {
        "protocol": "http",
        "channelAddress": "127.0.0.1",
    }
    assert [s["topic"] for s in metadata["subscriptions"]] == ["orders"]


async def test_the_sdk_health_checks_see_a_healthy_sidecar(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp([subscription()]))
    async with sidecar.client() as client:
        base = str(client.base_url)
        sidecar_result = await checks.dapr_sidecar(base_url=base, client=client).function()  # type: ignore[misc]
        pubsub_result = await checks.dapr_pubsub(  # type: ignore[misc]
            "pubsub", topics=["orders"], base_url=base, client=client
        ).function()
        jobs_result = await checks.dapr_jobs(base_url=base, client=client).function()  # type: ignore[misc]
    assert sidecar_result.status is Status.UP
    assert pubsub_result.status is Status.UP
    assert pubsub_result.details["subscribed"] == ["orders"]
    assert (jobs_result.status, jobs_result.details["api"]) == (Status.UP, "v1.0")


async def test_the_jobs_check_falls_back_to_alpha_on_a_pre_1_18_sidecar(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp(), runtime_version="1.16.0")
    async with sidecar.client() as client:
        result = await checks.dapr_jobs(base_url=str(client.base_url), client=client).function()  # type: ignore[misc]
    assert (result.status, result.details["api"]) == (Status.UP, "v1.0-alpha1")


async def test_emulator_control_endpoints(make_sidecar: SidecarFactory, broker: Broker) -> None:
    app = FakeApp([subscription()])
    app.answer("/orders", Response(status_code=200))
    sidecar = await make_sidecar(app)
    async with sidecar.client() as client:
        fault = await client.post("/emulator/v1/faults/publish", json={"count": 1, "status": 503})
        failed = await client.post("/v1.0/publish/pubsub/orders", json={"n": 1})
        await client.post("/v1.0/publish/pubsub/orders", json={"n": 2})
        idle = await client.post("/emulator/v1/idle", params={"timeout": "5"})
        deliveries = (await client.get("/emulator/v1/deliveries")).json()
        results = (await client.get("/emulator/v1/results")).json()
        published = (await client.get("/emulator/v1/published")).json()
        topic = (await client.get("/emulator/v1/topics/pubsub/orders")).json()
        down = await client.post("/emulator/v1/faults/app", json={"down": True})
        await client.post("/v1.0/publish/pubsub/orders", json={"n": 3})
        busy = await client.post("/emulator/v1/idle", params={"timeout": "0.05"})
        await client.post("/emulator/v1/faults/app", json={"down": False})
        settled = await client.post("/emulator/v1/idle")
        await client.post("/v1.0-alpha1/jobs/j", json={"dueTime": "0s", "data": "x"})
        await client.post("/emulator/v1/idle")
        triggers = (await client.get("/emulator/v1/jobs/triggers")).json()
        cleared = await client.delete("/emulator/v1/records")
    assert (fault.status_code, failed.status_code, idle.status_code) == (204, 503, 204)
    delivery = only(deliveries)
    assert (delivery["topic"], delivery["outcome"], delivery["status_code"]) == (
        "orders",
        "success",
        200,
    )
    assert json.loads(delivery["body"])["data"] == {"n": 2}
    assert only(results)["outcome"] == "delivered"
    assert [json.loads(r["value"])["data"]["n"] for r in published] == [2]
    assert [r["offset"] for r in topic] == [0]
    assert down.status_code == 204
    assert busy.status_code == 504
    assert "offset 1" in " ".join(busy.json()["busy"])
    assert settled.status_code == 204
    assert only(triggers)["body"] == '"x"'
    assert cleared.status_code == 204
    assert sidecar.deliveries == []
    assert sidecar.job_triggers == []


async def test_binary_bodies_are_base64_in_control_answers(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    sidecar = await make_sidecar(FakeApp())
    await publish(sidecar, content=b"\xff\x00", metadata={"rawPayload": "true"})
    async with sidecar.client() as client:
        [record] = (await client.get("/emulator/v1/published")).json()
    assert base64.b64decode(record["value"]["base64"]) == b"\xff\x00"


async def test_emulator_endpoints_are_behind_the_api_token(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp(), api_token="t")
    async with sidecar.client() as client:
        refused = await client.get("/emulator/v1/deliveries")
        accepted = await client.get("/emulator/v1/deliveries", headers={"dapr-api-token": "t"})
    assert (refused.status_code, accepted.status_code) == (401, 200)


async def test_two_running_sidecars_cannot_share_an_app_id(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    await make_sidecar(FakeApp(), app_id="backend")
    twin = Sidecar("backend", app_transport=FakeApp().transport(), broker=broker)
    with pytest.raises(ConfigurationError, match="already served"):
        await twin.start()


def test_a_sidecar_needs_a_way_to_its_app() -> None:
    with pytest.raises(ConfigurationError, match="app_port or app_transport"):
        Sidecar("backend")
    with pytest.raises(ConfigurationError, match="sampling_rate"):
        Sidecar("backend", app_port=1, sampling_rate=2)


def test_public_names_are_a_decision() -> None:
    assert sidecar_package.__all__ == [
        "Broker",
        "BulkSubscribe",
        "DeliveryAttempt",
        "JobTrigger",
        "MessageResult",
        "Record",
        "RetryPolicy",
        "Rule",
        "Sidecar",
        "SidecarSpec",
        "Subscription",
        "SubscriptionError",
        "UnsupportedExpressionError",
        "run_sidecars",
        "serve",
    ]
    assert sidecar_package.__all__ == sorted(sidecar_package.__all__)
    for name in sidecar_package.__all__:
        assert getattr(sidecar_package, name) is not None
    with pytest.raises(AttributeError, match="nothing_here"):
        getattr(sidecar_package, "nothing_here")  # noqa: B009 - the dynamic lookup is the point


def test_go_json_encoding() -> None:
    assert dumps({"b": 1, "a": [True, None, 1.5, 2.0]}) == b'{"a":[true,null,1.5,2],"b":1}'
    assert (
        dumps("<a href='x'>&\u2028\n\x01")
        == b"\"\\u003ca href='x'\\u003e\\u0026\\u2028\\n\\u0001\""
    )
    assert dumps(loads(b'{"n": 1.10, "big": 123456789012345678901234567890}')) == (
        b'{"big":123456789012345678901234567890,"n":1.10}'
    )
    assert isinstance(loads(b"1e3"), GoNumber)
    with pytest.raises(ValueError, match="NaN"):
        loads(b"NaN")


@pytest.mark.parametrize(
    ("header", "valid"),
    [
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", True),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", True),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", False),
        ("zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", False),
        ("", False),
    ],
)
def test_traceparent_parsing_is_as_strict_as_daprd(header: str, valid: bool) -> None:
    assert (parse_traceparent(header) is not None) is valid


def test_an_invalid_tracestate_is_dropped_whole() -> None:
    context = parse_traceparent(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "good=1,bad"
    )
    assert context is not None
    assert len(context.trace_state) == 0


async def test_a_stopped_sidecar_is_no_longer_resolvable(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    sidecar = await make_sidecar(FakeApp(), app_id="backend")
    assert broker.resolve("backend") is sidecar
    await sidecar.stop()
    assert broker.resolve("backend") is None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sidecar.asgi)) as client:
        assert (await client.get("http://dapr/v1.0/healthz")).status_code == 500


async def test_a_stopped_sidecar_cannot_be_started_again(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    await sidecar.stop()
    with pytest.raises(RuntimeError, match="start a new Sidecar"):
        await sidecar.start()


def test_a_broker_can_be_shared_by_tests_with_their_own_event_loops() -> None:
    broker = Broker(component_retry_interval=0.005)
    app = FakeApp([subscription()])

    async def one_test(n: int) -> None:
        async with Sidecar("backend", app_transport=app.transport(), broker=broker) as sidecar:
            await publish(sidecar, {"n": n})
            await broker.idle()

    async def nothing_happens() -> None:
        with pytest.raises(TimeoutError):
            await broker.wait_for(lambda: False, timeout=0.01)

    asyncio.run(one_test(1))
    asyncio.run(nothing_happens())  # leaves the broker's event bound to a closed loop
    asyncio.run(nothing_happens())
    asyncio.run(one_test(2))
    assert [r.json()["data"]["n"] for r in app.received("/orders")] == [1, 2]
