"""Deadlines ordered in a heap: a timer tick costs what is due, not what exists.

The broker's sweeper used to walk every connection twice a second (20,000 checks a second at
10,000 connections). Here each key has one deadline; `pop_due(now)` hands back the keys whose
deadline has come, in deadline order, and the caller decides: act, or `set` a later deadline
(a connection that received something since is checked again at its new keepalive deadline).
A key is checked about once per its own period instead of once per tick.

Replaced and discarded deadlines stay in the heap as stale entries until they come up or the
heap is rebuilt: it is rebuilt when stale entries outnumber live ones, so memory stays bounded
by the live keys (a churn of short connections with day-long keepalives leaves nothing behind).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

_K = TypeVar("_K", bound=Hashable)

_COMPACT_SLACK = 64
"""Stale entries tolerated beyond the live ones before the heap is rebuilt."""


class Deadlines(Generic[_K]):
    """One deadline per key, the earliest first."""

    __slots__ = ("_heap", "_seq", "_when")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _K]] = []
        self._when: dict[_K, float] = {}
        self._seq = itertools.count()  # ties never compare keys

    def __len__(self) -> int:
        return len(self._when)

    def __contains__(self, key: object) -> bool:
        return key in self._when

    @property
    def entries(self) -> int:
        """Heap entries, stale ones included (bounded by about twice the live keys)."""
        return len(self._heap)

    def set(self, key: _K, deadline: float) -> None:
        """Give `key` the deadline `deadline`, replacing the one it had."""
        self._when[key] = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), key))
        self._compact()

    def discard(self, key: _K) -> None:
        """Forget `key`'s deadline, if it has one."""
        if self._when.pop(key, None) is not None:
            self._compact()

    def deadline(self, key: _K) -> float | None:
        """The deadline of `key`, or None."""
        return self._when.get(key)

    def pop_due(self, now: float) -> list[_K]:
        """Remove and return the keys whose deadline is at or before `now`, earliest first."""
        heap, when = self._heap, self._when
        due: list[_K] = []
        while heap and heap[0][0] <= now:
            deadline, _, key = heapq.heappop(heap)
            if when.get(key) == deadline:  # else a stale entry: replaced or discarded
                del when[key]
                due.append(key)
        return due

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._when) + _COMPACT_SLACK:
            seq = self._seq
            self._heap = [(deadline, next(seq), key) for key, deadline in self._when.items()]
            heapq.heapify(self._heap)
