"""An in-memory state store with ETags, as daprd's state components behave.

ETags are versions (`"1"`, `"2"`, ...), as with Redis: an ETag that is not a number is invalid
(daprd answers 400), one that does not match is a conflict (409). Without an ETag a write always
succeeds under last-write concurrency, and only creates under first-write.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["ETagInvalidError", "ETagMismatchError", "Operation", "StateStore"]


class ETagMismatchError(Exception):
    """The ETag does not match the stored one (daprd: 409)."""

    def __init__(self, detail: str = ""):
        text = "possible etag mismatch. error from state store"
        super().__init__(f"{text}: {detail}" if detail else text)


class ETagInvalidError(Exception):
    """The ETag is not one this store issues (daprd: 400)."""

    def __init__(self, etag: str):
        super().__init__(f'invalid etag value: strconv.Atoi: parsing "{etag}": invalid syntax')


@dataclass
class _Item:
    value: bytes
    version: int
    expires: float | None = None


@dataclass(frozen=True)
class Operation:
    """A write: `upsert` (with `value`) or `delete`."""

    kind: str
    key: str
    value: bytes = b""
    etag: str | None = None
    first_write: bool = False
    ttl: float | None = None


class StateStore:
    """One state store component."""

    def __init__(self, name: str):
        self.name = name
        self._items: dict[str, _Item] = {}

    def _live(self, items: dict[str, _Item], key: str) -> _Item | None:
        item = items.get(key)
        if item is not None and item.expires is not None and item.expires <= time.time():
            del items[key]
            return None
        return item

    def get(self, key: str) -> tuple[bytes, str, float | None] | None:
        """The value, ETag and expiry (Unix time) of `key`, or None."""
        item = self._live(self._items, key)
        if item is None:
            return None
        return item.value, str(item.version), item.expires

    def _check(self, items: dict[str, _Item], operation: Operation) -> None:
        current = self._live(items, operation.key)
        if operation.etag:
            try:
                version = int(operation.etag)
            except ValueError:
                raise ETagInvalidError(operation.etag) from None
            if current is None or current.version != version:
                raise ETagMismatchError()
        elif operation.first_write and current is not None:
            raise ETagMismatchError("item already exists and no etag was passed")

    def _apply(self, items: dict[str, _Item], operation: Operation) -> None:
        self._check(items, operation)
        if operation.kind == "delete":
            items.pop(operation.key, None)
            return
        current = items.get(operation.key)
        version = current.version + 1 if current is not None else 1
        expires = time.time() + operation.ttl if operation.ttl else None
        items[operation.key] = _Item(operation.value, version, expires)

    def write(self, operation: Operation) -> None:
        """Apply one write.

        Raises:
            ETagMismatchError: the ETag does not match, or first-write finds the key.
            ETagInvalidError: the ETag is not a number.
        """
        self._apply(self._items, operation)

    def transact(self, operations: Iterable[Operation]) -> None:
        """Apply every write or none.

        Raises:
            ETagMismatchError: an ETag does not match (nothing is written).
            ETagInvalidError: an ETag is not a number (nothing is written).
        """
        items = dict(self._items)
        for operation in operations:
            self._apply(items, operation)
        self._items = items
