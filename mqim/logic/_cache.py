"""A small bounded LRU map whose entries expire; time is passed in, so it stays pure."""

from __future__ import annotations

from typing import Generic, TypeVar

from cachetools import LRUCache

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
        self._ttl = ttl
        self._entries: LRUCache[K, tuple[float, V]] = LRUCache(maxsize=maxsize)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, *, now: float) -> tuple[bool, V | None]:
        """Return `(True, value)` for a fresh entry, else `(False, None)` (expired ones leave)."""
        entry = self._entries.get(key)  # a use: the entry becomes the most recent
        if entry is None:
            return False, None
        expires, value = entry
        if now >= expires:
            del self._entries[key]
            return False, None
        return True, value

    def put(self, key: K, value: V, *, now: float) -> None:
        """Store `value` for `key` until `now + ttl`."""
        # Full: the least recently used entry leaves to make room.
        self._entries[key] = (now + self._ttl, value)

    def discard(self, key: K) -> None:
        """Forget `key` if present."""
        self._entries.pop(key, None)
