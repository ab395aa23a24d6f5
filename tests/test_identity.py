"""Who a request belongs to: inbound identity is validated, outranked by the application, and off at an edge."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from todo_observability import create_http_client, get_logger, get_request_id, get_user_id
from todo_observability._observability import Observability
from todo_observability.context import REQUEST_ID_PATTERN
from todo_observability.testing import LogCapture

from .helpers import client, spans

pytestmark = pytest.mark.anyio
Factory = Callable[..., Observability]
log = get_logger("tests.identity")
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def whoami_app(downstream: httpx.AsyncBaseTransport | None = None) -> Starlette:
    async def whoami(request: Request) -> JSONResponse:
        log.info("handled")
        sent: dict[str, str] = {}
        if downstream is not None:
            async with create_http_client(transport=downstream, base_url="http://backend") as http:
                sent = dict((await http.get("/")).json())
        return JSONResponse(
            {"request_id": get_request_id(), "user_id": get_user_id(), "downstream": sent}
        )

    return Starlette(routes=[Route("/whoami", whoami)])


def echo_headers() -> httpx.MockTransport:
    return httpx.MockTransport(
        lambda request: httpx.Response(
            200,
            json={
                k: v
                for k, v in request.headers.items()
                if k in {"baggage", "traceparent", "x-request-id"}
            },
        )
    )


FORGED = {"baggage": "user_id=admin,request_id=forged-123", "traceparent": TRACEPARENT}


async def test_the_applications_resolver_outranks_a_forged_baggage(
    make_observability: Factory,
) -> None:
    app = whoami_app()
    make_observability(app, user_id_resolver=lambda scope: "alice")
    async with client(app) as http:
        answer = (await http.get("/whoami", headers=FORGED)).json()
    assert answer["user_id"] == "alice"


async def test_a_trusted_header_outranked_by_the_resolver_too(make_observability: Factory) -> None:
    app = whoami_app()
    make_observability(app, user_id_header="X-User-ID", user_id_resolver=lambda scope: "alice")
    async with client(app) as http:
        answer = (await http.get("/whoami", headers={"X-User-ID": "mallory"})).json()
    assert answer["user_id"] == "alice"


async def test_an_edge_neither_believes_nor_passes_on_identity_from_outside(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    app = whoami_app(echo_headers())
    obs = make_observability(
        app,
        trust_incoming_context=False,
        user_id_header="X-User-ID",
        internal_hosts=["backend"],
    )
    async with client(app) as http:
        response = await http.get("/whoami", headers={**FORGED, "X-User-ID": "root"})
    answer = response.json()
    assert answer["user_id"] is None
    assert answer["request_id"] != "forged-123"
    downstream = answer["downstream"]
    # The ids sent on are the edge's own; the caller's trace still continues.
    assert downstream["baggage"] == f"request_id={answer['request_id']}"
    assert downstream["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]
    [server] = [s for s in spans(obs) if s.name == "GET /whoami"]
    assert f"{server.context.trace_id:032x}" == TRACEPARENT.split("-")[1]
    everything = "".join(str(line) for line in captured_logs.lines)
    assert "admin" not in everything
    assert "forged-123" not in everything
    assert "root" not in everything


async def test_a_trusting_service_takes_valid_ids_from_baggage(
    make_observability: Factory,
) -> None:
    app = whoami_app()
    make_observability(app)
    async with client(app) as http:
        answer = (await http.get("/whoami", headers=FORGED)).json()
    assert (answer["user_id"], answer["request_id"]) == ("admin", "forged-123")


HOSTILE = st.one_of(
    st.text(min_size=1, max_size=300),
    st.sampled_from(
        [
            "admin\nFAKE LINE",
            "a\x00b",
            "\x1b[31mred",
            "\u202eevil",
            "x" * 4000,
            "x" * 129,
            "",
            " ",
        ]
    ),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(user_id=HOSTILE, request_id=HOSTILE)
async def test_ids_from_baggage_are_valid_or_dropped(
    make_observability: Factory, captured_logs: LogCapture, user_id: str, request_id: str
) -> None:
    app = whoami_app()
    make_observability(app, service_name=f"svc-{id(app)}")
    header = f"user_id={quote(user_id, safe='')},request_id={quote(request_id, safe='')}"
    async with client(app) as http:
        answer = (await http.get("/whoami", headers={"baggage": header})).json()
    for value in (answer["user_id"], answer["request_id"]):
        assert value is None or REQUEST_ID_PATTERN.fullmatch(value), value
    # The baggage propagator trims whitespace around a value; nothing else may change.
    assert answer["user_id"] in (None, user_id.strip())
    for line in captured_logs.lines:
        if line.get("request_id") == answer["request_id"]:
            assert line["user_id"] == answer["user_id"]
    captured_logs.lines.clear()


def test_trust_incoming_context_is_a_documented_boolean() -> None:
    from todo_observability.config import resolve_settings
    from todo_observability.exceptions import ConfigurationError

    assert resolve_settings(env={}).trust_incoming_context is True
    assert (
        resolve_settings(env={"TODO_OBS_TRUST_INCOMING_CONTEXT": "false"}).trust_incoming_context
        is False
    )
    with pytest.raises(ConfigurationError, match="TODO_OBS_TRUST_INCOMING_CONTEXT"):
        resolve_settings(env={"TODO_OBS_TRUST_INCOMING_CONTEXT": "maybe"})
