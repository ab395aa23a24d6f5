"""The time formats daprd accepts: Go durations, RFC 3339, ISO 8601 durations, protobuf JSON."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

__all__ = [
    "format_protojson_duration",
    "format_rfc3339",
    "parse_go_duration",
    "parse_iso8601_duration",
    "parse_point_in_time",
    "parse_protojson_duration",
    "parse_rfc3339",
]

_GO_UNITS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "\u00b5s": Decimal("1e-6"),
    "\u03bcs": Decimal("1e-6"),
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string (`300ms`, `1h30m`, `-1.5s`, `0`), as `time.ParseDuration`.

    Raises:
        ValueError: not a Go duration.
    """
    original = text
    sign = Decimal(1)
    if text and text[0] in "+-":
        sign = Decimal(-1) if text[0] == "-" else Decimal(1)
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise ValueError(f"time: invalid duration {original!r}")
    total = Decimal(0)
    position = 0
    while position < len(text):
        match = _GO_PART.match(text, position)
        if match is None:
            raise ValueError(f"time: invalid duration {original!r}")
        total += Decimal(match.group(1)) * _GO_UNITS[match.group(2)]
        position = match.end()
    return float(sign * total)


_ISO_DURATION = re.compile(
    r"^P(?!$)(?:(?P<years>\d+(?:[.,]\d+)?)Y)?(?:(?P<months>\d+(?:[.,]\d+)?)M)?"
    r"(?:(?P<weeks>\d+(?:[.,]\d+)?)W)?(?:(?P<days>\d+(?:[.,]\d+)?)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+(?:[.,]\d+)?)H)?(?:(?P<minutes>\d+(?:[.,]\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:[.,]\d+)?)S)?)?$"
)
_ISO_SECONDS = {
    "years": 365 * 86400,
    "months": 30 * 86400,
    "weeks": 7 * 86400,
    "days": 86400,
    "hours": 3600,
    "minutes": 60,
    "seconds": 1,
}


def parse_iso8601_duration(text: str) -> float:
    """Seconds in a non-repeating ISO 8601 duration (`PT1H30M`, `P1DT2H`).

    Years and months count as 365 and 30 days: the emulator has no calendar for them.

    Raises:
        ValueError: not an ISO 8601 duration.
    """
    match = _ISO_DURATION.match(text)
    if match is None:
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    total = 0.0
    for name, value in match.groupdict().items():
        if value is not None:
            total += float(value.replace(",", ".")) * _ISO_SECONDS[name]
    return total


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_rfc3339(text: str) -> datetime:
    """An aware datetime from an RFC 3339 timestamp (`2026-01-02T03:04:05.5+01:00`).

    Raises:
        ValueError: not RFC 3339.
    """
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = match.group(7)
    micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
    zone = match.group(8)
    if zone in ("Z", "z"):
        tz = timezone.utc
    else:
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        tz = timezone(-offset if zone[0] == "-" else offset)
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)


def format_rfc3339(moment: datetime) -> str:
    """`moment` as Go's `time.RFC3339` (second precision, `Z` for UTC)."""
    text = moment.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def parse_point_in_time(text: str, now: datetime) -> datetime:
    """A job's `dueTime` or `ttl`: RFC 3339, a Go duration or an ISO 8601 duration after `now`.

    Raises:
        ValueError: none of the three.
    """
    try:
        return parse_rfc3339(text)
    except ValueError:
        pass
    try:
        return now + timedelta(seconds=parse_go_duration(text))
    except ValueError:
        pass
    try:
        return now + timedelta(seconds=parse_iso8601_duration(text))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an RFC 3339 time, a Go duration nor an ISO 8601 duration"
        ) from None


_PROTO_DURATION = re.compile(r"^(-)?(\d+)(?:\.(\d{1,9}))?s$")


def parse_protojson_duration(text: str) -> float:
    """Seconds in a `google.protobuf.Duration` as protobuf JSON writes it (`1s`, `0.250s`).

    Raises:
        ValueError: another format (protobuf JSON refuses `250ms`).
    """
    match = _PROTO_DURATION.match(text)
    if match is None:
        raise ValueError(f"invalid google.protobuf.Duration value {text!r}")
    seconds = float(match.group(2) + "." + (match.group(3) or "0"))
    return -seconds if match.group(1) else seconds


def format_protojson_duration(seconds: float) -> str:
    """`seconds` as protobuf JSON writes a Duration: `1s`, `0.010s`, `1.500s`."""
    nanos = round(seconds * 1_000_000_000)
    sign = "-" if nanos < 0 else ""
    whole, fraction = divmod(abs(nanos), 1_000_000_000)
    if not fraction:
        return f"{sign}{whole}s"
    digits = f"{fraction:09d}"
    for width in (3, 6):
        if digits[width:] == "0" * (9 - width):
            digits = digits[:width]
            break
    return f"{sign}{whole}.{digits}s"
