"""Recurrence rules: RFC 5545 RRULEs (dateutil) and the presets DAILY, WEEKLY, MONTHLY.

`parse_rule` validates a rule and says which part is wrong; `next_occurrence` computes the next
occurrence after a moment, or says why there is none.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

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
    """The rule has no occurrence after the given moment (its COUNT or UNTIL ended it)."""

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
    try:
        parsed = rrulestr(body, dtstart=start)
    except (ValueError, TypeError) as exc:
        part = next((p for p in parts if p in str(exc).upper()), None)
        if part is None:
            part = next((p for p, v in parts.items() if re.search(re.escape(v), str(exc))), "rule")
        raise InvalidRule(rule, part, str(exc)) from None
    assert isinstance(parsed, rrule)
    return parsed


def next_occurrence(rule: str, start: datetime, after: datetime) -> datetime:
    """The first occurrence of `rule` (anchored at `start`) strictly after `after`.

    Raises:
        InvalidRule: the rule cannot be used.
        RuleExhausted: the rule's COUNT or UNTIL leaves no occurrence after `after`.
    """
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    if after.tzinfo is None:
        after = after.replace(tzinfo=timezone.utc)
    parsed = parse_rule(rule, start)
    found = parsed.after(after, inc=False)
    if found is None:
        body = normalise(rule)
        reason = "COUNT reached" if "COUNT=" in body else "UNTIL passed"
        raise RuleExhausted(rule, reason)
    return found
