"""The tasks API's request and response bodies, and the rules that span several fields."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from pydantic_core import PydanticCustomError

from reference_app.backend.models import TAG_SEPARATOR, Task
from reference_app.common.recurrence import (
    HORIZON_YEARS,
    InvalidRule,
    RuleExhausted,
    first_recurring_occurrence,
    normalise,
    parse_rule,
)

MAX_ID = 2**63 - 1
"""The largest id a 64-bit database integer holds."""

Priority = Literal["low", "medium", "high"]


def _text(value: str) -> str:
    # PostgreSQL refuses NUL in text, and a lone surrogate cannot be encoded for any database:
    # both are the client's mistake (422), not the database's (500).
    if "\x00" in value:
        raise PydanticCustomError("text_nul", "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError(
            "text_encoding", "must be valid Unicode text (it holds a lone surrogate)"
        ) from None
    return value


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_range", "is out of range once converted to UTC"
        ) from None


def _tag(value: str) -> str:
    if TAG_SEPARATOR in value:
        raise PydanticCustomError("tag_comma", "a tag must not contain a comma")
    return _text(value)


def _unique_tags(tags: list[str]) -> list[str]:
    seen: set[str] = set()
    unique = []
    for tag in tags:
        if tag.casefold() not in seen:
            seen.add(tag.casefold())
            unique.append(tag)
    return unique


Text = Annotated[str, AfterValidator(_text)]
Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_text),
]
Description = Annotated[str, StringConstraints(max_length=5000), AfterValidator(_text)]
Tag = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32), AfterValidator(_tag)
]
Tags = Annotated[list[Tag], Field(max_length=20), AfterValidator(_unique_tags)]
Recurrence = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
    AfterValidator(_text),
]
RECURRENCE_DESCRIPTION = (
    "An RFC 5545 RRULE (`FREQ=DAILY;BYHOUR=9`) or a preset: DAILY, WEEKLY, MONTHLY. The rule "
    f"must have an occurrence within {HORIZON_YEARS} years of `due_at` (of now without one), "
    f"and each next one within {HORIZON_YEARS} years of the last, unless COUNT or UNTIL ends it: "
    "a rule that never matches, such as `FREQ=DAILY;BYMONTH=2;BYMONTHDAY=31`, or whose UNTIL "
    "is before its first occurrence, is refused with 422 saying why."
)
Moment = Annotated[AwareDatetime, AfterValidator(_utc)]
"""An aware datetime (`2026-11-26T09:00:00Z`, `...+01:00`), normalised to UTC."""
TaskId = Annotated[int, Field(ge=1, le=MAX_ID)]


class TaskCreate(BaseModel):
    """`POST /tasks`: a new task (or the next occurrence of a recurring one)."""

    model_config = ConfigDict(extra="forbid")

    title: Title = Field(description="1 to 200 characters.")
    description: Description = ""
    due_at: Moment | None = Field(None, description="When it is due; with a time zone.")
    priority: Priority = "medium"
    tags: Tags = Field(default_factory=list, description="Up to 20 tags of 1-32 characters.")
    recurrence: Recurrence | None = Field(None, description=RECURRENCE_DESCRIPTION)
    remind_at: Moment | None = Field(
        None, description="When to send a reminder e-mail; before `due_at`."
    )
    recurrence_of: TaskId | None = Field(
        None,
        description="The task this one is the next occurrence of (needs `due_at`); creating "
        "the same occurrence again answers 200 with the existing task.",
    )


class TaskUpdate(BaseModel):
    """`PATCH /tasks/{id}`: the fields to change; `null` clears the optional ones."""

    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    description: Description | None = None
    due_at: Moment | None = None
    priority: Priority | None = None
    tags: Tags | None = None
    recurrence: Recurrence | None = None
    remind_at: Moment | None = None

    @field_validator("title", "description", "priority", "tags", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError(
                "not_nullable", "cannot be null; leave the field out to keep its value"
            )
        return value


class TaskOut(BaseModel):
    """A task, as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: str
    title: str
    description: str
    due_at: datetime | None
    priority: Priority
    tags: list[str]
    recurrence: str | None
    remind_at: datetime | None
    completed: bool
    completed_at: datetime | None
    reminder_sent_at: datetime | None
    recurrence_of: int | None
    email: str | None = Field(description="The owner's e-mail (from the token), for reminders.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, task: Task) -> TaskOut:
        """The API view of a stored task."""
        return cls.model_validate(task)


class ErrorBody(BaseModel):
    """An error: `detail` says what is wrong."""

    detail: str


class InvalidTask(Exception):
    """A task whose fields are each valid but do not fit together (422).

    Attributes:
        errors: In FastAPI's validation format: `type`, `loc`, `msg`, `input`.
    """

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("; ".join(error["msg"] for error in errors))
        self.errors = errors


def _problem(field: str, message: str, value: Any) -> dict[str, Any]:
    return {"type": "value_error", "loc": ["body", field], "msg": message, "input": value}


def _check_interval(rule: str) -> None:
    # parse_rule lets INTERVAL=0 through, and dateutil then never finds a next occurrence
    # (its search loops for ever): refuse it here, before any consumer computes one.
    for item in normalise(rule).split(";"):
        name, _, value = item.partition("=")
        if name == "INTERVAL" and not (value.isdigit() and int(value) >= 1):
            raise InvalidRule(
                rule, "INTERVAL", f"must be a whole number of at least 1, got {value!r}"
            )


def check_rules(
    *,
    due_at: datetime | None,
    remind_at: datetime | None,
    recurrence: str | None,
    recurrence_of: int | None = None,
) -> None:
    """Check what single fields cannot: the rule itself, the reminder before the due time.

    The rule's first occurrence is searched for (bounded, see `reference_app.common.recurrence`):
    call this in a worker thread, not on the event loop.

    Raises:
        InvalidTask: with one error per broken rule, each naming its field.
    """
    errors = []
    if recurrence is not None:
        anchor = due_at or datetime.now(timezone.utc)
        try:
            parse_rule(recurrence, anchor)
            _check_interval(recurrence)
            first_recurring_occurrence(recurrence, anchor)
        except InvalidRule as exc:
            errors.append(_problem("recurrence", f"recurrence: {exc}", recurrence))
        except RuleExhausted:
            errors.append(
                _problem(
                    "recurrence",
                    f"recurrence: {recurrence!r} has no occurrence: its UNTIL is before its "
                    f"first occurrence from {anchor.isoformat()}; set UNTIL later or remove it",
                    recurrence,
                )
            )
        except (OverflowError, ValueError) as exc:
            # dateutil computing the rule's first occurrences near the calendar's edges.
            errors.append(
                _problem(
                    "recurrence",
                    f"recurrence: {recurrence!r} cannot be applied from {due_at}: {exc}",
                    recurrence,
                )
            )
    if remind_at is not None and due_at is not None and remind_at >= due_at:
        errors.append(
            _problem(
                "remind_at",
                f"remind_at: must be before due_at ({remind_at.isoformat()} is not before "
                f"{due_at.isoformat()})",
                remind_at.isoformat(),
            )
        )
    if recurrence_of is not None and due_at is None:
        errors.append(
            _problem(
                "due_at",
                "due_at: required with recurrence_of (an occurrence is identified by its due time)",
                None,
            )
        )
    if errors:
        raise InvalidTask(errors)
