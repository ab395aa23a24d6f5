"""Recurrence rules: RFC 5545 RRULEs (dateutil) and the presets DAILY, WEEKLY, MONTHLY.

`parse_rule` validates a rule and says which part is wrong; `next_occurrence` computes the next
occurrence after a moment, or says why there is none. Every search is bounded: it looks no
further than `HORIZON_YEARS` ahead, examines at most `MAX_EXAMINED` occurrences and stops after
`TIME_LIMIT` seconds, so a rule that never matches (`FREQ=DAILY;BYMONTH=2;BYMONTHDAY=31`)
costs milliseconds rather than a search to the year 9999.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta, timezone
from types import CodeType, FrameType
from typing import Any

from dateutil import rrule as _dateutil_rrule
from dateutil.rrule import rrule, rrulestr

PRESETS = {"DAILY": "FREQ=DAILY", "WEEKLY": "FREQ=WEEKLY", "MONTHLY": "FREQ=MONTHLY"}
_PARTS = {
    "FREQ", "INTERVAL", "COUNT", "UNTIL", "BYSECOND", "BYMINUTE", "BYHOUR", "BYDAY",
    "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYMONTH", "BYSETPOS", "WKST",
}  # fmt: skip
_FREQS = {"YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY", "SECONDLY"}
_RANGES = {
    "INTERVAL": (1, 10_000),  # 0 would make dateutil search for ever
    "COUNT": (1, 1_000_000),
    "BYSECOND": (0, 59),
    "BYMINUTE": (0, 59),
    "BYHOUR": (0, 23),
    "BYMONTH": (1, 12),
    "BYMONTHDAY": (1, 31),
    "BYYEARDAY": (1, 366),
    "BYWEEKNO": (1, 53),
    "BYSETPOS": (1, 366),
}
"""Numeric parts and their ranges (RFC 5545 §3.3.10); the signed ones may also count from the end."""
_SIGNED = {"BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYSETPOS"}
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip

HORIZON_YEARS = 10
"""A rule must have its next occurrence within this many years, or it is refused."""
HORIZON = timedelta(days=3653)
"""`HORIZON_YEARS` as a duration (ten years and their leap days)."""
MAX_EXAMINED = 100_000
"""Occurrences a search may pass over (those before the moment asked about) before it gives up."""
TIME_LIMIT = 2.0
"""Seconds a search may take before it gives up (it runs in a worker thread, never on the loop)."""


class InvalidRule(ValueError):
    """A recurrence rule that cannot be used; the message names the part that is wrong.

    Attributes:
        part: The offending part (`FREQ`, `BYDAY`, ...), or `rule` for the rule as a whole.
    """

    def __init__(self, rule: str, part: str, problem: str):
        super().__init__(f"invalid recurrence {rule!r}: {part}: {problem}")
        self.rule = rule
        self.part = part
        self.problem = problem


class RuleExhausted(ValueError):
    """The rule has no occurrence after the given moment: its COUNT or UNTIL ended it.

    Attributes:
        reason: `COUNT reached` or `UNTIL passed`.
    """

    def __init__(self, rule: str, reason: str):
        super().__init__(f"recurrence {rule!r} has no further occurrence: {reason}")
        self.rule = rule
        self.reason = reason


def normalise(rule: str) -> str:
    """The RRULE body for `rule`: a preset expanded, an `RRULE:` prefix removed, upper case."""
    text = rule.strip()
    if text.upper() in PRESETS:
        return PRESETS[text.upper()]
    if text.upper().startswith("RRULE:"):
        text = text[6:]
    return text.upper()


def parse_rule(rule: str, start: datetime) -> rrule:
    """The dateutil rule for `rule`, starting at `start` (aware).

    Raises:
        InvalidRule: naming the part that is wrong (unknown part, missing FREQ, bad value).
    """
    body = normalise(rule)
    if not body:
        raise InvalidRule(rule, "rule", "empty; use a preset (DAILY, WEEKLY, MONTHLY) or an RRULE")
    parts: dict[str, str] = {}
    for item in body.split(";"):
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise InvalidRule(rule, item or "rule", "expected NAME=VALUE")
        if name not in _PARTS:
            raise InvalidRule(rule, name, "not an RFC 5545 RRULE part")
        if name in parts:
            raise InvalidRule(rule, name, "given twice")
        parts[name] = value
    if "FREQ" not in parts:
        raise InvalidRule(rule, "FREQ", "missing; every rule needs FREQ=DAILY, WEEKLY, ...")
    if parts["FREQ"] not in _FREQS:
        raise InvalidRule(rule, "FREQ", f"{parts['FREQ']!r} is not one of {sorted(_FREQS)}")
    for name, (low, high) in _RANGES.items():
        for item in parts.get(name, "").split(",") if name in parts else ():
            number = item.lstrip("+-") if name in _SIGNED else item
            if not number.isdigit() or not low <= int(number) <= high:
                raise InvalidRule(
                    rule, name, f"{item!r} is not a whole number from {low} to {high}"
                )
    if "COUNT" in parts and "UNTIL" in parts:
        raise InvalidRule(rule, "COUNT", "COUNT and UNTIL cannot both be given")
    if "UNTIL" in parts and not parts["UNTIL"].endswith("Z"):
        # dateutil refuses a floating UNTIL with an aware start; say so in RFC terms.
        raise InvalidRule(rule, "UNTIL", "must be UTC (end in Z), such as 20261231T000000Z")
    _check_month_days(rule, parts)
    _check_set_positions(rule, parts)
    try:
        parsed = rrulestr(body, dtstart=start)
    except (ValueError, TypeError) as exc:
        part = next((p for p in parts if p in str(exc).upper()), None)
        if part is None:
            part = next((p for p, v in parts.items() if re.search(re.escape(v), str(exc))), "rule")
        raise InvalidRule(rule, part, str(exc)) from None
    assert isinstance(parsed, rrule)
    return parsed


def _check_month_days(rule: str, parts: dict[str, str]) -> None:
    """Refuse BYMONTHDAY days that none of the BYMONTH months has (31 in February)."""
    if "BYMONTHDAY" not in parts or "BYMONTH" not in parts:
        return
    days = [abs(int(item)) for item in parts["BYMONTHDAY"].split(",")]
    months = [int(item) for item in parts["BYMONTH"].split(",")]
    if any(day <= _MONTH_DAYS[month - 1] for day in days for month in months):
        return
    longest = max(_MONTH_DAYS[month - 1] for month in months)
    names = ", ".join(_MONTH_NAMES[month - 1] for month in months)
    raise InvalidRule(
        rule,
        "BYMONTHDAY",
        f"BYMONTHDAY={parts['BYMONTHDAY']} never falls in BYMONTH={parts['BYMONTH']} ({names} "
        f"{'has' if len(months) == 1 else 'have'} at most {longest} days), so the rule has no "
        "occurrence; choose days those months have",
    )


_FINER = {
    "DAILY": ("BYHOUR", "BYMINUTE", "BYSECOND"),
    "HOURLY": ("BYMINUTE", "BYSECOND"),
    "MINUTELY": ("BYSECOND",),
    "SECONDLY": (),
}


def _check_set_positions(rule: str, parts: dict[str, str]) -> None:
    """Refuse BYSETPOS positions beyond the occurrences one DAILY (or finer) period can have."""
    if "BYSETPOS" not in parts or parts["FREQ"] not in _FINER:
        return
    size = 1
    for name in _FINER[parts["FREQ"]]:
        size *= len(parts[name].split(",")) if name in parts else 1
    if any(abs(int(item)) <= size for item in parts["BYSETPOS"].split(",")):
        return
    raise InvalidRule(
        rule,
        "BYSETPOS",
        f"BYSETPOS={parts['BYSETPOS']} picks none of the {size} occurrence(s) each "
        f"FREQ={parts['FREQ']} period has, so the rule has no occurrence; use positions "
        f"from 1 to {size} (or -{size} to -1)",
    )


class _OutOfBounds(Exception):
    """Raised inside dateutil's search, by `_Bound`, to stop it."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


# The methods dateutil's search calls once per period (day, week, month or year) it examines,
# with that period's year, month and day: where the search has got to, even while it finds
# nothing. If a future dateutil renames them, only MAX_EXAMINED is left to stop a search.
_PERIOD_CODES = tuple(
    method.__code__
    for name in ("ydayset", "mdayset", "wdayset", "ddayset")
    if (method := getattr(getattr(_dateutil_rrule, "_iterinfo", None), name, None)) is not None
)


class _Bound:
    """Where a search must stop: past the `end` date, or at the `deadline`.

    dateutil checks UNTIL (and COUNT) only when it has an occurrence to give: a rule that never
    matches makes it walk period by period to the year 9999 without ever coming back to us (3 to
    80 s). So we watch it start each period's method (`_PERIOD_CODES`) and raise from there.
    """

    def __init__(self, end: datetime, deadline: float):
        self.end = (end.year, end.month, end.day)
        self.deadline = deadline

    def check(self, frame: FrameType) -> None:
        local = frame.f_locals
        if (local["year"], local["month"], local["day"]) > self.end:
            raise _OutOfBounds("horizon")
        # Every period: one can take tens of milliseconds (FREQ=SECONDLY with BYSETPOS), and
        # reading the clock costs a fraction of the least of them.
        if time.monotonic() > self.deadline:
            raise _OutOfBounds("time")

    def trace(self, frame: FrameType, event: str, arg: Any) -> None:
        """A `sys.settrace` function doing `check` (Python before 3.12, or no monitoring tool free)."""
        if frame.f_code in _PERIOD_CODES:
            self.check(frame)


_searching = threading.local()
"""The `_Bound` of the search running in this thread, if any."""


def _on_period_start(code: CodeType, offset: int) -> None:
    bound: _Bound | None = getattr(_searching, "bound", None)
    if bound is not None:
        bound.check(sys._getframe(1))


def _monitoring_tool() -> int | None:
    """A `sys.monitoring` tool watching only the period methods (Python 3.12+), else None.

    It costs nothing elsewhere; a trace function, by contrast, slows everything dateutil
    does about fourfold on 3.12, where tracing instruments every line.
    """
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None or not _PERIOD_CODES:
        return None
    for tool in (4, 3):  # the ids PEP 669 leaves free (0-2 and 5 are taken by convention)
        try:
            monitoring.use_tool_id(tool, "todo-reference-app recurrence bound")
        except ValueError:
            continue
        monitoring.register_callback(tool, monitoring.events.PY_START, _on_period_start)
        for code in _PERIOD_CODES:
            monitoring.set_local_events(tool, code, monitoring.events.PY_START)
        return tool
    return None


_TOOL = _monitoring_tool()


@contextmanager
def _bounded(bound: _Bound) -> Iterator[None]:
    """Run the block with `bound` watching the search, in this thread only."""
    if _TOOL is not None:
        _searching.bound = bound
        try:
            yield
        finally:
            _searching.bound = None
        return
    previous = sys.gettrace()  # a coverage tool's or debugger's, given back afterwards
    sys.settrace(bound.trace)
    try:
        yield
    finally:
        sys.settrace(previous)


def _horizon_end(after: datetime) -> datetime:
    try:
        return after + HORIZON
    except OverflowError:
        return datetime.max.replace(tzinfo=timezone.utc)


def _search(
    parsed: rrule,
    rule: str,
    parts: dict[str, str],
    start: datetime,
    after: datetime,
    time_limit: float,
    deadline: float,
) -> datetime:
    """The first occurrence of `parsed` strictly after `after`, found within the bounds.

    `deadline` (a `time.monotonic()` moment) is when the search of `time_limit` seconds
    must stop: searches sharing a limit share it.
    """
    count = int(parts["COUNT"]) if "COUNT" in parts else None
    until = (
        datetime.strptime(parts["UNTIL"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        if "UNTIL" in parts
        else None
    )
    horizon_end = _horizon_end(after)
    end = min(until, horizon_end) if until is not None else horizon_end
    # COUNT is counted here: dateutil refuses COUNT with the bounding UNTIL.
    bounded = parsed.replace(count=None, until=end)
    try:
        with _bounded(_Bound(end, deadline)):
            for index, occurrence in enumerate(bounded):
                if count is not None and index >= count:
                    raise RuleExhausted(rule, "COUNT reached")
                if occurrence > after:
                    return occurrence
                if index >= MAX_EXAMINED:
                    raise InvalidRule(
                        rule,
                        "rule",
                        f"more than {MAX_EXAMINED} occurrences lie between its start "
                        f"{start.isoformat()} and {after.isoformat()}: too many to "
                        "search; use a coarser FREQ or a larger INTERVAL",
                    )
        why = "horizon"
    except _OutOfBounds as stop:
        why = stop.why
    except (OverflowError, ValueError) as exc:
        if isinstance(exc, (InvalidRule, RuleExhausted)):
            raise
        # dateutil reaching the calendar's edge (the year 9999) on the way.
        raise InvalidRule(
            rule, "rule", f"cannot be applied after {after.isoformat()}: {exc}"
        ) from None
    if until is not None and until <= horizon_end and why == "horizon":
        raise RuleExhausted(rule, "UNTIL passed")
    if why == "time":
        raise InvalidRule(
            rule,
            "rule",
            f"no occurrence after {after.isoformat()} was found within the search's time limit "
            f"of {time_limit:g} s; simplify the rule (fewer BY parts, a coarser FREQ)",
        )
    given = ";".join(f"{name}={value}" for name, value in parts.items() if name != "FREQ")
    fix = (
        "check that its BY parts can fall on one date"
        if any(name.startswith("BY") for name in parts)
        else "use a smaller INTERVAL"
    )
    raise InvalidRule(
        rule,
        "rule",
        f"no occurrence within {HORIZON_YEARS} years after {after.isoformat()}"
        + (f" ({given} leaves none in that time)" if given else "")
        + f": a rule must recur within {HORIZON_YEARS} years; {fix}",
    )


def _parts(rule: str) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in normalise(rule).split(";"))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def next_occurrence(
    rule: str, start: datetime, after: datetime, *, time_limit: float = TIME_LIMIT
) -> datetime:
    """The first occurrence of `rule` (anchored at `start`) strictly after `after`.

    The search is bounded (`HORIZON_YEARS`, `MAX_EXAMINED`, `time_limit`) and CPU-bound:
    call it in a worker thread, never on an event loop.

    Raises:
        InvalidRule: the rule cannot be used, including a rule with no occurrence within
            `HORIZON_YEARS` after `after` (the message says which bound stopped the search).
        RuleExhausted: the rule's COUNT or UNTIL leaves no occurrence after `after`.
    """
    deadline = time.monotonic() + time_limit
    start, after = _aware(start), _aware(after)
    parsed = parse_rule(rule, start)
    return _search(parsed, rule, _parts(rule), start, after, time_limit, deadline)


def first_occurrence(rule: str, start: datetime, *, time_limit: float = TIME_LIMIT) -> datetime:
    """The first occurrence of `rule` anchored at `start` (`start` itself if it matches).

    Raises:
        InvalidRule: as `next_occurrence`; no occurrence within `HORIZON_YEARS` of `start`.
        RuleExhausted: UNTIL is before the first occurrence (`UNTIL passed`).
    """
    deadline = time.monotonic() + time_limit
    start = _aware(start)
    parsed = parse_rule(rule, start)
    return _search(parsed, rule, _parts(rule), start, _just_before(start), time_limit, deadline)


def _just_before(start: datetime) -> datetime:
    try:
        return start - timedelta(microseconds=1)
    except OverflowError:
        return start


def first_recurring_occurrence(
    rule: str, start: datetime, *, time_limit: float = TIME_LIMIT
) -> datetime:
    """`first_occurrence`, having checked that the rule recurs after it, within one `time_limit`.

    Both searches share the limit, so a rule is accepted or refused within `time_limit`. A rule
    whose COUNT or UNTIL ends it at its first occurrence is accepted.

    Raises:
        InvalidRule: as `first_occurrence`, or no second occurrence within `HORIZON_YEARS`.
        RuleExhausted: UNTIL is before the first occurrence (`UNTIL passed`).
    """
    deadline = time.monotonic() + time_limit
    start = _aware(start)
    parsed = parse_rule(rule, start)
    parts = _parts(rule)
    first = _search(parsed, rule, parts, start, _just_before(start), time_limit, deadline)
    # recurring-task-service looks for the next occurrence within the same horizon on each
    # completion: it must find one, unless COUNT or UNTIL ends the rule there.
    with suppress(RuleExhausted):
        _search(parsed, rule, parts, start, first, time_limit, deadline)
    return first
