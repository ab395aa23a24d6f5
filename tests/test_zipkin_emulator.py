"""The Zipkin API v2 emulator: what it accepts, how it stores it, how it answers queries.

The rules checked here are Zipkin's (zipkin2-api.yaml and the server's `QueryRequest`): names
lower-cased on ingest, ids left-padded, `/api/v2/traces` filters and their validation, most recent
traces first. The last tests send real spans with the OpenTelemetry Zipkin exporter over HTTP.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.helpers import client as asgi_client
from todo_observability.testing.zipkin import ZipkinEmulator, ZipkinError, normalize_span

pytestmark = pytest.mark.anyio

NOW_US = int(time.time() * 1_000_000)
TRACE_A = "a" * 32
TRACE_B = "b" * 32


def span(trace_id: str, span_id: str, **fields: Any) -> dict[str, Any]:
    """A Zipkin v2 span that started a second ago, unless told otherwise."""
    return {
        "traceId": trace_id,
        "id": span_id,
        "timestamp": NOW_US - 1_000_000,
        "duration": 1_000,
        **fields,
    }


def endpoint(service: str) -> dict[str, str]:
    return {"serviceName": service}


@pytest.fixture
def zipkin() -> ZipkinEmulator:
    return ZipkinEmulator()


@pytest.fixture
async def client(zipkin: ZipkinEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(zipkin.app) as http:
        yield http


@pytest.fixture
def two_traces(zipkin: ZipkinEmulator) -> None:
    """Trace A (older): backend GET /tasks with a slow db span tagged; trace B: frontend only."""
    zipkin.add(
        [
            span(
                TRACE_A,
                "000000000000000a",
                name="GET /tasks",
                kind="SERVER",
                localEndpoint=endpoint("backend"),
                remoteEndpoint=endpoint("frontend"),
                timestamp=NOW_US - 5_000_000,
                duration=800_000,
                tags={"http.route": "/tasks", "http.response.status_code": "200"},
            ),
            span(
                TRACE_A,
                "000000000000000b",
                parentId="000000000000000a",
                name="SELECT tasks",
                kind="CLIENT",
                localEndpoint=endpoint("backend"),
                timestamp=NOW_US - 4_900_000,
                duration=600_000,
                annotations=[{"timestamp": NOW_US - 4_800_000, "value": "retried"}],
                tags={"db.system": "sqlite", "error": "timeout"},
            ),
            span(
                TRACE_B,
                "000000000000000c",
                name="GET /",
                kind="SERVER",
                localEndpoint=endpoint("frontend"),
                timestamp=NOW_US - 2_000_000,
                duration=3_000,
            ),
        ]
    )


def trace_ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [trace[0]["traceId"] for trace in response.json()]


# Ingest.


async def test_posted_spans_are_accepted_with_202_and_stored_normalized(
    zipkin: ZipkinEmulator, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        "/api/v2/spans",
        json=[
            span(
                "ABC",
                "1F",
                parentId="0000000000000000",
                name="POST /Tasks",
                kind="SERVER",
                localEndpoint={"serviceName": "Backend", "port": 0},
                remoteEndpoint={},
                tags={"Key": "Value"},
            )
        ],
    )

    assert response.status_code == 202
    assert response.content == b""
    [stored] = zipkin.spans
    assert stored["traceId"] == "0000000000000abc"
    assert stored["id"] == "000000000000001f"
    assert "parentId" not in stored  # a zero parent means root
    assert stored["name"] == "post /tasks"
    assert stored["localEndpoint"] == {"serviceName": "backend"}
    assert "remoteEndpoint" not in stored
    assert stored["tags"] == {"Key": "Value"}  # tags keep their case


def test_a_span_that_is_its_own_parent_is_stored_as_a_root() -> None:
    assert "parentId" not in normalize_span(span(TRACE_A, "00000000000000aa", parentId="aa"))


async def test_gzip_bodies_are_accepted(zipkin: ZipkinEmulator, client: httpx.AsyncClient) -> None:
    body = gzip.compress(json.dumps([span(TRACE_A, "0000000000000001", name="x")]).encode())

    response = await client.post(
        "/api/v2/spans",
        content=body,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )

    assert response.status_code == 202
    assert [s["name"] for s in zipkin.spans] == ["x"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"traceId": TRACE_A}, "Expected a JSON array of spans"),
        ([{"id": "0000000000000001"}], "Missing: traceId"),
        ([span("xyz", "0000000000000001")], "lower-hex"),
        ([span(TRACE_A, "00000000000000001")], "1 to 16 character"),
        ([span(TRACE_A, "0000000000000001", kind="INTERNAL")], "kind must be one of"),
        ([span(TRACE_A, "0000000000000001", tags={"n": 1})], "tags must be an object of string"),
        ([span(TRACE_A, "0000000000000001", duration=-1)], "duration must be a non-negative"),
        ([span(TRACE_A, "0000000000000001", annotations=[{"value": "x"}])], "annotations"),
    ],
)
async def test_malformed_spans_are_refused_with_400_and_the_reason(
    zipkin: ZipkinEmulator, client: httpx.AsyncClient, body: Any, message: str
) -> None:
    response = await client.post("/api/v2/spans", json=body)

    assert response.status_code == 400
    assert message in response.text
    assert zipkin.spans == []


async def test_protobuf_is_not_emulated(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v2/spans", content=b"\x0a", headers={"content-type": "application/x-protobuf"}
    )

    assert response.status_code == 415
    assert "JSON only" in response.text


def test_parts_of_one_span_reported_twice_are_merged(zipkin: ZipkinEmulator) -> None:
    zipkin.add([span(TRACE_A, "0000000000000001", name="x", tags={"a": "1"})])
    zipkin.add([span(TRACE_A, "0000000000000001", tags={"b": "2"})])

    [stored] = zipkin.spans
    assert stored["name"] == "x"
    assert stored["tags"] == {"a": "1", "b": "2"}


def test_add_refuses_an_invalid_span() -> None:
    with pytest.raises(ZipkinError, match="Missing: id"):
        ZipkinEmulator([{"traceId": TRACE_A}])


# Names.


@pytest.mark.usefixtures("two_traces")
async def test_services_and_span_names_are_listed_sorted(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v2/services")).json() == ["backend", "frontend"]
    assert (await client.get("/api/v2/spans", params={"serviceName": "Backend"})).json() == [
        "get /tasks",
        "select tasks",
    ]
    assert (
        await client.get("/api/v2/remoteServices", params={"serviceName": "backend"})
    ).json() == ["frontend"]


@pytest.mark.parametrize("path", ["/api/v2/spans", "/api/v2/remoteServices"])
async def test_span_names_need_a_service_name(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 400
    assert "serviceName is required" in response.text


# /api/v2/traces


@pytest.mark.usefixtures("two_traces")
async def test_traces_are_returned_most_recent_first_up_to_the_limit(
    client: httpx.AsyncClient,
) -> None:
    assert trace_ids(await client.get("/api/v2/traces")) == [TRACE_B, TRACE_A]
    assert trace_ids(await client.get("/api/v2/traces", params={"limit": "1"})) == [TRACE_B]


@pytest.mark.usefixtures("two_traces")
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"serviceName": "backend"}, [TRACE_A]),
        ({"serviceName": "BACKEND", "spanName": "GET /tasks"}, [TRACE_A]),
        ({"serviceName": "all", "spanName": "all"}, [TRACE_B, TRACE_A]),
        # The service constrains the span name: frontend has no span "get /tasks".
        ({"serviceName": "frontend", "spanName": "get /tasks"}, []),
        ({"spanName": "get /"}, [TRACE_B]),
        ({"serviceName": "backend", "remoteServiceName": "frontend"}, [TRACE_A]),
        ({"annotationQuery": "db.system=sqlite"}, [TRACE_A]),
        ({"annotationQuery": "db.system=postgresql"}, []),
        ({"annotationQuery": "error"}, [TRACE_A]),
        ({"annotationQuery": "retried and http.route=/tasks"}, [TRACE_A]),
        ({"annotationQuery": "retried", "serviceName": "frontend"}, []),
        ({"minDuration": "500000"}, [TRACE_A]),
        ({"minDuration": "500000", "maxDuration": "700000"}, [TRACE_A]),
        ({"minDuration": "900000"}, []),
        ({"minDuration": "1"}, [TRACE_B, TRACE_A]),
        # endTs given: the test may start a while after NOW_US was taken.
        ({"endTs": str(NOW_US // 1000), "lookback": "3000"}, [TRACE_B]),
        ({"endTs": str(NOW_US // 1000 - 3_000)}, [TRACE_A]),
        ({"endTs": str(NOW_US // 1000 - 3_000), "lookback": "1000"}, []),
    ],
)
async def test_trace_queries_filter_like_zipkin(
    client: httpx.AsyncClient, params: dict[str, str], expected: list[str]
) -> None:
    assert trace_ids(await client.get("/api/v2/traces", params=params)) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"maxDuration": "10"}, "maxDuration is only valid with minDuration"),
        ({"minDuration": "0"}, "minDuration <= 0"),
        ({"minDuration": "10", "maxDuration": "5"}, "maxDuration < minDuration"),
        ({"limit": "0"}, "limit <= 0"),
        ({"lookback": "-1"}, "lookback <= 0"),
        ({"endTs": "0"}, "endTs <= 0"),
        ({"limit": "ten"}, "limit must be an integer"),
    ],
)
async def test_invalid_trace_queries_are_refused_with_400(
    client: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    response = await client.get("/api/v2/traces", params=params)

    assert response.status_code == 400
    assert response.text == message or message in response.text


# One trace, many traces, autocomplete, health.


@pytest.mark.usefixtures("two_traces")
async def test_a_trace_is_returned_by_id_in_start_order(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/api/v2/trace/{TRACE_A.upper()}")

    assert response.status_code == 200
    assert [s["id"] for s in response.json()] == ["000000000000000a", "000000000000000b"]


@pytest.mark.usefixtures("two_traces")
async def test_an_unknown_or_invalid_trace_id_is_404_or_400(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/api/v2/trace/{'c' * 32}")).status_code == 404
    assert (await client.get("/api/v2/trace/not-hex")).status_code == 400


@pytest.mark.usefixtures("two_traces")
async def test_trace_many_needs_two_unique_ids(client: httpx.AsyncClient) -> None:
    both = await client.get("/api/v2/traceMany", params={"traceIds": f"{TRACE_A},{TRACE_B}"})
    assert both.status_code == 200
    assert sorted(trace[0]["traceId"] for trace in both.json()) == [TRACE_A, TRACE_B]
    assert (await client.get("/api/v2/traceMany", params={"traceIds": TRACE_A})).status_code == 400
    repeated = await client.get("/api/v2/traceMany", params={"traceIds": f"{TRACE_A},{TRACE_A}"})
    assert repeated.status_code == 400


async def test_autocomplete_has_no_configured_keys(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v2/autocompleteKeys")).json() == []
    assert (await client.get("/api/v2/autocompleteValues", params={"key": "env"})).json() == []
    assert (await client.get("/api/v2/autocompleteValues")).status_code == 400


async def test_health_is_up(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json()["status"] == "UP"


# Over a real socket, from the OpenTelemetry Zipkin exporter.


def test_spans_from_the_opentelemetry_exporter_arrive_over_http(zipkin: ZipkinEmulator) -> None:
    with zipkin.serve() as url:
        provider = TracerProvider(
            resource=Resource.create({"service.name": "Notification-Service"})
        )
        provider.add_span_processor(
            SimpleSpanProcessor(ZipkinExporter(endpoint=f"{url}/api/v2/spans"))
        )
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("reminder trigger", kind=SpanKind.CONSUMER) as parent:
            parent.set_attribute("dapr.job.name", "reminder-1")
            with tracer.start_as_current_span("POST", kind=SpanKind.CLIENT) as child:
                child.set_status(Status(StatusCode.ERROR, "smtp down"))
        provider.shutdown()
        trace_id = format(parent.get_span_context().trace_id, "032x")

        traces = httpx.get(
            f"{url}/api/v2/traces",
            params={
                "serviceName": "notification-service",
                "spanName": "reminder trigger",
                "annotationQuery": "dapr.job.name=reminder-1",
            },
        ).json()
        errors = httpx.get(f"{url}/api/v2/traces", params={"annotationQuery": "error"}).json()

    [trace] = traces
    assert {s["traceId"] for s in trace} == {trace_id}
    by_name = {s["name"]: s for s in trace}
    assert by_name["post"]["parentId"] == by_name["reminder trigger"]["id"]
    assert by_name["reminder trigger"]["kind"] == "CONSUMER"
    assert by_name["post"]["tags"]["error"] == "smtp down"
    assert [t[0]["traceId"] for t in errors] == [trace_id]


def test_serve_stops_listening_when_the_block_ends(zipkin: ZipkinEmulator) -> None:
    with zipkin.serve() as url:
        assert httpx.get(f"{url}/health").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)
