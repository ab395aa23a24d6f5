"""The rules across fields: a generated recurrence rule recurs within the horizon or is refused.

Every check is quick: the search is bounded, never a hang.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference_app.backend.schemas import InvalidTask, check_rules
from reference_app.common import recurrence
from reference_app.common.recurrence import (
    HORIZON,
    TIME_LIMIT,
    RuleExhausted,
    first_occurrence,
    next_occurrence,
)

FREQS = ["YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY", "SECONDLY"]
DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


def _numbers(low: int, high: int, *, signed: bool = False) -> st.SearchStrategy[str]:
    number = st.integers(low, high).map(str)
    if signed:
        number = st.one_of(number, st.integers(low, high).map(lambda n: f"-{n}"))
    return st.lists(number, min_size=1, max_size=3, unique=True).map(",".join)


PARTS: dict[str, st.SearchStrategy[str]] = {
    "INTERVAL": st.integers(1, 30).map(str),
    "COUNT": st.integers(1, 50).map(str),
    "UNTIL": st.datetimes(datetime(2020, 1, 1), datetime(2045, 1, 1)).map(
        lambda moment: moment.strftime("%Y%m%dT%H%M%SZ")
    ),
    "BYMONTH": _numbers(1, 12),
    "BYMONTHDAY": _numbers(1, 31, signed=True),
    "BYYEARDAY": _numbers(1, 366, signed=True),
    "BYWEEKNO": _numbers(1, 53, signed=True),
    "BYDAY": st.lists(st.sampled_from(DAYS), min_size=1, max_size=3, unique=True).map(",".join),
    "BYHOUR": _numbers(0, 23),
    "BYMINUTE": _numbers(0, 59),
    "BYSECOND": _numbers(0, 59),
    "BYSETPOS": _numbers(1, 5, signed=True),
}


@st.composite
def rules(draw: st.DrawFn) -> str:
    names = draw(st.lists(st.sampled_from(sorted(PARTS)), max_size=4, unique=True))
    if "COUNT" in names and "UNTIL" in names:
        names.remove("UNTIL")
    parts = [f"FREQ={draw(st.sampled_from(FREQS))}"]
    parts += [f"{name}={draw(PARTS[name])}" for name in names]
    return ";".join(parts)


@settings(
    max_examples=300,
    deadline=None,  # measured below, against the bound that matters
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    rule=rules(),
    due_at=st.datetimes(
        datetime(2000, 1, 1), datetime(2040, 1, 1), timezones=st.just(timezone.utc)
    ),
)
def test_a_rule_has_an_occurrence_within_the_horizon_or_is_refused_quickly(
    rule: str, due_at: datetime
) -> None:
    began = time.perf_counter()
    try:
        check_rules(due_at=due_at, remind_at=None, recurrence=rule)
    except InvalidTask as refused:
        elapsed = time.perf_counter() - began
        [error] = refused.errors
        assert error["loc"] == ["body", "recurrence"]
        assert error["msg"].startswith("recurrence: ")
        assert rule in error["msg"]
    else:
        elapsed = time.perf_counter() - began
        found = first_occurrence(rule, due_at, time_limit=60)
        assert due_at <= found <= due_at + HORIZON
        with contextlib.suppress(RuleExhausted):  # COUNT or UNTIL may end it there
            assert next_occurrence(rule, due_at, found, time_limit=60) <= found + HORIZON
    # The search stops itself at its time limit; the margin is for a loaded machine.
    assert elapsed < TIME_LIMIT + 2.0


class _SteppingClock:
    """A `time.monotonic` that moves `step` seconds each time it is read."""

    def __init__(self, step: float):
        self.now = 0.0
        self.step = step

    def monotonic(self) -> float:
        self.now += self.step
        return self.now


def test_the_rule_is_checked_within_one_time_limit_not_one_per_search(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The search reads the clock when it starts and at each day it walks. From January 1 the
    # first occurrence (March 15) takes 74 readings, and the search for the next (May 15),
    # which walks again from the start, 135. With a clock moving 12 ms a reading, each search
    # alone stays within 2 s (at most 1.62 s); both, 209 readings or 2.5 s, do not.
    clock = _SteppingClock(0.012)
    monkeypatch.setattr(recurrence, "time", clock)
    rule = "FREQ=DAILY;BYMONTH=3,5;BYMONTHDAY=15"
    with pytest.raises(InvalidTask) as refused:
        check_rules(
            due_at=datetime(2027, 1, 1, tzinfo=timezone.utc), remind_at=None, recurrence=rule
        )
    [error] = refused.value.errors
    assert "within the search's time limit of 2 s" in error["msg"]
    # The rule itself is good: with the clock standing still, it is accepted.
    clock.step = 0.0
    check_rules(due_at=datetime(2027, 1, 1, tzinfo=timezone.utc), remind_at=None, recurrence=rule)


def test_a_rule_whose_every_period_is_slow_is_refused_at_the_time_limit() -> None:
    # Each period of this rule takes dateutil some 20 ms: the clock is read at each one, so
    # the search overruns its limit by one period, not by dozens.
    rule = "FREQ=SECONDLY;BYYEARDAY=-189;BYMONTH=3;BYSETPOS=-1;BYHOUR=17,21,20"
    began = time.perf_counter()
    with pytest.raises(InvalidTask) as refused:
        check_rules(
            due_at=datetime(2006, 1, 14, 14, 1, 9, tzinfo=timezone.utc),
            remind_at=None,
            recurrence=rule,
        )
    elapsed = time.perf_counter() - began
    assert "within the search's time limit of 2 s" in refused.value.errors[0]["msg"]
    assert elapsed < TIME_LIMIT + 1.0
