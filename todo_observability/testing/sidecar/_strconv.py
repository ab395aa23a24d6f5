"""Go's `strconv.ParseBool`, which daprd uses for boolean metadata (`rawPayload`)."""

from __future__ import annotations

__all__ = ["parse_bool"]

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(text: str) -> bool:
    """`text` as Go's `strconv.ParseBool` reads it.

    Raises:
        ValueError: not one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False.
    """
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')
