"""Publishing (DAPR.md §1.4): the CloudEvent daprd builds, its trace fields, and the record."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from todo_observability.testing.sidecar import Broker, Sidecar

from .conftest import (
    APP_SPAN_ID,
    APP_TRACEPARENT,
    TRACE_ID,
    FakeApp,
    SidecarFactory,
    by_name,
    only,
    parent_span_id,
    publish,
)

pytestmark = pytest.mark.anyio


async def published_event(sidecar: Sidecar) -> dict[str, object]:
    record = sidecar.published[-1]
    event = json.loads(record.value)
    assert isinstance(event, dict)
    return event


async def test_generated_envelope_has_every_field_daprd_sets(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    response = await publish(sidecar, {"task": 7}, headers={"traceparent": APP_TRACEPARENT})
    assert response.status_code == 204
    event = await published_event(sidecar)
    assert set(event) == {
        "id",
        "source",
        "type",
        "specversion",
        "datacontenttype",
        "data",
        "topic",
        "pubsubname",
        "traceid",
        "traceparent",
        "tracestate",
        "time",
    }
    assert event["source"] == "backend"
    assert event["type"] == "com.dapr.event.sent"
    assert event["specversion"] == "1.0"
    assert event["datacontenttype"] == "application/json"
    assert event["data"] == {"task": 7}
    assert (event["topic"], event["pubsubname"]) == ("orders", "pubsub")
    assert event["tracestate"] == ""
    moment = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
    assert abs(moment - datetime.now(timezone.utc)) < timedelta(seconds=5)
    assert moment.microsecond == 0


async def test_traceid_and_traceparent_are_the_sidecar_client_span_child_of_the_app_header(
    make_sidecar: SidecarFactory, spans: InMemorySpanExporter
) -> None:
    sidecar = await make_sidecar(FakeApp())
    response = await publish(sidecar, {"a": 1}, headers={"traceparent": APP_TRACEPARENT})
    event = await published_event(sidecar)
    span = only(by_name(spans, "/v1.0/publish/pubsub/orders"))
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == APP_SPAN_ID
    expected = f"00-{TRACE_ID}-{span.context.span_id:016x}-01"
    assert event["traceid"] == event["traceparent"] == expected
    assert parent_span_id(expected) != APP_SPAN_ID
    # daprd adds its span's context to the response when the handler did not set one
    assert response.headers["traceparent"] == expected
    assert span.resource.attributes["service.name"] == "backend"


async def test_tracestate_of_the_app_is_carried_into_the_cloudevent(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp())
    await publish(
        sidecar, {}, headers={"traceparent": APP_TRACEPARENT, "tracestate": "vendor=x,other=y"}
    )
    event = await published_event(sidecar)
    assert event["tracestate"] == "vendor=x,other=y"


async def test_an_unsampled_parent_makes_an_unsampled_sidecar_span(
    make_sidecar: SidecarFactory, spans: InMemorySpanExporter
) -> None:
    sidecar = await make_sidecar(FakeApp())
    await publish(sidecar, {}, headers={"traceparent": f"00-{TRACE_ID}-{APP_SPAN_ID}-00"})
    event = await published_event(sidecar)
    traceparent = str(event["traceparent"])
    assert traceparent.startswith(f"00-{TRACE_ID}-")
    assert traceparent.endswith("-00")
    assert parent_span_id(traceparent) != APP_SPAN_ID
    assert spans.get_finished_spans() == ()  # ParentBased: not sampled, not exported


@pytest.mark.parametrize(
    "traceparent",
    [
        f"00-{TRACE_ID.upper()}-{APP_SPAN_ID}-01",  # uppercase hex
        f"00-{'0' * 32}-{APP_SPAN_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero span id
        f"00-{TRACE_ID}-{APP_SPAN_ID}-01-extra",  # version 00 has exactly 4 parts
        f"ff-{TRACE_ID}-{APP_SPAN_ID}-01",  # version ff is invalid
        f"0-{TRACE_ID}-{APP_SPAN_ID}-01",  # version is 2 hex chars
        f"00-{TRACE_ID[:-1]}-{APP_SPAN_ID}-01",  # trace id is 32 chars
    ],
)
async def test_an_invalid_traceparent_means_a_new_root(
    make_sidecar: SidecarFactory, traceparent: str
) -> None:
    sidecar = await make_sidecar(FakeApp())
    await publish(sidecar, {}, headers={"traceparent": traceparent})
    event = await published_event(sidecar)
    assert TRACE_ID not in str(event["traceparent"])
    assert str(event["traceparent"]).startswith("00-")


async def test_tracing_off_leaves_the_trace_fields_empty_even_with_a_traceparent(
    make_sidecar: SidecarFactory, spans: InMemorySpanExporter
) -> None:
    sidecar = await make_sidecar(FakeApp(), sampling_rate=0)
    response = await publish(sidecar, {"a": 1}, headers={"traceparent": APP_TRACEPARENT})
    event = await published_event(sidecar)
    assert (event["traceid"], event["traceparent"], event["tracestate"]) == ("", "", "")
    assert "traceparent" not in response.headers
    assert spans.get_finished_spans() == ()


async def test_without_json_content_type_the_data_is_a_json_string(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp())
    await publish(sidecar, content=b'{"task": 7}')
    event = await published_event(sidecar)
    assert event["datacontenttype"] == "text/plain"
    assert event["data"] == '{"task": 7}'


async def test_invalid_json_with_json_content_type_is_kept_as_a_string(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp())
    await publish(sidecar, content=b"{not json", headers={"content-type": "application/json"})
    assert (await published_event(sidecar))["data"] == "{not json"


async def test_octet_stream_goes_to_data_base64(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    payload = bytes(range(256))
    await publish(sidecar, content=payload, headers={"content-type": "application/octet-stream"})
    event = await published_event(sidecar)
    assert "data" not in event
    assert base64.b64decode(str(event["data_base64"])) == payload


async def test_stored_bytes_are_marshalled_like_go(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    await publish(
        sidecar,
        content=b'{"z": 1, "a": "<b>&", "n": 12345678901234567890.5}',
        headers={"content-type": "application/json"},
    )
    value = sidecar.published[-1].value
    keys = list(json.loads(value))
    assert keys == sorted(keys)
    assert b'"data":{"a":"\\u003cb\\u003e\\u0026","n":12345678901234567890.5,"z":1}' in value
    assert b" " not in value.replace(b"com.dapr", b"")


async def test_app_authored_cloudevent_without_traceid_gets_the_sidecar_context(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp())
    mine = f"00-{'1' * 32}-{'2' * 16}-01"
    event_in = {"id": "e1", "source": "me", "type": "t", "traceparent": mine, "data": 1}
    await publish(
        sidecar,
        content=json.dumps(event_in).encode(),
        headers={"content-type": "application/cloudevents+json", "traceparent": APP_TRACEPARENT},
    )
    event = await published_event(sidecar)
    # only traceparent, no traceid: daprd overwrites both with its own span
    assert event["traceparent"] == event["traceid"]
    assert str(event["traceparent"]).startswith(f"00-{TRACE_ID}-")
    assert (event["id"], event["source"], event["type"]) == ("e1", "me", "t")


async def test_app_authored_cloudevent_with_traceid_keeps_its_trace_fields(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp())
    mine = f"00-{'1' * 32}-{'2' * 16}-01"
    event_in = {
        "id": "e1",
        "traceid": mine,
        "traceparent": mine,
        "tracestate": "mine=1",
        "topic": "elsewhere",
        "pubsubname": "other",
        "custom": "kept",
    }
    await publish(
        sidecar,
        content=json.dumps(event_in).encode(),
        headers={"content-type": "application/cloudevents+json", "traceparent": APP_TRACEPARENT},
    )
    event = await published_event(sidecar)
    assert (event["traceid"], event["traceparent"], event["tracestate"]) == (mine, mine, "mine=1")
    # topic and pubsubname are always overwritten; missing attributes get defaults
    assert (event["topic"], event["pubsubname"]) == ("orders", "pubsub")
    assert (event["source"], event["type"], event["specversion"]) == (
        "Dapr",
        "com.dapr.event.sent",
        "1.0",
    )
    assert event["custom"] == "kept"
    assert "time" in event


async def test_app_authored_cloudevent_that_is_not_an_object_is_refused(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp())
    response = await publish(
        sidecar, content=b'{"}', headers={"content-type": "application/cloudevents+json"}
    )
    assert response.status_code == 500
    assert response.json()["errorCode"] == "ERR_PUBSUB_CLOUD_EVENTS_SER"
    assert response.json()["message"] == "cannot create cloudevent"
    assert sidecar.published == []


async def test_cloudevent_metadata_overrides_the_envelope(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    producer = f"00-{'1' * 32}-{'2' * 16}-01"
    await publish(
        sidecar,
        {"a": 1},
        headers={"traceparent": APP_TRACEPARENT},
        metadata={
            "cloudevent.id": "my-id",
            "cloudevent.source": "my-source",
            "cloudevent.type": "my.type",
            "cloudevent.subject": "my-subject",
            "cloudevent.traceparent": producer,
            "cloudevent.tracestate": "k=v",
        },
    )
    event = await published_event(sidecar)
    assert (event["id"], event["source"], event["type"], event["subject"]) == (
        "my-id",
        "my-source",
        "my.type",
        "my-subject",
    )
    assert event["traceparent"] == event["traceid"] == producer
    assert event["tracestate"] == "k=v"


async def test_cloudevent_traceid_override_sets_both_fields_even_with_tracing_off(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp(), sampling_rate=0)
    producer = f"00-{'1' * 32}-{'2' * 16}-01"
    await publish(sidecar, {}, metadata={"cloudevent.traceid": producer})
    event = await published_event(sidecar)
    assert event["traceparent"] == event["traceid"] == producer


async def test_cloudevent_subject_needs_runtime_1_17(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp(), runtime_version="1.16.2")
    await publish(sidecar, {}, metadata={"cloudevent.subject": "ignored"})
    assert "subject" not in await published_event(sidecar)


async def test_ttl_in_seconds_adds_an_expiration(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    await publish(sidecar, {}, metadata={"ttlInSeconds": "60"})
    event = await published_event(sidecar)
    expiration = datetime.fromisoformat(str(event["expiration"]).replace("Z", "+00:00"))
    assert timedelta(seconds=55) < expiration - datetime.now(timezone.utc) <= timedelta(seconds=60)
    await publish(sidecar, {}, metadata={"ttlInSeconds": "-3"})
    assert "expiration" not in await published_event(sidecar)


async def test_raw_payload_is_stored_unchanged_without_an_envelope(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp())
    await publish(
        sidecar,
        content=b"\x00raw bytes",
        headers={"traceparent": APP_TRACEPARENT},
        metadata={"rawPayload": "true"},
    )
    record = sidecar.published[-1]
    assert record.value == b"\x00raw bytes"
    # HTTP + rawPayload: the trace context is not put in the metadata (unlike gRPC)
    assert "traceparent" not in record.headers
    assert "traceid" not in record.headers


async def test_an_invalid_raw_payload_flag_is_a_metadata_error(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp())
    response = await publish(sidecar, {}, metadata={"rawPayload": "maybe"})
    assert response.status_code == 400
    body = response.json()
    assert body["errorCode"] == "ERR_PUBSUB_REQUEST_METADATA"
    assert body["message"].startswith("failed deserializing metadata: ")


async def test_every_metadata_key_becomes_a_record_header_and_partition_key_the_key(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp())
    metadata = {"partitionKey": "user-7", "ttlInSeconds": "30", "custom": "x", "traceparent": "t"}
    await publish(sidecar, {}, metadata=metadata)
    record = sidecar.published[-1]
    assert dict(record.headers) == metadata
    assert record.key == "user-7"


async def test_partition_key_and_partition_number_choose_the_partition(
    make_sidecar: SidecarFactory,
) -> None:
    broker = Broker(partitions=4)
    sidecar = await make_sidecar(FakeApp(), broker=broker)
    for _ in range(3):
        await publish(sidecar, {}, metadata={"partitionKey": "same-key"})
    partitions = {record.partition for record in sidecar.published}
    assert len(partitions) == 1
    await publish(sidecar, {}, metadata={"partitionNumber": "2"})
    assert sidecar.published[-1].partition == 2
    response = await publish(sidecar, {}, metadata={"partitionNumber": "9"})
    assert response.status_code == 500
    assert response.json()["errorCode"] == "ERR_PUBSUB_PUBLISH_MESSAGE"


async def test_unknown_pubsub_is_daprd_not_found_error(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    response = await publish(sidecar, {}, pubsub="nope")
    assert response.status_code == 404
    body = response.json()
    assert body["errorCode"] == "ERR_PUBSUB_NOT_FOUND"
    assert body["message"] == "pubsub nope not found"
    reasons = {detail.get("reason") for detail in body["details"]}
    assert "DAPR_PUBSUB_NOT_FOUND" in reasons
    resource = next(d for d in body["details"] if "resource_name" in d)
    assert (resource["resource_type"], resource["resource_name"]) == ("pubsub", "nope")


async def test_other_configured_pubsub_components_are_accepted(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp(), pubsubs=["pubsub", "events"])
    assert (await publish(sidecar, {}, pubsub="events")).status_code == 204
    assert sidecar.published[-1].pubsub == "events"


async def test_an_injected_publish_failure_answers_publish_message_error(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp())
    sidecar.fail_next_publishes(2, status=503, message="broker down")
    first, second, third = [await publish(sidecar, {}) for _ in range(3)]
    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 204)
    assert first.json()["errorCode"] == "ERR_PUBSUB_PUBLISH_MESSAGE"
    assert first.json()["message"] == (
        "error when publishing to topic orders in pubsub pubsub: broker down"
    )
    assert len(sidecar.published) == 1


async def test_api_token_is_required_when_configured(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp(), api_token="s3cret")
    refused = await publish(sidecar, {})
    assert refused.status_code == 401
    assert refused.text == "invalid api token\n"
    accepted = await publish(sidecar, {}, headers={"dapr-api-token": "s3cret"})
    assert accepted.status_code == 204
    assert len(sidecar.published) == 1
    # healthz is not behind the token
    async with sidecar.client() as client:
        assert (await client.get("/v1.0/healthz")).status_code == 204


# --- bulk publish ---------------------------------------------------------------------------------


async def bulk_publish(
    sidecar: Sidecar, entries: object, *, api: str = "v1.0-alpha1", **params: str
) -> httpx.Response:
    async with sidecar.client() as client:
        return await client.post(
            f"/{api}/publish/bulk/pubsub/orders",
            json=entries,
            params={f"metadata.{k}": v for k, v in params.items()},
            headers={"traceparent": APP_TRACEPARENT},
        )


async def test_bulk_publish_wraps_each_entry_with_its_own_producer_span(
    make_sidecar: SidecarFactory, spans: InMemorySpanExporter
) -> None:
    sidecar = await make_sidecar(FakeApp())
    response = await bulk_publish(
        sidecar,
        [
            {"entryId": "1", "event": {"n": 1}, "contentType": "application/json"},
            {
                "entryId": "2",
                "event": "plain text",
                "contentType": "text/plain",
                "metadata": {"partitionKey": "k2"},
            },
        ],
        custom="request-level",
    )
    assert response.status_code == 204
    first, second = (json.loads(record.value) for record in sidecar.published)
    assert first["data"] == {"n": 1}
    assert (second["data"], second["datacontenttype"]) == ("plain text", "text/plain")
    assert dict(sidecar.published[0].headers) == {"custom": "request-level"}
    assert dict(sidecar.published[1].headers) == {"custom": "request-level", "partitionKey": "k2"}
    request_span = only(
        [
            s
            for s in by_name(spans, "/v1.0-alpha1/publish/bulk/pubsub/orders")
            if s.kind is SpanKind.CLIENT
        ]
    )
    producers = [s for s in spans.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert len(producers) == 2
    for producer, event in zip(producers, (first, second), strict=True):
        assert producer.parent is not None
        assert producer.parent.span_id == request_span.context.span_id
        assert event["traceparent"] == f"00-{TRACE_ID}-{producer.context.span_id:016x}-01"


async def test_bulk_publish_entries_need_unique_ids(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    missing = await bulk_publish(sidecar, [{"event": 1, "contentType": "application/json"}])
    twice = await bulk_publish(
        sidecar,
        [
            {"entryId": "a", "event": 1, "contentType": "application/json"},
            {"entryId": "a", "event": 2, "contentType": "application/json"},
        ],
    )
    not_a_list = await bulk_publish(sidecar, {"entryID": ""})
    for response in (missing, twice):
        assert response.status_code == 400
        assert response.json()["errorCode"] == "ERR_PUBSUB_EVENTS_SER"
        assert "entryId is duplicated or not present" in response.json()["message"]
    assert not_a_list.status_code == 400
    assert not_a_list.json()["message"].startswith(
        "error when unmarshaling the request for topic orders pubsub pubsub: "
    )
    assert sidecar.published == []


async def test_bulk_publish_reports_failed_entries(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    sidecar.fail_next_publishes(1, message="broker down")
    response = await bulk_publish(
        sidecar,
        [
            {"entryId": "a", "event": 1, "contentType": "application/json"},
            {"entryId": "b", "event": 2, "contentType": "application/json"},
        ],
        api="v1.0",
    )
    assert response.status_code == 500
    assert response.json() == {
        "failedEntries": [
            {
                "entryId": "a",
                "error": "error when publishing to topic orders in pubsub pubsub: broker down",
            }
        ],
        "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE",
    }
    assert [json.loads(r.value)["data"] for r in sidecar.published] == [2]


async def test_bulk_publish_raw_payload_and_binary_entries(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    payload = base64.b64encode(b"\x00\x01").decode()
    response = await bulk_publish(
        sidecar,
        [{"entryId": "a", "event": payload, "contentType": "application/octet-stream"}],
        rawPayload="true",
    )
    assert response.status_code == 204
    assert sidecar.published[0].value == b"\x00\x01"
    mismatch = await bulk_publish(
        sidecar, [{"entryId": "b", "event": {"not": "text"}, "contentType": "text/plain"}]
    )
    assert mismatch.status_code == 500
    assert mismatch.json()["errorCode"] == "ERR_PUBSUB_CLOUD_EVENTS_SER"


async def test_bulk_publish_reads_keys_in_any_letter_case_as_the_js_sdk_sends_them(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp())
    response = await bulk_publish(
        sidecar,
        [
            {"entryID": "a", "event": {"n": 1}, "contentType": "application/json"},
            {"EntryId": "b", "Event": "two", "ContentType": "text/plain", "METADATA": {"k": "v"}},
        ],
    )
    assert response.status_code == 204
    first, second = (json.loads(record.value) for record in sidecar.published)
    assert (first["data"], second["data"]) == ({"n": 1}, "two")
    assert dict(sidecar.published[1].headers) == {"k": "v"}


async def test_bulk_publish_events_are_go_values_numbers_float64(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp())
    response = await bulk_publish(
        sidecar,
        [
            {
                "entryId": "a",
                "event": {"n": 1.0, "id": 12345678901234567890, "s": "<&>"},
                "contentType": "application/json",
            }
        ],
    )
    assert response.status_code == 204
    assert (
        b'"data":{"id":12345678901234567000,"n":1,"s":"\\u003c\\u0026\\u003e"}'
        in sidecar.published[0].value
    )


async def test_bulk_publish_reports_go_s_decoding_error(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    response = await bulk_publish(sidecar, [{"entryId": 7, "event": 1}])
    assert response.status_code == 400
    assert response.json()["message"] == (
        "error when unmarshaling the request for topic orders pubsub pubsub: json: cannot "
        "unmarshal number into Go struct field bulkPublishMessageEntry.entryId of type string"
    )


# --- daprd's trace flags ----------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "flags"), [(1.0, "01"), (1e-12, "00")])
async def test_root_spans_carry_daprd_s_trace_flags(
    make_sidecar: SidecarFactory, rate: float, flags: str
) -> None:
    sidecar = await make_sidecar(FakeApp(), sampling_rate=rate)
    response = await publish(sidecar, {"n": 1})
    event = json.loads(only(sidecar.published).value)
    assert response.headers["traceparent"].endswith(f"-{flags}")
    assert event["traceparent"].endswith(f"-{flags}")
    assert event["traceid"] == event["traceparent"]


async def test_the_first_of_repeated_traceparent_headers_is_the_publish_s_parent(
    make_sidecar: SidecarFactory,
) -> None:
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    sidecar = await make_sidecar(FakeApp())
    await publish(
        sidecar, {"n": 1}, headers=[("traceparent", APP_TRACEPARENT), ("traceparent", other)]
    )
    event = json.loads(only(sidecar.published).value)
    assert event["traceparent"].split("-")[1] == TRACE_ID
