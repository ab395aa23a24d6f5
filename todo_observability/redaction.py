"""Scrubbing: secrets never reach a log line, a span, a captured header or a probe body.

Two rules, applied together. Values under sensitive *keys* become `[REDACTED]`,
recursively. And wherever text appears (a message, an `extra` value, an exception
message or traceback, a span attribute, a health check's error), what is
recognisably secret by its *shape* is replaced: the password of a URL's user-info
(DSNs), `Bearer` and `Basic` credentials, JWT-shaped tokens, and the values of
sensitive `name=value` pairs (query parameters) and quoted `"name": "value"` pairs.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "CIRCULAR",
    "DEFAULT_SENSITIVE_PATTERNS",
    "DEFAULT_SENSITIVE_WORDS",
    "REDACTED",
    "TOO_DEEP",
    "Redactor",
]

DEFAULT_SENSITIVE_PATTERNS: tuple[str, ...] = (
    r"passw(or)?d",
    r"passphrase",
    r"pwd",
    r"secret",
    r"token",
    r"auth",
    r"cookie",
    r"api[-_ ]?key",
    r"access[-_ ]?key",
    r"credential",
    r"private[-_ ]?key",
    r"session",
    r"signature",
    r"bearer",
    r"jwt",
    r"dsn",
    r"database[-_ ]?url",
    r"conn(ection)?[-_ ]?str(ing)?",
    r"[cx]srf",
)
"""Keys matching any of these (case-insensitive, anywhere in the key) are redacted."""
DEFAULT_SENSITIVE_WORDS: tuple[str, ...] = (
    "key",
    "pass",
    "pw",
    "pin",
    "otp",
    "sig",
    "refresh",
    "private",
)
"""Keys holding one of these as a whole word are redacted: `key`, `db_pass`, `userPin`, `x-sig`.

Whole words, because as substrings they would redact `monkey`, `compass` or `shipping`.
Words are split at anything but a letter or digit, and where camelCase turns upper.
"""
REDACTED = "[REDACTED]"
"""What a redacted value becomes. It never echoes any part of the secret."""
CIRCULAR = "[CIRCULAR]"
"""What a container that contains itself becomes, where it recurs."""
TOO_DEEP = "[TOO DEEP]"
"""What a container nested deeper than the redactor looks becomes."""
_MAX_DEPTH = 32
_MAX_CACHED_KEYS = 4096
# Values with nothing to scrub in them (their subclasses go the long way round).
_SCALARS = frozenset({int, float, bool, type(None)})

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# The password of `scheme://user:password@host`. Greedy up to the last `@` of the authority:
# passwords with an unescaped `@` are common in hand-written DSNs. Starting at the literal `://`
# (not at the scheme) lets the regex engine skip ahead to it instead of trying every letter.
_URL_PASSWORD = re.compile(r"(://[^\s/?#@:]*:)[^\s/?#]+(?=@)")
_AUTH_SCHEME = re.compile(r"\b(bearer|basic)(\s+)([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)
_JWT = re.compile(r"eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
# `name=value`: query parameters, and the same shape in prose or libpq DSNs (`password=...`).
_PAIR = re.compile(
    r"(?<![A-Za-z0-9_.\-\[\]])([A-Za-z0-9_.\-\[\]]{1,64})=(\"[^\"]*\"|'[^']*'|[^\s&#]+)"
)
# The names of `name=value` pairs, read backwards from each `=` in the reversed text: a pattern
# that starts with a literal is searched fast, one that starts with a class of characters is not.
_REVERSED_PAIR_NAME = re.compile(r"=([A-Za-z0-9_.\-\[\]]{1,64})")
# `"name": "value"` and `'name': 'value'`: JSON, and the repr of a dict in a message.
_QUOTED_PAIR = re.compile(
    r"""(["'])([^"'\s]{1,64})\1(\s*:\s*)(?:(["'])(?:\\.|(?!\4).)*\4|[^\s,}\]]+)"""
)


class Redactor:
    """Decides which keys are sensitive and scrubs what signals carry.

    Args:
        extra_patterns: Regular expressions added to `DEFAULT_SENSITIVE_PATTERNS`.
    """

    __slots__ = ("_cache", "_regex", "_words", "patterns")

    def __init__(self, extra_patterns: Iterable[str] = ()):
        self.patterns = (*DEFAULT_SENSITIVE_PATTERNS, *extra_patterns)
        self._regex = re.compile("|".join(f"(?:{p})" for p in self.patterns), re.IGNORECASE)
        self._words = re.compile(
            rf"(?<![a-z0-9])(?:{'|'.join(DEFAULT_SENSITIVE_WORDS)})(?![a-z0-9])"
        )
        self._cache: dict[object, bool] = {}

    def is_sensitive(self, key: object) -> bool:
        """Whether values under `key` must be redacted (a key that is not a string is read as text)."""
        hit = self._cache.get(key)
        if hit is None:
            try:
                text = key if isinstance(key, str) else str(key)
            except Exception:  # noqa: BLE001 - a key that cannot be read could say anything
                return True
            hit = (
                self._regex.search(text) is not None
                or self._words.search(_CAMEL.sub("_", text).lower()) is not None
            )
            if len(self._cache) < _MAX_CACHED_KEYS:
                self._cache[key] = hit
        return hit

    def redact(self, mapping: Mapping[Any, Any]) -> dict[Any, Any]:
        """A copy of `mapping`: values under sensitive keys replaced, the rest scrubbed, recursively.

        A container that contains itself becomes `CIRCULAR` where it recurs, and
        one nested too deep `TOO_DEEP`, so that any mapping can be rendered.
        """
        seen = (id(mapping),)
        cache = self._cache
        redacted: dict[Any, Any] = {}
        # Written out for the common case (a known key, a number): this runs for every line.
        for key, value in mapping.items():
            sensitive = cache.get(key)
            if sensitive is None:
                sensitive = self.is_sensitive(key)
            if sensitive:
                redacted[key] = REDACTED
            elif type(value) in _SCALARS:
                redacted[key] = value
            else:
                redacted[key] = self._value(value, seen)
        return redacted

    def scrub(self, value: Any) -> Any:
        """`value` scrubbed: text by `scrub_text`, mappings by `redact`, lists and tuples item by item."""
        return self._value(value, ())

    def _value(self, value: Any, seen: tuple[int, ...]) -> Any:
        if isinstance(value, str):
            return self.scrub_text(value)
        if value is None or isinstance(value, int | float):
            return value  # the common cases first: nothing to look into
        if isinstance(value, Mapping | list | tuple):
            if id(value) in seen:
                return CIRCULAR
            if len(seen) >= _MAX_DEPTH:
                return TOO_DEEP
            seen = (*seen, id(value))
            if isinstance(value, Mapping):
                return {
                    key: REDACTED if self.is_sensitive(key) else self._value(item, seen)
                    for key, item in value.items()
                }
            return [self._value(item, seen) for item in value]
        return value

    def scrub_text(self, text: str) -> str:
        """`text` with whatever is recognisably secret by its shape replaced by `REDACTED`.

        The password of a URL's user-info (`postgres://app:[REDACTED]@db/todo`),
        `Bearer` credentials and `Basic` ones (base64 of `user:password`),
        JWT-shaped tokens (`eyJ...`), and the values of `name=value` and
        `"name": "value"` pairs whose name is sensitive (`?api_key=[REDACTED]`).
        Text holding none of their markers (`://`, `=`, `eyJ`, `Bearer`, `Basic`,
        a quoted name before `:`) is returned as it is, after a few substring tests.
        """
        # Substring tests cost a fraction of any regex; most text has none of the markers.
        url = "://" in text
        pair = "=" in text
        jwt = "eyJ" in text
        scheme = "earer" in text or "asic" in text or "EARER" in text or "ASIC" in text
        quoted = '":' in text or "':" in text
        if not (url or pair or jwt or scheme or quoted):
            return text
        if url:
            text = _URL_PASSWORD.sub(rf"\1{REDACTED}", text)
        if scheme:
            text = _AUTH_SCHEME.sub(_auth_credentials, text)
        if jwt:
            text = _JWT.sub(REDACTED, text)
        if pair and any(
            self.is_sensitive(name[::-1]) for name in _REVERSED_PAIR_NAME.findall(text[::-1])
        ):
            text = _PAIR.sub(self._pair, text)
        if quoted:
            text = _QUOTED_PAIR.sub(self._quoted_pair, text)
        return text

    def _pair(self, match: re.Match[str]) -> str:
        if match[1] and self.is_sensitive(match[1]):
            return f"{match[1]}={REDACTED}"
        return match[0]

    def _quoted_pair(self, match: re.Match[str]) -> str:
        if self.is_sensitive(match[2]):
            quote = match[4] or ""
            return f"{match[1]}{match[2]}{match[1]}{match[3]}{quote}{REDACTED}{quote}"
        return match[0]


def _auth_credentials(match: re.Match[str]) -> str:
    credentials = match[3]
    if match[1].lower() == "basic":
        # `Basic` is a common word; only what decodes to `user:password` is a credential.
        try:
            decoded = base64.b64decode(credentials, validate=True)
        except (binascii.Error, ValueError):
            return match[0]
        if b":" not in decoded:
            return match[0]
    return f"{match[1]}{match[2]}{REDACTED}"
