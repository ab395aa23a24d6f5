"""The official Python SDK against the emulator over real HTTP, as it would talk to daprd.

The caller is the `dapr` package's HTTP client (`DaprClient.invoke_method_async`, and its
`DaprHttpClient` for the other HTTP APIs: `DaprClient` itself speaks gRPC for those, which the
emulator does not serve); the subscriber is a FastAPI app with the `dapr-ext-fastapi`
extension's `DaprApp`, under uvicorn. Both sides are the SDK's own code, unchanged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprHttpError
from dapr.clients.http.client import DaprHttpClient
from dapr.clients.http.helpers import get_api_url
from dapr.conf import settings
from dapr.ext.fastapi import DaprApp
from dapr.serializers import DefaultJSONSerializer
from fastapi import Body, FastAPI, Request
from fastapi.responses import Response

from tests.helpers import free_port, serve_app
from todo_observability.testing.sidecar import RetryPolicy, Sidecar, SidecarSpec

from .conftest import serve_sidecars

pytestmark = pytest.mark.anyio

Event = Annotated[dict[str, Any], Body()]  # DaprApp hands the handler the whole CloudEvent


class Subscriber:
    """A FastAPI app whose pub/sub side is `DaprApp`: answers what each event asks for."""

    def __init__(self) -> None:
        self.app = FastAPI()
        self.events: list[dict[str, Any]] = []
        self.dead_letters: list[dict[str, Any]] = []
        self.echoed: list[dict[str, str]] = []
        self.attempts: dict[int, int] = {}
        dapr_app = DaprApp(self.app)
        # DaprApp's decorator returns None, so it is called rather than applied with `@`.
        dapr_app.subscribe(pubsub="pubsub", topic="orders", dead_letter_topic="orders-dlq")(
            self.orders
        )
        dapr_app.subscribe(pubsub="pubsub", topic="orders-dlq")(self.dead)
        self.app.add_api_route("/echo", self.echo, methods=["POST"])

    def orders(self, event: Event) -> dict[str, str]:
        self.events.append(event)
        n = event["data"]["n"]
        self.attempts[n] = self.attempts.get(n, 0) + 1
        wanted: str = event["data"]["answer"]
        if wanted == "RETRY" and self.attempts[n] > 1:
            wanted = "SUCCESS"
        return {"status": wanted}

    def dead(self, event: Event) -> None:
        self.dead_letters.append(event)

    async def echo(self, request: Request) -> Response:
        self.echoed.append(dict(request.headers))
        # No media type: the answer carries no Content-Type of its own.
        return Response(content=json.dumps({"got": (await request.json())}).encode())


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Subscriber, Sidecar]]:
    subscriber = Subscriber()
    app_port, dapr_port = free_port(), free_port()
    monkeypatch.setattr(settings, "DAPR_HTTP_PORT", dapr_port)
    monkeypatch.setattr(settings, "DAPR_RUNTIME_HOST", "127.0.0.1")
    monkeypatch.setattr(settings, "DAPR_HTTP_ENDPOINT", None)
    monkeypatch.setattr(settings, "DAPR_API_TOKEN", None)
    monkeypatch.setattr(settings, "DAPR_HEALTH_TIMEOUT", 10)
    async with (
        serve_app(subscriber.app, app_port),
        serve_sidecars(
            SidecarSpec("orders", app_port, dapr_port),
            retry_policy=RetryPolicy.constant(0.01, max_retries=3),
        ) as (sidecar,),
    ):
        yield subscriber, sidecar


async def sdk_http_client() -> DaprHttpClient:
    # The constructor blocks until /v1.0/healthz/outbound answers, as against daprd.
    return await asyncio.to_thread(DaprHttpClient, DefaultJSONSerializer(), 10)


async def test_daprapp_subscriptions_and_answers_drive_the_emulator(
    served: tuple[Subscriber, Sidecar],
) -> None:
    subscriber, sidecar = served
    assert [(s.topic, s.dead_letter_topic) for s in sidecar.subscriptions] == [
        ("orders", "orders-dlq"),
        ("orders-dlq", None),
    ]
    http = await sdk_http_client()
    for n, answer in enumerate(["SUCCESS", "RETRY", "DROP"]):
        body, _ = await http.send_bytes(
            method="POST",
            url=f"{get_api_url()}/publish/pubsub/orders",
            data=json.dumps({"n": n, "answer": answer}).encode(),
            headers={},
        )
        assert body == b""
    await sidecar.wait_for(lambda: len(subscriber.dead_letters) == 1)
    await sidecar.idle()
    outcomes = {
        r.offset: (r.outcome, r.reason, r.attempts) for r in sidecar.results if r.topic == "orders"
    }
    assert outcomes == {
        0: ("delivered", "success", 1),
        1: ("delivered", "success", 2),
        2: ("dead_lettered", "drop", 1),
    }
    assert [e["data"] for e in subscriber.events if e["data"]["n"] == 0] == [
        {"n": 0, "answer": "SUCCESS"}
    ]
    [dead] = subscriber.dead_letters
    assert (dead["topic"], dead["data"]["n"]) == ("orders", 2)
    assert dead["traceparent"].endswith("-01")


async def test_invoke_method_over_http_sees_what_daprd_answers(
    served: tuple[Subscriber, Sidecar],
) -> None:
    subscriber, _ = served
    client = await asyncio.to_thread(DaprClient)
    # The HTTP invocation client that `DaprClient.invoke_method` runs (on a loop of its own).
    invocation = client.invocation_client
    assert invocation is not None
    try:
        response = await invocation.invoke_method_async(
            "orders",
            "echo",
            data=b'{"x": 1}',
            content_type="application/json",
            http_verb="POST",
            metadata=(("x-tenant", "t1"),),
        )
        with pytest.raises(DaprHttpError) as refused:
            await invocation.invoke_method_async("nobody", "echo", data=b"{}", http_verb="POST")
    finally:
        client.close()  # type: ignore[no-untyped-call]  # the SDK leaves close() unannotated
    assert response.status_code == 200
    assert response.json() == {"got": {"x": 1}}
    headers = {name.lower(): values for name, values in response.headers.items()}
    assert headers["content-type"] == ["text/plain; charset=utf-8"]
    assert len(headers["date"]) == 1
    assert str(headers["traceparent"][0]).endswith("-01")
    [echoed] = subscriber.echoed
    assert echoed["x-tenant"] == "t1"
    assert echoed["dapr-caller-app-id"] == "orders"
    assert echoed["traceparent"].endswith("-01")
    assert refused.value.error_code == "ERR_DIRECT_INVOKE"
    assert refused.value.status_code == 500


async def test_state_and_bulk_publish_through_the_sdk_http_client(
    served: tuple[Subscriber, Sidecar],
) -> None:
    subscriber, sidecar = served
    http = await sdk_http_client()
    base = get_api_url()
    await http.send_bytes(
        method="POST",
        url=f"{base}/state/statestore",
        data=json.dumps([{"key": "task-1", "value": {"title": "write"}}]).encode(),
        headers={},
    )
    stored, answer = await http.send_bytes(
        method="GET", url=f"{base}/state/statestore/task-1", data=None, headers={}
    )
    assert json.loads(stored) == {"title": "write"}
    assert answer.headers["ETag"] == "1"
    with pytest.raises(DaprHttpError) as missing:
        await http.send_bytes(method="GET", url=f"{base}/state/nostore/k", data=None, headers={})
    assert missing.value.error_code == "ERR_STATE_STORE_NOT_FOUND"
    # The Dapr docs' own bulk publish example, as the JavaScript SDK sends it: `entryID`.
    entries = [
        {
            "entryID": str(n),
            "event": {"n": n, "answer": "SUCCESS"},
            "contentType": "application/json",
        }
        for n in (10, 11)
    ]
    await http.send_bytes(
        method="POST",
        url=f"{base.replace('v1.0', 'v1.0-alpha1')}/publish/bulk/pubsub/orders",
        data=json.dumps(entries).encode(),
        headers={},
    )
    await sidecar.wait_for(lambda: len(subscriber.events) == 2)
    assert sorted(e["data"]["n"] for e in subscriber.events) == [10, 11]
