"""The app's answer to a delivery (DAPR.md §2.3, row by row) and retries (§2.4)."""

from __future__ import annotations

import pytest
from starlette.responses import JSONResponse, PlainTextResponse, Response

from todo_observability.exceptions import ConfigurationError
from todo_observability.testing.sidecar import Broker, RetryPolicy

from .conftest import FakeApp, SidecarFactory, only, publish, subscription

pytestmark = pytest.mark.anyio

RETRY_ONCE = RetryPolicy.constant(0.001, max_retries=3)

ACK_ROWS = [
    pytest.param(Response(status_code=200), None, id="2xx-empty-body"),
    pytest.param(Response(status_code=204), None, id="204"),
    pytest.param(Response(b"null", 201), None, id="2xx-null"),
    pytest.param(PlainTextResponse("thanks"), None, id="2xx-non-json-body"),
    pytest.param(JSONResponse({"handled": True}), None, id="2xx-json-without-status"),
    pytest.param(JSONResponse({"status": 5}), None, id="2xx-status-not-a-string"),
    pytest.param(JSONResponse({"status": "SUCCESS"}), "SUCCESS", id="2xx-SUCCESS"),
    pytest.param(JSONResponse([{"status": "RETRY"}]), None, id="2xx-a-list-is-not-an-answer"),
    pytest.param(JSONResponse({"status": None}), None, id="2xx-status-null"),
]


@pytest.mark.parametrize(("answer", "app_status"), ACK_ROWS)
async def test_these_answers_acknowledge_the_message(
    make_sidecar: SidecarFactory, broker: Broker, answer: Response, app_status: str | None
) -> None:
    app = FakeApp([subscription()])
    app.answer("/orders", answer)
    sidecar = await make_sidecar(app, retry_policy=RETRY_ONCE)
    await publish(sidecar, {})
    await broker.idle()
    attempt = only(sidecar.deliveries)
    assert (attempt.outcome, attempt.app_status, attempt.error) == ("success", app_status, None)
    result = only(sidecar.results)
    assert (result.outcome, result.reason, result.attempts) == ("delivered", "success", 1)


RETRY_ROWS = [
    pytest.param(JSONResponse({"status": "RETRY"}), 200, "RETRY", id="2xx-RETRY"),
    pytest.param(JSONResponse({"status": "PAUSE"}), 200, "PAUSE", id="2xx-unknown-status"),
    pytest.param(
        JSONResponse({"status": "success"}), 200, "success", id="status-is-case-sensitive"
    ),
    pytest.param(JSONResponse({"Status": "RETRY"}), 200, "RETRY", id="key-in-any-letter-case"),
    pytest.param(
        Response(b'{"status": "RETRY"} and more', 200), 200, "RETRY", id="first-value-counts"
    ),
    pytest.param(Response(status_code=400), 400, None, id="400"),
    pytest.param(Response(status_code=409), 409, None, id="409"),
    pytest.param(Response(status_code=500), 500, None, id="500"),
    pytest.param(Response(status_code=503), 503, None, id="503"),
]


@pytest.mark.parametrize(("answer", "status", "app_status"), RETRY_ROWS)
async def test_these_answers_are_retried(
    make_sidecar: SidecarFactory,
    broker: Broker,
    answer: Response,
    status: int,
    app_status: str | None,
) -> None:
    app = FakeApp([subscription()])
    app.answer("/orders", answer, Response(status_code=200))
    sidecar = await make_sidecar(app, retry_policy=RETRY_ONCE)
    await publish(sidecar, {})
    await broker.idle()
    first, second = sidecar.deliveries
    assert (first.outcome, first.status_code, first.app_status) == ("retry", status, app_status)
    assert first.error is not None
    assert (second.outcome, second.attempt) == ("success", 2)
    assert only(sidecar.results).attempts == 2


async def test_a_connection_error_is_retried(make_sidecar: SidecarFactory, broker: Broker) -> None:
    app = FakeApp([subscription()])
    sidecar = await make_sidecar(app, retry_policy=RetryPolicy.constant(0.001, max_retries=-1))
    sidecar.set_app_down()
    await publish(sidecar, {})
    await broker.wait_for(lambda: len(sidecar.deliveries) >= 3)
    sidecar.set_app_down(False)
    await broker.idle()
    failures = sidecar.deliveries[:-1]
    assert all(a.outcome == "retry" and a.status_code is None for a in failures)
    assert "connection refused" in (failures[0].error or "")
    assert sidecar.deliveries[-1].outcome == "success"
    assert len(app.received("/orders")) == 1


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        pytest.param(JSONResponse({"status": "DROP"}), "drop", id="2xx-DROP"),
        pytest.param(Response(status_code=404), "not_found", id="404"),
    ],
)
async def test_these_answers_drop_the_message_without_retrying(
    make_sidecar: SidecarFactory, broker: Broker, answer: Response, reason: str
) -> None:
    app = FakeApp([subscription()])
    app.answer("/orders", answer)
    sidecar = await make_sidecar(app, retry_policy=RETRY_ONCE)
    await publish(sidecar, {})
    await broker.idle()
    assert only(sidecar.deliveries).outcome == "drop"
    result = only(sidecar.results)
    assert (result.outcome, result.reason, result.dead_letter_topic) == ("dropped", reason, None)


async def test_no_policy_means_one_attempt_then_the_broker_redelivers_blocking_the_partition(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp([subscription()])
    app.answer("/orders", Response(status_code=500))
    sidecar = await make_sidecar(app)  # no retry policy, no dead-letter topic
    await publish(sidecar, {"n": 1})
    await publish(sidecar, {"n": 2})
    await broker.wait_for(lambda: len(sidecar.deliveries) >= 4)
    # the first message keeps coming back, one attempt per redelivery, the second waits
    assert {a.offset for a in sidecar.deliveries} == {0}
    assert [a.redelivery for a in sidecar.deliveries[:4]] == [0, 1, 2, 3]
    assert [a.attempt for a in sidecar.deliveries[:4]] == [1, 2, 3, 4]
    assert any("blocked at offset 0" in item for item in broker.busy())
    assert broker.lag("backend", "pubsub", "orders") == 2
    with pytest.raises(
        TimeoutError, match=r"pubsub/orders\[0\] is (blocked at|delivering) offset 0"
    ):
        await broker.idle(timeout=0.05)
    app.answer("/orders", Response(status_code=200))
    await broker.idle()
    assert [r.json()["data"]["n"] for r in app.received("/orders")][-2:] == [1, 2]
    assert [r.offset for r in sidecar.results] == [0, 1]
    assert broker.lag("backend", "pubsub", "orders") == 0


async def test_max_retries_counts_retries_after_the_first_attempt(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp([subscription(deadLetterTopic="orders-dlq")])
    app.answer("/orders", JSONResponse({"status": "RETRY"}))
    sidecar = await make_sidecar(app, retry_policy=RetryPolicy.constant(0.001, max_retries=2))
    await publish(sidecar, {})
    await broker.idle()
    assert [a.attempt for a in sidecar.deliveries] == [1, 2, 3]
    assert only(sidecar.results).reason == "retries_exhausted"


async def test_max_retries_zero_makes_a_single_attempt(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp([subscription(deadLetterTopic="orders-dlq")])
    app.answer("/orders", Response(status_code=500))
    sidecar = await make_sidecar(app, retry_policy=RetryPolicy.constant(0.001, max_retries=0))
    await publish(sidecar, {})
    await broker.idle()
    assert len(sidecar.deliveries) == 1
    assert only(sidecar.results).outcome == "dead_lettered"


async def test_max_retries_minus_one_retries_for_ever_within_the_policy(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp([subscription(deadLetterTopic="orders-dlq")])
    app.answer("/orders", Response(status_code=500))
    sidecar = await make_sidecar(app, retry_policy=RetryPolicy.constant(0.001, max_retries=-1))
    await publish(sidecar, {})
    await broker.wait_for(lambda: len(sidecar.deliveries) >= 6)
    assert all(a.redelivery == 0 for a in sidecar.deliveries)  # never handed to the broker
    assert sidecar.results == []  # not dead-lettered: retries are not exhausted
    app.answer("/orders", Response(status_code=200))
    await broker.idle()
    assert only(sidecar.results).outcome == "delivered"


async def test_exhausted_retries_without_dead_letter_topic_go_back_to_the_broker(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp([subscription()])
    app.answer(
        "/orders",
        Response(status_code=500),
        Response(status_code=500),
        Response(status_code=500),
        Response(status_code=200),
    )
    sidecar = await make_sidecar(app, retry_policy=RetryPolicy.constant(0.001, max_retries=1))
    await publish(sidecar, {})
    await broker.idle()
    assert [(a.redelivery, a.outcome) for a in sidecar.deliveries] == [
        (0, "retry"),
        (0, "retry"),
        (1, "retry"),
        (1, "success"),
    ]


async def test_matching_status_codes_limit_what_is_retried(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp([subscription(deadLetterTopic="orders-dlq")])
    app.answer("/orders", Response(status_code=503), Response(status_code=500))
    policy = RetryPolicy(duration=0.001, max_retries=5, http_status_codes="429,502-504")
    sidecar = await make_sidecar(app, retry_policy=policy)
    await publish(sidecar, {})
    await broker.idle()
    # 503 is retried, 500 is not: dead-lettered at once
    assert [a.status_code for a in sidecar.deliveries] == [503, 500]
    assert only(sidecar.results).outcome == "dead_lettered"


def test_retry_policy_intervals() -> None:
    constant = RetryPolicy.constant(2.0, max_retries=3)
    assert [constant.interval(n) for n in range(3)] == [2.0, 2.0, 2.0]
    assert constant.allows_retry(2)
    assert not constant.allows_retry(3)
    exponential = RetryPolicy.exponential(0.2, max_retries=-1, max_interval=1.0)
    assert [round(exponential.interval(n), 4) for n in range(6)] == [
        0.2,
        0.3,
        0.45,
        0.675,
        1.0,
        1.0,
    ]
    assert exponential.allows_retry(10_000)
    jittered = RetryPolicy(duration=1.0, randomization_factor=0.5)
    assert all(0.5 <= jittered.interval(0) <= 1.5 for _ in range(50))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("constant:1s:3", RetryPolicy("constant", duration=1.0, max_retries=3)),
        ("constant:250ms:-1", RetryPolicy("constant", duration=0.25, max_retries=-1)),
        ("exponential:200ms:5", RetryPolicy.exponential(0.2, 5)),
        ("exponential:1s:0:10s", RetryPolicy.exponential(1.0, 0, 10.0)),
    ],
)
def test_retry_policy_specs(spec: str, expected: RetryPolicy) -> None:
    assert RetryPolicy.parse(spec) == expected


@pytest.mark.parametrize(
    "spec", ["constant:1s", "linear:1s:3", "constant:soon:3", "constant:1s:-2"]
)
def test_invalid_retry_policy_specs_are_refused(spec: str) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy.parse(spec)
