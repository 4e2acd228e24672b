"""Bounded window of delivered (conv, seq) pairs: a DUP redelivery is yielded only once."""

from __future__ import annotations

from cachetools import LRUCache


class DedupWindow:
    """Remembers the last `max_entries` (conv, seq) pairs seen.

    A message redelivered after a reconnect (MQTT DUP) carries the same conv and seq as the first
    delivery, so it is recognised as long as the pair is still in the window.

    Args:
        max_entries: How many pairs to remember; the oldest are forgotten first.
    """

    def __init__(self, *, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self._max_entries = max_entries
        self._seen: LRUCache[tuple[str, int], None] = LRUCache(maxsize=max_entries)

    @property
    def max_entries(self) -> int:
        """The size limit of the window."""
        return self._max_entries

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._seen

    def seen(self, conv: str, seq: int) -> bool:
        """Record `(conv, seq)` and return True if it was already in the window."""
        key = (conv, seq)
        known = key in self._seen
        # Known: refreshed (a pair that keeps coming back should stay remembered). New: the
        # oldest pair leaves when the window is full.
        self._seen[key] = None
        return known
