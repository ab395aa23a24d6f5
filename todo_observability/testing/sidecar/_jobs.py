"""The Jobs API and its triggers: what daprd and the Scheduler do together.

Jobs are validated as daprd does (name only in the URL, at least one of `schedule` and
`dueTime`), then timed like the Scheduler: `dueTime` (RFC 3339, Go duration or ISO 8601) for the
first trigger, then `schedule` (`@every <duration>`, `@daily`..., or a 6-field cron with seconds
first), `repeats` triggers at most, none after `ttl`. A trigger is `POST /job/{name}` with the
job's `data` as JSON and no trace context; 2xx is a success, 404 a success that daprd counts as a
failure, anything else a failure handled by the job's failure policy (default: constant, 1 s,
3 retries). A job is deleted after its last trigger.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from todo_observability.testing.sidecar import _json
from todo_observability.testing.sidecar._errors import DaprApiError
from todo_observability.testing.sidecar._time import (
    format_protojson_duration,
    parse_go_duration,
    parse_point_in_time,
    parse_protojson_duration,
)
from todo_observability.testing.sidecar.records import JobTrigger, TriggerOutcome

if TYPE_CHECKING:
    import logging

__all__ = ["CronSchedule", "JobScheduler", "JobSpec", "parse_job_request", "parse_schedule"]

# --- schedules ------------------------------------------------------------------------------

_MONTHS = {
    name: index
    for index, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_DAYS = {
    name: index for index, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])
}
_BOUNDS = [(0, 59, {}), (0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, _MONTHS), (0, 6, _DAYS)]
_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}


class ScheduleError(ValueError):
    """A schedule the Scheduler (or the emulator) cannot read."""


def _value(text: str, names: Mapping[str, int], source: str) -> int:
    lowered = text.lower()
    if lowered in names:
        return names[lowered]
    if not text.isdigit():
        raise ScheduleError(
            f"failed to parse schedule {source!r}: {text!r} is not a number (the sidecar "
            "emulator supports *, ?, numbers, names, ranges a-b, lists and steps /n)"
        )
    return int(text)


def _field(
    text: str, low: int, high: int, names: Mapping[str, int], source: str
) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    star = False
    for part in text.split(","):
        range_text, _, step_text = part.partition("/")
        step = _value(step_text, {}, source) if step_text else 1
        if step < 1:
            raise ScheduleError(f"failed to parse schedule {source!r}: step must be positive")
        if range_text in ("*", "?"):
            first, last = low, high
            star = star or step == 1
        elif "-" in range_text:
            first_text, _, last_text = range_text.partition("-")
            first, last = _value(first_text, names, source), _value(last_text, names, source)
        else:
            first = _value(range_text, names, source)
            last = high if step_text else first
        if not low <= first <= last <= high:
            raise ScheduleError(
                f"failed to parse schedule {source!r}: {part!r} is outside {low}-{high}"
            )
        values.update(range(first, last + 1, step))
    return frozenset(values), star


@dataclass(frozen=True)
class CronSchedule:
    """A 6-field cron (seconds, minutes, hours, day of month, month, day of week)."""

    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_star: bool
    weekdays_star: bool

    @classmethod
    def parse(cls, text: str) -> CronSchedule:
        """Parse `text`, a descriptor (`@daily`) or 6 fields.

        Raises:
            ScheduleError: not a schedule the emulator reads.
        """
        expression = _DESCRIPTORS.get(text.strip().lower(), text)
        fields = expression.split()
        if len(fields) != 6:
            raise ScheduleError(
                f"failed to parse schedule {text!r}: expected 6 fields (seconds first), "
                f"found {len(fields)}"
            )
        parsed = [
            _field(field, low, high, names, text)
            for field, (low, high, names) in zip(fields, _BOUNDS, strict=True)
        ]
        return cls(
            seconds=parsed[0][0],
            minutes=parsed[1][0],
            hours=parsed[2][0],
            days=parsed[3][0],
            months=parsed[4][0],
            weekdays=parsed[5][0],
            days_star=parsed[3][1],
            weekdays_star=parsed[5][1],
        )

    def _day_matches(self, moment: datetime) -> bool:
        day = moment.day in self.days
        weekday = (moment.weekday() + 1) % 7 in self.weekdays
        if self.days_star or self.weekdays_star:
            return day and weekday
        return day or weekday

    def next_after(self, moment: datetime) -> datetime | None:
        """The first matching second after `moment`, within 5 years (None if there is none)."""
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
        limit = moment.year + 5
        while moment.year <= limit:
            if moment.month not in self.months:
                year, month = (
                    (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
                )
                moment = moment.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)
                continue
            if not self._day_matches(moment):
                moment = moment.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            if moment.hour not in self.hours:
                moment = moment.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if moment.minute not in self.minutes:
                moment = moment.replace(second=0) + timedelta(minutes=1)
                continue
            if moment.second not in self.seconds:
                moment += timedelta(seconds=1)
                continue
            return moment
        return None


@dataclass(frozen=True)
class EverySchedule:
    """`@every <duration>`."""

    interval: float

    def next_after(self, moment: datetime) -> datetime | None:
        """`moment` plus the interval."""
        return moment + timedelta(seconds=self.interval)


def parse_schedule(text: str) -> CronSchedule | EverySchedule:
    """A job `schedule`: `@every <Go duration>`, a descriptor, or a 6-field cron.

    Raises:
        ScheduleError: not a schedule the emulator reads.
    """
    stripped = text.strip()
    if stripped.lower().startswith("@every "):
        try:
            interval = parse_go_duration(stripped[len("@every ") :].strip())
        except ValueError as exc:
            raise ScheduleError(f"failed to parse schedule {text!r}: {exc}") from None
        if interval <= 0:
            raise ScheduleError(f"failed to parse schedule {text!r}: the interval must be positive")
        return EverySchedule(interval)
    if stripped.startswith("@") and stripped.lower() not in _DESCRIPTORS:
        raise ScheduleError(f"failed to parse schedule {text!r}: unknown descriptor")
    return CronSchedule.parse(stripped)


# --- job requests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FailurePolicy:
    """A job failure policy: `drop` (no retry) or `constant`."""

    drop: bool
    interval: float = 0.0
    max_retries: int | None = None

    def as_json(self) -> dict[str, Any]:
        """As protobuf JSON."""
        if self.drop:
            return {"drop": {}}
        constant = _json.Struct(interval=format_protojson_duration(self.interval))
        if self.max_retries is not None:
            constant["maxRetries"] = self.max_retries
        return {"constant": constant}


#: The Scheduler's policy when a job has none: constant, 1 s, 3 retries.
DEFAULT_FAILURE_POLICY = FailurePolicy(drop=False, interval=1.0, max_retries=3)


@dataclass(frozen=True)
class JobSpec:
    """A job as scheduled over HTTP."""

    schedule: str | None = None
    repeats: int | None = None
    due_time: str | None = None
    ttl: str | None = None
    data: Any = None
    has_data: bool = False
    failure_policy: FailurePolicy | None = None
    overwrite: bool = False

    def as_json(self, name: str) -> dict[str, Any]:
        """The job as `GET /v1.0/jobs/{name}` answers."""
        body = _json.Struct(name=name)
        if self.schedule is not None:
            body["schedule"] = self.schedule
        if self.repeats is not None:
            body["repeats"] = self.repeats
        if self.due_time is not None:
            body["dueTime"] = self.due_time
        if self.ttl is not None:
            body["ttl"] = self.ttl
        if self.has_data:
            body["data"] = self.data
        if self.failure_policy is not None:
            body["failurePolicy"] = self.failure_policy.as_json()
        return body


def _field_value(body: Mapping[str, Any], json_name: str, proto_name: str) -> Any:
    # Protobuf JSON accepts the lowerCamelCase name and the original field name.
    return body.get(json_name, body.get(proto_name))


def _uint(value: Any, field: str) -> int:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, (int, _json.GoNumber)) and not isinstance(value, bool):
        try:
            number = int(str(value))
        except ValueError:
            number = -1
        if 0 <= number <= 0xFFFFFFFF:
            return number
    raise DaprApiError.bad_request(f"proto: invalid value for uint32 field {field}: {value}")


def _string(value: Any, field: str) -> str | None:
    if value is None or _json.is_text(value):
        return value
    raise DaprApiError.bad_request(f"proto: invalid value for string field {field}: {value}")


def _failure_policy(value: Any) -> FailurePolicy | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) != 1 or not {"drop", "constant"} >= value.keys():
        raise DaprApiError.bad_request(
            "proto: failurePolicy must set exactly one of 'drop' and 'constant'"
        )
    if "drop" in value:
        return FailurePolicy(drop=True)
    constant = value["constant"] or {}
    if not isinstance(constant, dict):
        raise DaprApiError.bad_request("proto: failurePolicy.constant must be an object")
    interval_text = constant.get("interval")
    try:
        interval = parse_protojson_duration(interval_text) if interval_text is not None else 0.0
    except (ValueError, TypeError) as exc:
        raise DaprApiError.bad_request(f"proto: {exc}") from None
    retries = _field_value(constant, "maxRetries", "max_retries")
    return FailurePolicy(
        drop=False,
        interval=interval,
        max_retries=None if retries is None else _uint(retries, "max_retries"),
    )


def parse_job_request(name: str, raw: bytes, app_id: str) -> tuple[str, JobSpec]:
    """Validate `POST /v1.0/jobs/{name}` as daprd does; the trimmed name and the job.

    Raises:
        DaprApiError: what daprd answers (400 with a `DAPR_SCHEDULER_...` code, or
            `ERR_BAD_REQUEST` for a body protobuf JSON refuses).
    """
    try:
        body = _json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise DaprApiError.bad_request(f"proto: syntax error: {exc}") from None
    if not isinstance(body, dict):
        raise DaprApiError.bad_request("proto: syntax error: the job must be a JSON object")
    if body.get("name"):
        raise DaprApiError.scheduler(
            400, "DAPR_SCHEDULER_JOB_NAME", "Set the job name in the url only", app_id
        )
    name = name.strip()
    if not name or "|" in name:
        raise DaprApiError.scheduler(400, "DAPR_SCHEDULER_JOB_NAME_EMPTY", "Name is empty", app_id)
    repeats = body.get("repeats")
    overwrite = body.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise DaprApiError.bad_request(
            f"proto: invalid value for bool field overwrite: {overwrite}"
        )
    spec = JobSpec(
        schedule=_string(body.get("schedule"), "schedule"),
        repeats=None if repeats is None else _uint(repeats, "repeats"),
        due_time=_string(_field_value(body, "dueTime", "due_time"), "due_time"),
        ttl=_string(body.get("ttl"), "ttl"),
        data=body.get("data"),
        has_data="data" in body,
        failure_policy=_failure_policy(_field_value(body, "failurePolicy", "failure_policy")),
        overwrite=overwrite,
    )
    if spec.schedule is None and spec.due_time is None:
        raise DaprApiError.scheduler(
            400, "DAPR_SCHEDULER_SCHEDULE_EMPTY", "Schedule is empty", app_id
        )
    return name, spec


# --- the scheduler ----------------------------------------------------------------------------

CallApp = Callable[[str, str, Mapping[str, str], bytes], Awaitable[httpx.Response]]


@dataclass
class JobContext:
    """What the scheduler needs from its sidecar."""

    app_id: str
    app_api_token: str | None
    call_app: CallApp
    app_ready: asyncio.Event
    record: Callable[[JobTrigger], None]
    notify_change: Callable[[], None]
    log: logging.LoggerAdapter[logging.Logger]


@dataclass(eq=False)
class _Job:
    name: str
    spec: JobSpec
    first: datetime
    schedule: CronSchedule | EverySchedule | None
    expiry: datetime | None
    task: asyncio.Task[None] | None = None
    next_fire: float | None = None
    in_flight: bool = False
    triggers: int = 0


class JobScheduler:
    """The jobs of one app, each timed by its own task."""

    def __init__(self, context: JobContext):
        self.context = context
        self._jobs: dict[str, _Job] = {}

    def schedule(self, name: str, spec: JobSpec) -> None:
        """Schedule (or, with `overwrite`, replace) a job.

        Raises:
            DaprApiError: the Scheduler refuses it (500 `DAPR_SCHEDULER_SCHEDULE_JOB`).
        """
        app_id = self.context.app_id
        if name in self._jobs and not spec.overwrite:
            raise DaprApiError.scheduler(
                500,
                "DAPR_SCHEDULER_SCHEDULE_JOB",
                "failed to schedule job due to: rpc error: code = AlreadyExists desc = "
                f"job {name} already exists",
                app_id,
            )
        now = datetime.now().astimezone()
        try:
            schedule = parse_schedule(spec.schedule) if spec.schedule is not None else None
            due = parse_point_in_time(spec.due_time, now) if spec.due_time is not None else None
            expiry = parse_point_in_time(spec.ttl, now) if spec.ttl is not None else None
        except ValueError as exc:
            raise DaprApiError.scheduler(
                500,
                "DAPR_SCHEDULER_SCHEDULE_JOB",
                f"failed to schedule job due to: rpc error: code = InvalidArgument desc = {exc}",
                app_id,
            ) from None
        if due is not None:
            first: datetime | None = due
        else:
            assert schedule is not None
            first = schedule.next_after(now)
        if first is None:
            raise DaprApiError.scheduler(
                500,
                "DAPR_SCHEDULER_SCHEDULE_JOB",
                "failed to schedule job due to: rpc error: code = InvalidArgument desc = "
                f"schedule {spec.schedule!r} never triggers",
                app_id,
            )
        self.delete(name)
        job = _Job(name, spec, first, schedule, expiry)
        # Known before the task first runs: a job due now keeps the emulator busy at once.
        job.next_fire = first.timestamp()
        self._jobs[name] = job
        job.task = asyncio.create_task(self._run(job), name=f"dapr {app_id} job {name}")
        job.task.add_done_callback(self._crashed)
        self.context.log.info("scheduled job %s (first trigger %s)", name, first.isoformat())
        self.context.notify_change()

    def get(self, name: str) -> dict[str, Any]:
        """The job as `GET` answers it.

        Raises:
            DaprApiError: no such job (500 `DAPR_SCHEDULER_GET_JOB`, as daprd answers).
        """
        job = self._jobs.get(name)
        if job is None:
            raise DaprApiError.scheduler(
                500,
                "DAPR_SCHEDULER_GET_JOB",
                "failed to get job due to: rpc error: code = NotFound desc = "
                f"job not found: {name}",
                self.context.app_id,
            )
        return job.spec.as_json(name)

    def delete(self, name: str) -> None:
        """Delete a job; deleting an unknown job succeeds, as in the Scheduler."""
        job = self._jobs.pop(name, None)
        if job is not None and job.task is not None:
            job.task.cancel()
        self.context.notify_change()

    def busy(self) -> list[str]:
        """Jobs with a trigger due or under way."""
        now = time.time()
        return [
            f"{self.context.app_id}: job {job.name} "
            + ("is being triggered" if job.in_flight else "is due")
            for job in self._jobs.values()
            if job.in_flight or (job.next_fire is not None and job.next_fire <= now)
        ]

    async def stop(self) -> None:
        """Cancel every job's task (the jobs are forgotten)."""
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        self._jobs.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _crashed(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.context.log.error("job task crashed", exc_info=task.exception())

    async def _run(self, job: _Job) -> None:
        fire: datetime | None = job.first
        try:
            while fire is not None:
                if job.expiry is not None and fire > job.expiry:
                    break
                job.next_fire = fire.timestamp()
                self.context.notify_change()
                await asyncio.sleep(max(0.0, job.next_fire - time.time()))
                await self.context.app_ready.wait()
                job.in_flight = True
                job.triggers += 1
                self.context.notify_change()
                await self._trigger(job)
                job.in_flight = False
                if job.spec.repeats and job.triggers >= job.spec.repeats:
                    break
                if job.spec.repeats is None and job.schedule is None:
                    break  # a dueTime alone triggers once
                fire = job.schedule.next_after(fire) if job.schedule is not None else None
        finally:
            job.in_flight = False
            job.next_fire = None
            if self._jobs.get(job.name) is job:
                del self._jobs[job.name]
            self.context.notify_change()

    async def _trigger(self, job: _Job) -> None:
        context = self.context
        policy = job.spec.failure_policy or DEFAULT_FAILURE_POLICY
        headers = {"Content-Type": "application/json"}
        if context.app_api_token is not None:
            headers["dapr-api-token"] = context.app_api_token
        body = _json.dumps(job.spec.data) if job.spec.has_data else b""
        path = "/job/" + urllib.parse.quote(job.name, safe="")
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            error: str | None = None
            outcome: TriggerOutcome
            start = time.perf_counter()
            try:
                response = await context.call_app("POST", path, headers, body)
            except httpx.HTTPError as exc:
                error = f"error invoking app channel: {str(exc) or type(exc).__name__}"
                outcome = "failure"
            else:
                status = response.status_code
                if 200 <= status <= 299:
                    outcome = "success"
                elif status == 404:
                    outcome = "not_found"
                else:
                    outcome = "failure"
                    error = f"job trigger answered {status}"
            context.record(
                JobTrigger(
                    app_id=context.app_id,
                    name=job.name,
                    trigger=job.triggers,
                    attempt=attempt,
                    status_code=status,
                    outcome=outcome,
                    error=error,
                    headers=dict(headers),
                    body=body,
                    elapsed_ms=(time.perf_counter() - start) * 1000,
                )
            )
            if outcome != "failure":
                if outcome == "not_found":
                    context.log.warning(
                        "job %s: the app answered 404 (not triggered again)", job.name
                    )
                return
            context.log.warning("job %s trigger %d failed: %s", job.name, job.triggers, error)
            if policy.drop or (policy.max_retries is not None and attempt > policy.max_retries):
                return
            await asyncio.sleep(policy.interval)
