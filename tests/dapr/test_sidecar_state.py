"""The state API (DAPR.md §3): save, get, delete, bulk, transactions, ETags."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from todo_observability.testing.sidecar import Sidecar

from .conftest import FakeApp, SidecarFactory

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sidecar(make_sidecar: SidecarFactory) -> Sidecar:
    return await make_sidecar(FakeApp())


async def save(
    sidecar: Sidecar, *items: dict[str, Any], store: str = "statestore"
) -> httpx.Response:
    async with sidecar.client() as client:
        return await client.post(f"/v1.0/state/{store}", json=list(items))


async def get(sidecar: Sidecar, key: str) -> httpx.Response:
    async with sidecar.client() as client:
        return await client.get(f"/v1.0/state/statestore/{key}")


async def test_save_then_get_with_etag(sidecar: Sidecar) -> None:
    assert (await save(sidecar, {"key": "task-1", "value": {"title": "write"}})).status_code == 204
    response = await get(sidecar, "task-1")
    assert response.status_code == 200
    assert response.json() == {"title": "write"}
    assert response.headers["etag"] == "1"
    await save(sidecar, {"key": "task-1", "value": "changed"})
    again = await get(sidecar, "task-1")
    assert (again.json(), again.headers["etag"]) == ("changed", "2")


async def test_a_missing_key_is_204_without_body(sidecar: Sidecar) -> None:
    response = await get(sidecar, "nothing")
    assert (response.status_code, response.content) == (204, b"")


async def test_a_matching_etag_updates_a_stale_one_conflicts(sidecar: Sidecar) -> None:
    await save(sidecar, {"key": "k", "value": 1})
    assert (await save(sidecar, {"key": "k", "value": 2, "etag": "1"})).status_code == 204
    stale = await save(sidecar, {"key": "k", "value": 3, "etag": "1"})
    assert stale.status_code == 409
    assert stale.json()["errorCode"] == "ERR_STATE_SAVE"
    assert "possible etag mismatch" in stale.json()["message"]
    assert (await get(sidecar, "k")).json() == 2


async def test_an_invalid_etag_is_400(sidecar: Sidecar) -> None:
    await save(sidecar, {"key": "k", "value": 1})
    response = await save(sidecar, {"key": "k", "value": 2, "etag": "not-a-version"})
    assert response.status_code == 400
    assert response.json()["errorCode"] == "ERR_STATE_SAVE"
    assert "invalid etag value" in response.json()["message"]


async def test_first_write_only_creates_without_etag(sidecar: Sidecar) -> None:
    first_write = {"concurrency": "first-write"}
    created = await save(sidecar, {"key": "k", "value": 1, "options": first_write})
    assert created.status_code == 204
    again = await save(sidecar, {"key": "k", "value": 2, "options": first_write})
    assert again.status_code == 409
    # last-write (the default) without an ETag always wins
    assert (await save(sidecar, {"key": "k", "value": 3})).status_code == 204
    assert (await get(sidecar, "k")).json() == 3


async def test_delete_with_if_match(sidecar: Sidecar) -> None:
    await save(sidecar, {"key": "k", "value": 1})
    async with sidecar.client() as client:
        stale = await client.delete("/v1.0/state/statestore/k", headers={"If-Match": "7"})
        done = await client.delete("/v1.0/state/statestore/k", headers={"If-Match": "1"})
        missing = await client.delete("/v1.0/state/statestore/k")
    assert stale.status_code == 409
    assert stale.json()["errorCode"] == "ERR_STATE_DELETE"
    assert stale.json()["message"].startswith("failed deleting state with key k: ")
    assert (done.status_code, missing.status_code) == (204, 204)
    assert (await get(sidecar, "k")).status_code == 204


async def test_bulk_get(sidecar: Sidecar) -> None:
    await save(sidecar, {"key": "a", "value": {"n": 1}}, {"key": "b", "value": "two"})
    async with sidecar.client() as client:
        response = await client.post(
            "/v1.0/state/statestore/bulk", json={"keys": ["a", "b", "c"], "parallelism": 2}
        )
    assert response.status_code == 200
    assert response.json() == [
        {"key": "a", "data": {"n": 1}, "etag": "1"},
        {"key": "b", "data": "two", "etag": "1"},
        {"key": "c"},
    ]


async def test_a_transaction_applies_everything_or_nothing(sidecar: Sidecar) -> None:
    await save(sidecar, {"key": "a", "value": 1}, {"key": "gone", "value": 0})
    async with sidecar.client() as client:
        failed = await client.post(
            "/v1.0/state/statestore/transaction",
            json={
                "operations": [
                    {"operation": "upsert", "request": {"key": "b", "value": 2}},
                    {"operation": "upsert", "request": {"key": "a", "value": 9, "etag": "5"}},
                ]
            },
        )
        applied = await client.post(
            "/v1.0/state/statestore/transaction",
            json={
                "operations": [
                    {"operation": "upsert", "request": {"key": "b", "value": 2}},
                    {"operation": "delete", "request": {"key": "gone"}},
                ]
            },
        )
        unknown = await client.post(
            "/v1.0/state/statestore/transaction",
            json={"operations": [{"operation": "merge", "request": {"key": "b"}}]},
        )
    assert failed.status_code == 500
    assert failed.json()["errorCode"] == "ERR_STATE_TRANSACTION"
    assert applied.status_code == 204
    assert (await get(sidecar, "b")).json() == 2
    assert (await get(sidecar, "gone")).status_code == 204
    assert unknown.status_code == 400
    assert unknown.json() == {
        "errorCode": "ERR_NOT_SUPPORTED_STATE_OPERATION",
        "message": "operation type merge not supported",
    }


async def test_an_unknown_store_is_daprd_not_found_error(sidecar: Sidecar) -> None:
    response = await save(sidecar, {"key": "k", "value": 1}, store="other")
    assert response.status_code == 400
    body = response.json()
    assert (body["errorCode"], body["message"]) == (
        "ERR_STATE_STORE_NOT_FOUND",
        "state store other is not found",
    )
    assert body["details"][0]["reason"] == "DAPR_STATE_NOT_FOUND"


async def test_keys_with_the_prefix_separator_are_refused(sidecar: Sidecar) -> None:
    response = await save(sidecar, {"key": "ke||y1", "value": 1})
    assert response.status_code == 400
    assert response.json()["errorCode"] == "ERR_MALFORMED_REQUEST"
    assert "can't contain '||'" in response.json()["message"]


async def test_malformed_bodies(sidecar: Sidecar) -> None:
    async with sidecar.client() as client:
        not_json = await client.post("/v1.0/state/statestore", content=b"{")
        no_key = await client.post("/v1.0/state/statestore", json=[{"value": 1}])
    assert (not_json.status_code, not_json.json()["errorCode"]) == (400, "ERR_MALFORMED_REQUEST")
    assert no_key.json() == {
        "errorCode": "ERR_MALFORMED_REQUEST",
        "message": '"key" is a required field',
    }


async def test_ttl_metadata_expires_a_value(sidecar: Sidecar) -> None:
    await save(sidecar, {"key": "k", "value": 1, "metadata": {"ttlInSeconds": "100"}})
    response = await get(sidecar, "k")
    assert response.json() == 1
    assert response.headers["metadata.ttlExpireTime"].endswith("Z")


async def test_state_stores_are_configurable(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp(), state_stores=["cache"])
    assert (await save(sidecar, {"key": "k", "value": 1}, store="cache")).status_code == 204
    assert (await save(sidecar, {"key": "k", "value": 1})).status_code == 400


# --- read as Go reads the bodies ----------------------------------------------------------------


async def test_save_reads_keys_in_any_letter_case(sidecar: Sidecar) -> None:
    response = await save(sidecar, {"Key": "task-1", "Value": {"title": "write"}, "ETAG": ""})
    assert response.status_code == 204
    assert (await get(sidecar, "task-1")).json() == {"title": "write"}


async def test_saved_numbers_go_through_float64(sidecar: Sidecar) -> None:
    async with sidecar.client() as client:
        await client.post(
            "/v1.0/state/statestore",
            content=b'[{"key":"k","value":{"n":1.0,"id":12345678901234567890}}]',
        )
    assert (await get(sidecar, "k")).content == b'{"id":12345678901234567000,"n":1}'


async def test_a_save_of_the_wrong_type_answers_go_s_error(sidecar: Sidecar) -> None:
    response = await save(sidecar, {"key": 1})
    assert response.status_code == 400
    assert response.json() == {
        "errorCode": "ERR_MALFORMED_REQUEST",
        "message": "json: cannot unmarshal number into Go struct field SetRequest.key of type "
        "string",
    }


async def test_bulk_get_and_transactions_read_keys_in_any_letter_case(sidecar: Sidecar) -> None:
    async with sidecar.client() as client:
        done = await client.post(
            "/v1.0/state/statestore/transaction",
            json={
                "Operations": [
                    {"Operation": "upsert", "Request": {"KEY": "a", "value": 1}},
                    {"operation": "upsert", "request": {"key": "b", "Value": 2}},
                ]
            },
        )
        bulk = await client.post("/v1.0/state/statestore/bulk", json={"Keys": ["a", "b"]})
        refused = await client.post(
            "/v1.0/state/statestore/transaction",
            json={"operations": [{"operation": "upsert", "request": {"key": 1}}]},
        )
    assert done.status_code == 204
    assert [(item["key"], item["data"]) for item in bulk.json()] == [("a", 1), ("b", 2)]
    assert refused.status_code == 400
    assert refused.json()["message"] == (
        "failed deserializing HTTP body: 1 error(s) decoding:\n\n"
        "* 'Key' expected type 'string', got unconvertible type 'float64', value: '1'"
    )
