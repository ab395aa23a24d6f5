"""`todo-obs dlq`: the dead-letter park of a running service, through its dead-letter API."""

from __future__ import annotations

import datetime
import json
import os
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import argparse

    import httpx

from todo_observability.exceptions import ConfigurationError

__all__ = ["add_parser", "run"]

DEFAULT_SERVICE = "http://127.0.0.1:8000"


def add_parser(subcommands: Any) -> None:
    """Register `dlq` and its actions on the `todo-obs` subcommands."""
    dlq = subcommands.add_parser(
        "dlq",
        help="list, show, replay or purge a service's parked dead letters",
        description="Work with the dead-letter park of a running service (its /dapr/dead-letters API).",
    )
    dlq.add_argument(
        "--service",
        default=os.environ.get("TODO_OBS_SERVICE_URL") or DEFAULT_SERVICE,
        help="the service's base URL (default: $TODO_OBS_SERVICE_URL or %(default)s)",
    )
    dlq.add_argument(
        "--token",
        default=os.environ.get("TODO_OBS_ADMIN_TOKEN") or None,
        help="bearer token of the dead-letter API (default: $TODO_OBS_ADMIN_TOKEN)",
    )
    dlq.add_argument("--path", default="/dapr/dead-letters", help="the API's path (%(default)s)")
    dlq.add_argument("--timeout", type=float, default=30.0, help="seconds per call (%(default)s)")
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="parked messages, oldest first, and counts by topic")
    listing.add_argument("--topic", help="only messages first published to this topic")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="print the API's JSON")
    show = actions.add_parser("show", help="one parked message with its CloudEvent and metadata")
    show.add_argument("park_id")
    replay = actions.add_parser(
        "replay", help="republish to the origin topic (same id); parked until the sidecar accepts"
    )
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("park_id", nargs="?")
    which.add_argument("--all", action="store_true", help="replay every parked message")
    replay.add_argument("--topic", help="with --all: only messages of this origin topic")
    replay.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="watch each replayed message that long and say whether it was processed or parked "
        "again (0: report only that the sidecar accepted it; default %(default)s, at most 60)",
    )
    purge = actions.add_parser("purge", help="delete a parked message for good")
    purge.add_argument("park_id")
    purge.add_argument("--yes", action="store_true", help="confirm: the message is lost")
    dlq.set_defaults(run=run)


def _when(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Carry out one `dlq` action; the exit status (0 done, 1 refused, failed or parked again)."""
    if args.action == "purge" and not args.yes:
        out.write(
            f"purging deletes {args.park_id} for good; repeat with --yes to confirm "
            "(or `todo-obs dlq replay` it instead)\n"
        )
        return 1
    if args.action == "replay" and not 0 <= args.wait <= 60:
        raise ConfigurationError(
            f"--wait must be a number of seconds from 0 to 60, got {args.wait!r}.",
            field="wait",
            value=args.wait,
        )
    import httpx

    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    base = args.service.rstrip("/") + "/" + args.path.strip("/")
    try:
        # A replay that watches its messages answers after its wait: the call may take that longer.
        timeout = args.timeout + (args.wait if args.action == "replay" else 0.0)
        with httpx.Client(headers=headers, timeout=timeout) as http:
            response = _call(http, base, args)
    except httpx.HTTPError as exc:
        out.write(f"cannot reach {args.service}: {exc} (is the service running? see --service)\n")
        return 1
    try:
        body: Any = response.json()
    except ValueError:
        body = {"error": response.text}
    if response.status_code >= 400 and response.status_code != 207:
        out.write(f"{response.status_code}: {body.get('error', body)}\n")
        return 1
    _print(args, body, out)
    if args.action == "replay" and str(body.get("result", "")).startswith("parked again"):
        return 1  # published, but it failed again: the operator's problem is not solved
    return 0 if response.status_code < 300 else 1


def _call(http: httpx.Client, base: str, args: argparse.Namespace) -> httpx.Response:
    if args.action == "list":
        params = {"limit": str(args.limit)}
        if args.topic:
            params["topic"] = args.topic
        return http.get(base, params=params)
    if args.action == "show":
        return http.get(f"{base}/{args.park_id}")
    if args.action == "replay":
        params = {"wait": str(args.wait)}
        if args.all:
            if args.topic:
                params["topic"] = args.topic
            return http.post(f"{base}/replay", params=params)
        return http.post(f"{base}/{args.park_id}/replay", params=params)
    return http.delete(f"{base}/{args.park_id}", params={"confirm": "true"})


def _print(args: argparse.Namespace, body: Any, out: TextIO) -> None:
    if args.action == "list" and not args.json:
        counts = body.get("counts", {})
        total = sum(counts.values())
        out.write(
            f"{total} parked" + "".join(f", {t}: {n}" for t, n in sorted(counts.items())) + "\n"
        )
        for message in body.get("parked", []):
            out.write(
                f"{message['park_id']}  {_when(message['parked_at'])}  {message['reason']}"
                f"  attempts={message['attempts']} replays={message['replays']}"
                + (f"  {message['detail']}" if message.get("detail") else "")
                + "\n"
            )
        return
    if args.action == "replay" and "results" in body:
        for park_id, result in body["results"].items():
            out.write(f"{park_id}: {result}\n")
        out.write(
            f"processed {body['processed']}, parked again {body['parked_again']}, "
            f"published (not seen since) {body['published']}, failed {body['failed']}\n"
        )
        return
    if args.action == "replay":
        message = body["published"]
        out.write(f"{message['park_id']} to {message['origin_topic']}: {body['result']}\n")
        return
    if args.action == "purge":
        out.write(f"purged {body['purged']}\n")
        return
    out.write(json.dumps(body, indent=2) + "\n")
