"""What recurring does with a completed task: compute its next occurrence and have backend create it.

Outcomes, as the sidecar is told them (see the SDK's Subscriptions):

| The event | Outcome | Counted |
|---|---|---|
| payload does not validate | DROP (`validation`, by the SDK) | - |
| task does not recur | SUCCESS | - |
| invalid rule, or none within the horizon (`HORIZON_YEARS`) | DROP `invalid_rule` | `recurring_next_occurrence_failures_total{reason="invalid_rule"}` |
| rule exhausted (COUNT, UNTIL) | SUCCESS: the series ended | `...failures_total{reason="rule_exhausted"}` |
| backend created the task (201) | SUCCESS | `recurring_next_occurrences_total{outcome="created"}` |
| backend already had it (200) | SUCCESS | `recurring_next_occurrences_total{outcome="existing"}` |
| backend 5xx, 408, 429, or the sidecar failed | RETRY `backend_unavailable` | `...failures_total{reason="backend_error"}` |
| backend refused it (other 4xx) | DROP `backend_rejected` | `...failures_total{reason="backend_rejected"}` |

The next occurrence is searched for in a worker thread, within the bounds of
`reference_app.common.recurrence` (ten years ahead, `MAX_EXAMINED` occurrences, `TIME_LIMIT`
seconds): a rule that never matches, published before backend refused such rules, is dropped
within milliseconds with the bound that stopped it, and the event loop keeps serving meanwhile.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from anyio import to_thread

from reference_app.common.events import BACKEND, RECURRING, TaskCompleted
from reference_app.common.metrics import (
    NEXT_OCCURRENCE_DURATION,
    NEXT_OCCURRENCE_FAILURES,
    NEXT_OCCURRENCES_CREATED,
)
from reference_app.common.recurrence import InvalidRule
from reference_app.recurring.occurrences import Calculation, calculate_next_occurrence, next_task
from todo_observability import bind_context, get_logger, set_user_id
from todo_observability.dapr import DaprClient, DaprError, Drop, Message, Retry

if TYPE_CHECKING:
    from datetime import datetime

    import httpx

    from reference_app.common.auth import Tokens
    from todo_observability import Observability

__all__ = ["NextOccurrences"]

log = get_logger(__name__)

MAX_DETAIL = 500
"""Characters of backend's answer kept as the detail of a rejection."""
# Statuses that say "not now" rather than "never": retried like a 5xx.
_TRANSIENT_4XX = frozenset({408, 425, 429})


class NextOccurrences:
    """The handler of `task.completed` events.

    Args:
        dapr: The sidecar client backend is invoked through.
        tokens: Signs the token recurring presents to backend on the task owner's behalf.
        observability: The service's `Observability`; its registry gets the metrics.
    """

    def __init__(self, dapr: DaprClient, tokens: Tokens, observability: Observability):
        self.dapr = dapr
        self.tokens = tokens
        metrics = observability.metrics
        for spec in (NEXT_OCCURRENCE_DURATION, NEXT_OCCURRENCE_FAILURES, NEXT_OCCURRENCES_CREATED):
            metrics.register(spec)
        self._duration = metrics.histogram(NEXT_OCCURRENCE_DURATION)
        self._failures = {
            reason: metrics.child(NEXT_OCCURRENCE_FAILURES, reason)
            for reason in ("invalid_rule", "rule_exhausted", "backend_error", "backend_rejected")
        }
        # Created up front, so every series exists at 0 before the first event: rate()
        # and alert rules then see a series from the first scrape.
        self._occurrences = {
            outcome: metrics.child(NEXT_OCCURRENCES_CREATED, outcome)
            for outcome in ("created", "existing")
        }

    async def handle(self, message: Message) -> None:
        """Handle one `task.completed` message (raises `Drop`/`Retry` for those outcomes)."""
        event = TaskCompleted.model_validate(message.data)
        # The message acts for the task's owner: every later line, and the call to backend
        # (as baggage), carries their id.
        set_user_id(event.user_id)
        with bind_context(task_id=event.task_id):
            if not event.recurrence:
                log.info("completed task does not recur: nothing to create")
                return
            calculation = await self._calculate(event)
            if calculation.next_due_at is None:
                self._failures["rule_exhausted"].inc()
                log.info(
                    "recurrence rule exhausted: the series ended, no next occurrence",
                    extra={
                        "rule": calculation.rule,
                        "reason": calculation.exhausted,
                        "anchor": calculation.anchor.isoformat(),
                        "after": calculation.after.isoformat(),
                    },
                )
                return
            log.info(
                "next occurrence calculated",
                extra={
                    "rule": calculation.rule,
                    "anchor": calculation.anchor.isoformat(),
                    "after": calculation.after.isoformat(),
                    "next_due_at": calculation.next_due_at.isoformat(),
                },
            )
            await self._create(event, calculation.next_due_at)

    async def _calculate(self, event: TaskCompleted) -> Calculation:
        start = time.perf_counter()
        try:
            # CPU work, bounded in time by the search itself: off the loop, so the loop keeps
            # answering probes and other deliveries while it runs.
            return await to_thread.run_sync(calculate_next_occurrence, event)
        except InvalidRule as exc:
            self._failures["invalid_rule"].inc()
            log.warning(
                "invalid recurrence rule: the next occurrence cannot be calculated",
                extra={"rule": exc.rule, "part": exc.part, "problem": exc.problem},
            )
            raise Drop("invalid_rule", str(exc)) from exc
        finally:
            self._duration.observe(time.perf_counter() - start)

    async def _create(self, event: TaskCompleted, next_due_at: datetime) -> None:
        body = next_task(event, next_due_at)
        token = self.tokens.issue(event.user_id, email=event.email, actor=RECURRING)
        try:
            response = await self.dapr.invoke(
                BACKEND, "tasks", json=body, headers={"authorization": f"Bearer {token}"}
            )
        except DaprError as exc:
            self._failures["backend_error"].inc()
            log.warning(
                "backend could not be invoked: the message will be retried",
                extra={
                    "error_code": exc.error_code,
                    "status_code": exc.status,
                    "error": exc.detail,
                },
            )
            raise Retry("backend_unavailable", str(exc)) from exc
        status = response.status_code
        if status >= 500 or status in _TRANSIENT_4XX:
            self._failures["backend_error"].inc()
            log.warning(
                "backend failed to create the next occurrence: the message will be retried",
                extra={"status_code": status, "answer": _answer(response)},
            )
            raise Retry("backend_unavailable", f"backend answered {status}: {_answer(response)}")
        if status >= 400:
            self._failures["backend_rejected"].inc()
            log.error(
                "backend refused the next occurrence: the message is dead-lettered",
                extra={"status_code": status, "answer": _answer(response)},
            )
            raise Drop("backend_rejected", f"backend answered {status}: {_answer(response)}")
        outcome = "existing" if status == 200 else "created"
        self._occurrences[outcome].inc()
        created = _json(response)
        log.info(
            "next occurrence created"
            if outcome == "created"
            else "next occurrence already existed: repeat acknowledged",
            extra={
                "next_task_id": created.get("id"),
                "next_due_at": body["due_at"],
                "remind_at": body.get("remind_at"),
                "outcome": outcome,
                "status_code": status,
            },
        )


def _json(response: httpx.Response) -> dict[str, Any]:
    """Backend's answer as a JSON object, or {} when it is not one."""
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _answer(response: httpx.Response) -> str:
    """Backend's answer, shortened for a log line, a span and the parked record."""
    return response.text[:MAX_DETAIL]
