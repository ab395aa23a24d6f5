"""Scrubbing: values under sensitive keys never reach a log line, a span attribute or a captured header."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["DEFAULT_SENSITIVE_PATTERNS", "REDACTED", "Redactor"]

DEFAULT_SENSITIVE_PATTERNS: tuple[str, ...] = (
    r"passw(or)?d",
    r"pwd",
    r"secret",
    r"token",
    r"auth",
    r"cookie",
    r"api[-_ ]?key",
    r"credential",
    r"private[-_ ]?key",
    r"session",
    r"signature",
)
"""Keys matching any of these (case-insensitive, anywhere in the key) are redacted."""
REDACTED = "[REDACTED]"
"""What a redacted value becomes. It never echoes any part of the secret."""
_MAX_CACHED_KEYS = 4096


class Redactor:
    """Decides which keys are sensitive and replaces their values.

    Args:
        extra_patterns: Regular expressions added to `DEFAULT_SENSITIVE_PATTERNS`.
    """

    __slots__ = ("_cache", "_regex", "patterns")

    def __init__(self, extra_patterns: Iterable[str] = ()):
        self.patterns = (*DEFAULT_SENSITIVE_PATTERNS, *extra_patterns)
        self._regex = re.compile("|".join(f"(?:{p})" for p in self.patterns), re.IGNORECASE)
        self._cache: dict[str, bool] = {}

    def is_sensitive(self, key: str) -> bool:
        """Whether values under `key` must be redacted."""
        hit = self._cache.get(key)
        if hit is None:
            hit = self._regex.search(key) is not None
            if len(self._cache) < _MAX_CACHED_KEYS:
                self._cache[key] = hit
        return hit

    def redact(self, mapping: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `mapping` with sensitive values replaced, recursively."""
        return {
            key: REDACTED if self.is_sensitive(key) else self._value(value)
            for key, value in mapping.items()
        }

    def _value(self, value: Any) -> Any:
        if value is None or isinstance(value, str | int | float):
            return value  # the common case first: nothing to look into
        if isinstance(value, Mapping):
            return self.redact(value)
        if isinstance(value, list | tuple):
            return [self._value(item) for item in value]
        return value
