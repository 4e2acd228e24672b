"""Requests held while storage fails: retried with back-off, in arrival order, never acknowledged.

A request that storage could not serve is not settled (its sender's PUBACK waits, so a crash now
loses nothing the sender was told is stored). It waits here and is processed again once the
back-off has passed; while anything is held, newly received requests queue behind it, so each
sender's requests keep their order. The sender is told `unavailable` once per request, not per
attempt. Bounded by what the broker lets through: every held request still holds its sender's
PUBACK, and the broker stops reading from publishers when too many are unsettled. A request held
longer than `max_hold_s` is given back to the broker as failed (its sender's connection closes
without the PUBACK and the client resends it later): a request that storage refuses for good
cannot stall every request queued behind it.

Pure: the caller passes the monotonic time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Final

from mqim.logic._bus import Inbound

FIRST_DELAY_S: Final = 0.05
"""First back-off after a storage failure."""

MAX_DELAY_S: Final = 2.0
"""Longest back-off between two attempts while storage keeps failing."""


class HeldRequests:
    """The queue of held requests and the back-off of the current outage."""

    __slots__ = ("_delay", "_due", "_items", "_max_hold_s", "_told", "episode_requests")

    def __init__(self, *, max_hold_s: float) -> None:
        self._max_hold_s = max_hold_s
        self._items: deque[Inbound] = deque()
        # id() of held items whose sender was told `unavailable`, with when they were first held.
        self._told: dict[int, float] = {}
        self._delay = 0.0
        self._due = 0.0
        self.episode_requests = 0  # requests held since the outage began (for the log line)

    def __len__(self) -> int:
        return len(self._items)

    def hold(self, items: Iterable[Inbound], *, now: float) -> list[Inbound]:
        """Hold requests storage just failed on (at the front: they were first) and back off.

        Returns the requests held for longer than `max_hold_s`, which are no longer held.
        """
        held: list[Inbound] = []
        expired: list[Inbound] = []
        for item in items:
            first = self._told.get(id(item), now)
            if now - first > self._max_hold_s:
                self.forget(item)
                expired.append(item)
            else:
                held.append(item)
        self._items.extendleft(reversed(held))
        self.episode_requests += len(held)
        self._delay = FIRST_DELAY_S if self._delay == 0 else min(self._delay * 2, MAX_DELAY_S)
        self._due = now + self._delay
        return expired

    def queue_behind(self, items: Iterable[Inbound]) -> None:
        """New arrivals wait behind the held requests (per-sender order is kept)."""
        self._items.extend(items)

    def wait_s(self, now: float) -> float:
        """Seconds until the next attempt (0 when due)."""
        return max(0.0, self._due - now)

    def take(self, max_items: int) -> list[Inbound]:
        """The next requests to attempt, oldest first."""
        count = min(max_items, len(self._items))
        return [self._items.popleft() for _ in range(count)]

    def told(self, item: Inbound) -> bool:
        """Whether the sender of `item` was already told `unavailable`."""
        return id(item) in self._told

    def mark_told(self, item: Inbound, *, now: float) -> None:
        self._told.setdefault(id(item), now)

    def forget(self, item: Inbound) -> None:
        """`item` was processed (or is no longer held)."""
        self._told.pop(id(item), None)

    def recovered(self) -> int:
        """Storage served a batch again: end the outage; returns how many requests it held."""
        count, self.episode_requests = self.episode_requests, 0
        self._delay = 0.0
        self._due = 0.0
        return count

    @property
    def in_outage(self) -> bool:
        return self._delay > 0
