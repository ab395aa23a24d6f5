"""JSON as daprd reads and writes it: Go's `encoding/json`, not Python's `json`.

daprd builds a CloudEvent as a Go map and marshals it, so the bytes a subscriber receives have
their keys sorted, no spaces, `<`, `>` and `&` escaped, and numbers exactly as the publisher
wrote them (daprd decodes with `UseNumber`). The emulator stores and delivers those same bytes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

__all__ = ["GoNumber", "Struct", "dumps", "is_text", "loads"]


class GoNumber(str):
    """A JSON number kept as the text it was written with, like Go's `json.Number`."""

    __slots__ = ()


class Struct(dict[str, Any]):
    """A JSON object whose keys keep their order, as Go marshals a struct (maps are sorted)."""


def is_text(value: object) -> TypeGuard[str]:
    """Whether a decoded JSON value is a string (a `GoNumber` is a number)."""
    return isinstance(value, str) and not isinstance(value, GoNumber)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character in JSON: {name} is not a JSON value")


def loads(data: bytes | str) -> Any:
    """Decode JSON the way daprd does: numbers stay `GoNumber` text, NaN and Infinity are errors.

    Raises:
        ValueError: `data` is not one JSON value (or not UTF-8).
    """
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    return json.loads(
        data,
        parse_int=GoNumber,
        parse_float=GoNumber,
        parse_constant=_reject_constant,
    )


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_NEEDS_ESCAPE = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]')


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    escaped = _ESCAPES.get(char)
    if escaped is not None:
        return escaped
    if "\ud800" <= char <= "\udfff":
        return "\\ufffd"  # Go replaces what is not valid UTF-8
    return f"\\u{ord(char):04x}"


def _quote(text: str) -> str:
    return '"' + _NEEDS_ESCAPE.sub(_escape, text) + '"'


def _float(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"json: unsupported value: {value!r}")
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def _encode(value: Any, parts: list[str]) -> None:
    if value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, GoNumber):
        parts.append(str(value))
    elif isinstance(value, str):
        parts.append(_quote(value))
    elif isinstance(value, int):
        parts.append(str(value))
    elif isinstance(value, float):
        parts.append(_float(value))
    elif isinstance(value, Mapping):
        keys = list(value) if isinstance(value, Struct) else sorted(value)
        parts.append("{")
        for index, key in enumerate(keys):
            if index:
                parts.append(",")
            parts.append(_quote(str(key)))
            parts.append(":")
            _encode(value[key], parts)
        parts.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _encode(item, parts)
        parts.append("]")
    else:
        raise TypeError(f"json: unsupported type: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """Encode `value` as Go's `json.Marshal` would: compact, map keys sorted, HTML-escaped."""
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts).encode("utf-8", "surrogatepass")
