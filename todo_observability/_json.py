"""Compact JSON to and from bytes: orjson when it is installed, the standard library otherwise."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DECODE_ERRORS", "dumps", "loads"]

dumps: Callable[[Any], bytes]
loads: Callable[[bytes | str], Any]
DECODE_ERRORS: tuple[type[Exception], ...]
"""What `loads` raises for bytes that are not JSON (or not UTF-8)."""

try:
    import orjson
except ImportError:  # pragma: no cover - exercised by the no-orjson test session

    def dumps(value: Any) -> bytes:
        """`value` as compact JSON bytes."""
        return json.dumps(value, separators=(",", ":")).encode()

    loads = json.loads
    DECODE_ERRORS = (json.JSONDecodeError, UnicodeDecodeError)
else:
    dumps = orjson.dumps
    loads = orjson.loads
    DECODE_ERRORS = (orjson.JSONDecodeError, UnicodeDecodeError)
