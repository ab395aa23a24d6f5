"""The dead-letter API: list, show, replay and purge parked messages over HTTP (`todo-obs dlq`)."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from todo_observability.dapr._route import Route
from todo_observability.dapr.client import DaprError
from todo_observability.dapr.dead_letters import NotReplayable, ParkedMessage

if TYPE_CHECKING:
    from starlette.requests import Request

    from todo_observability.dapr.subscriptions import Subscriptions


def _summary(message: ParkedMessage) -> dict[str, Any]:
    return {
        "park_id": message.park_id,
        "event_id": message.event_id,
        "pubsub": message.pubsub,
        "origin_topic": message.origin_topic,
        "dead_letter_topic": message.dead_letter_topic,
        "reason": message.reason,
        "detail": message.detail,
        "attempts": message.attempts,
        "parked_at": message.parked_at,
        "replays": message.replays,
    }


def _refusal(owner: Subscriptions, request: Request) -> Response | None:
    token = owner.admin_token
    if token is None:
        # Closed unless the environment is explicitly a development one: `staging`, `prd` or a
        # misspelt `Prod` lists full payloads and allows purge no more than `prod` does.
        obs = owner._obs()
        environment = obs.settings.environment if obs is not None else None
        if obs is not None and obs.settings.development:
            return None
        return JSONResponse(
            {
                "error": f"the dead-letter API needs a token outside development (environment "
                f"{environment!r}; open without one only in dev, development, local or test); "
                "set TODO_OBS_ADMIN_TOKEN (or admin_token=) and send it as a bearer token"
            },
            status_code=403,
        )
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), token):
        return JSONResponse(
            {"error": "missing or wrong bearer token (TODO_OBS_ADMIN_TOKEN)"},
            status_code=401,
            headers={"www-authenticate": "Bearer"},
        )
    return None


def _wait(request: Request) -> float | Response:
    raw = request.query_params.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= 60:
        return JSONResponse(
            {"error": f"wait={raw!r} must be a number of seconds from 0 to 60"}, status_code=400
        )
    return wait


def _limit(request: Request) -> int | Response:
    raw = request.query_params.get("limit", "100")
    if not raw.isdigit() or not 0 < int(raw) <= 10_000:
        return JSONResponse(
            {"error": f"limit={raw!r} must be a whole number from 1 to 10000"}, status_code=400
        )
    return int(raw)


def admin_routes(owner: Subscriptions) -> list[Route]:
    """The routes of the dead-letter API under `owner.admin_path`."""
    base = owner.admin_path

    async def listing(request: Request) -> Response:
        if refused := _refusal(owner, request):
            return refused
        limit = _limit(request)
        if isinstance(limit, Response):
            return limit
        park = owner.dead_letters
        messages = await park.list(origin_topic=request.query_params.get("topic"), limit=limit)
        counts = await park.refresh_gauge()
        return JSONResponse({"counts": counts, "parked": [_summary(m) for m in messages]})

    async def show(request: Request) -> Response:
        if refused := _refusal(owner, request):
            return refused
        park_id = request.path_params["park_id"]
        message = await owner.dead_letters.get(park_id)
        if message is None:
            return JSONResponse({"error": f"nothing is parked as {park_id!r}"}, status_code=404)
        return JSONResponse(message.to_dict())

    async def replay_one(request: Request) -> Response:
        if refused := _refusal(owner, request):
            return refused
        park_id = request.path_params["park_id"]
        wait = _wait(request)
        if isinstance(wait, Response):
            return wait
        try:
            message = await owner.dead_letters.replay(park_id)
        except KeyError:
            return JSONResponse({"error": f"nothing is parked as {park_id!r}"}, status_code=404)
        except NotReplayable as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        except DaprError as exc:
            return JSONResponse(
                {"error": f"the sidecar refused the replay; still parked: {exc}"}, status_code=502
            )
        result = await owner.dead_letters.fate(message, wait=wait) if wait else "published"
        return JSONResponse({"published": _summary(message), "result": result})

    async def replay_all(request: Request) -> Response:
        if refused := _refusal(owner, request):
            return refused
        limit = _limit(request)
        if isinstance(limit, Response):
            return limit
        wait = _wait(request)
        if isinstance(wait, Response):
            return wait
        results = await owner.dead_letters.replay_all(
            origin_topic=request.query_params.get("topic"), limit=limit, wait=wait
        )
        values = list(results.values())
        counts = {
            "published": sum(value == "published" for value in values),
            "processed": sum(value == "processed" for value in values),
            "parked_again": sum(value.startswith("parked again") for value in values),
            "failed": sum(value.startswith("failed") for value in values),
        }
        return JSONResponse(
            {"results": results, **counts},
            status_code=207 if counts["failed"] or counts["parked_again"] else 200,
        )

    async def purge(request: Request) -> Response:
        if refused := _refusal(owner, request):
            return refused
        park_id = request.path_params["park_id"]
        if request.query_params.get("confirm") != "true":
            return JSONResponse(
                {
                    "error": "purging deletes the message for good; repeat with ?confirm=true "
                    "(todo-obs dlq purge --yes)"
                },
                status_code=400,
            )
        if not await owner.dead_letters.purge(park_id):
            return JSONResponse({"error": f"nothing is parked as {park_id!r}"}, status_code=404)
        return JSONResponse({"purged": park_id})

    return [
        Route(base, listing, methods=["GET"]),
        Route(f"{base}/replay", replay_all, methods=["POST"]),
        Route(f"{base}/{{park_id:path}}/replay", replay_one, methods=["POST"]),
        Route(f"{base}/{{park_id:path}}", show, methods=["GET"]),
        Route(f"{base}/{{park_id:path}}", purge, methods=["DELETE"]),
    ]
