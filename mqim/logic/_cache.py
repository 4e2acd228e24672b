"""A small bounded LRU map whose entries expire; time is passed in, so it stays pure."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlLru(Generic[K, V]):
    """At most `maxsize` entries, each trusted for `ttl` time units after it was put.

    Args:
        maxsize: Entry limit; the least recently used entry leaves first.
        ttl: Lifetime of an entry, in the unit of the `now` values passed to `get`/`put`.
    """

    def __init__(self, *, maxsize: int, ttl: float) -> None:
        if maxsize <= 0:
            raise ValueError(f"maxsize must be positive, got {maxsize}")
        self._maxsize = maxsize
        self._ttl = ttl
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, *, now: float) -> tuple[bool, V | None]:
        """Return `(True, value)` for a fresh entry, else `(False, None)` (expired ones leave)."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if now >= expires:
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, value

    def put(self, key: K, value: V, *, now: float) -> None:
        """Store `value` for `key` until `now + ttl`."""
        self._entries[key] = (now + self._ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._maxsize:
            self._entries.popitem(last=False)

    def discard(self, key: K) -> None:
        """Forget `key` if present."""
        self._entries.pop(key, None)
