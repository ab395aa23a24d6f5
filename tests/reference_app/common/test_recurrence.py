"""Recurrence rules: every search is bounded, and an empty result says what ended it."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import Any

import pytest

from reference_app.common.recurrence import (
    InvalidRule,
    RuleExhausted,
    first_occurrence,
    next_occurrence,
)

UTC = timezone.utc
START = datetime(2026, 11, 26, 9, tzinfo=UTC)


def test_a_day_no_month_of_the_rule_has_is_refused_at_once_naming_both_parts() -> None:
    began = time.perf_counter()
    with pytest.raises(InvalidRule) as caught:
        next_occurrence("FREQ=DAILY;BYMONTHDAY=31;BYMONTH=2", START, START)
    # dateutil alone searches to the year 9999 for it: 3 to 6 s.
    assert time.perf_counter() - began < 0.5
    assert caught.value.part == "BYMONTHDAY"
    assert caught.value.problem == (
        "BYMONTHDAY=31 never falls in BYMONTH=2 (February has at most 29 days), so the rule "
        "has no occurrence; choose days those months have"
    )
    assert "UNTIL" not in str(caught.value)


@pytest.mark.parametrize(
    ("rule", "start", "cause"),
    [
        # Every 12 months from February: always February, which has no 31st.
        (
            "FREQ=MONTHLY;INTERVAL=12;BYMONTHDAY=31",
            datetime(2026, 2, 1, 9, tzinfo=UTC),
            "(INTERVAL=12;BYMONTHDAY=31 leaves none in that time)",
        ),
        # Every 4 years from 2026: never a leap year.
        (
            "FREQ=YEARLY;INTERVAL=4;BYMONTH=2;BYMONTHDAY=29",
            START,
            "(INTERVAL=4;BYMONTH=2;BYMONTHDAY=29 leaves none in that time)",
        ),
        ("FREQ=YEARLY;INTERVAL=20", START, "(INTERVAL=20 leaves none in that time)"),
        # January has no 366th day of the year; hourly, dateutil walks every day to 9999.
        ("FREQ=HOURLY;BYYEARDAY=366;BYMONTH=1", START, "BYYEARDAY=366;BYMONTH=1"),
    ],
)
def test_a_rule_with_no_occurrence_within_ten_years_says_so_not_until_passed(
    rule: str, start: datetime, cause: str
) -> None:
    began = time.perf_counter()
    with pytest.raises(InvalidRule) as caught:
        next_occurrence(rule, start, START)
    assert time.perf_counter() - began < 1.0
    assert caught.value.part == "rule"
    assert caught.value.problem.startswith(
        f"no occurrence within 10 years after {START.isoformat()}"
    )
    assert cause in caught.value.problem
    assert "a rule must recur within 10 years" in caught.value.problem
    assert "UNTIL" not in str(caught.value)


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ("FREQ=DAILY;COUNT=1", "COUNT reached"),
        ("FREQ=SECONDLY;COUNT=5", "COUNT reached"),
        ("FREQ=DAILY;UNTIL=20261126T235959Z", "UNTIL passed"),
        # Never matching before its UNTIL: the series ended at UNTIL, found without searching on.
        ("FREQ=MONTHLY;INTERVAL=12;BYMONTHDAY=31;UNTIL=20300101T000000Z", "UNTIL passed"),
    ],
)
def test_an_ended_series_names_what_ended_it(rule: str, reason: str) -> None:
    start = datetime(2026, 2, 1, 9, tzinfo=UTC)
    with pytest.raises(RuleExhausted) as caught:
        next_occurrence(rule, start, START)
    assert caught.value.reason == reason


def test_set_positions_beyond_what_one_period_holds_are_refused() -> None:
    with pytest.raises(InvalidRule) as caught:
        next_occurrence("FREQ=SECONDLY;BYSETPOS=-4,2", START, START)
    assert caught.value.part == "BYSETPOS"
    assert caught.value.problem.startswith(
        "BYSETPOS=-4,2 picks none of the 1 occurrence(s) each FREQ=SECONDLY period has"
    )
    assert next_occurrence("FREQ=DAILY;BYHOUR=9,17;BYSETPOS=-1", START, START) == (
        datetime(2026, 11, 26, 17, tzinfo=UTC)
    )


def test_the_time_limit_stops_a_search_and_says_so() -> None:
    # A year of days to walk through before the answer: more than a zero time limit allows.
    with pytest.raises(InvalidRule) as caught:
        next_occurrence("FREQ=DAILY", datetime(2025, 11, 26, 9, tzinfo=UTC), START, time_limit=0)
    assert caught.value.problem.startswith(
        f"no occurrence after {START.isoformat()} was found within the search's time limit of 0 s"
    )
    assert next_occurrence("FREQ=DAILY", datetime(2025, 11, 26, 9, tzinfo=UTC), START) == (
        datetime(2026, 11, 27, 9, tzinfo=UTC)
    )


def test_too_many_occurrences_before_the_moment_are_refused() -> None:
    # A time limit that cannot stop it first, on however loaded a machine: the count does.
    with pytest.raises(InvalidRule) as caught:
        next_occurrence(
            "FREQ=SECONDLY", datetime(2026, 11, 24, 9, tzinfo=UTC), START, time_limit=600
        )
    assert caught.value.problem.startswith("more than 100000 occurrences lie between its start")


def test_the_first_occurrence_may_be_the_start_itself() -> None:
    assert first_occurrence("FREQ=DAILY;COUNT=1", START) == START
    assert first_occurrence("FREQ=WEEKLY;BYDAY=MO", START) == datetime(2026, 11, 30, 9, tzinfo=UTC)


def test_the_trace_function_in_place_is_given_back() -> None:
    calls: list[str] = []

    def tracer(frame: Any, event: str, arg: Any) -> None:
        calls.append(event)

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        next_occurrence("DAILY", START, START)
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(previous)
