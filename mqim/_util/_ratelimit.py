"""Abuse limits as pure state machines: violation windows and the keys of source addresses.

The token buckets (`TokenBucket`, `KeyedBuckets`) live beside it in `mqim/_util/_buckets.py`, shared
with the logic service.

Nothing here reads a clock: every call takes `now` (seconds, monotonic), so the broker decides
what time is and the tests can walk through time exactly.

- `ViolationWindow` — counts refusals in a sliding window; reaching `max_violations` within
  `window_s` seconds is sustained abuse, which the broker answers by closing the connection.
"""

from __future__ import annotations

import ipaddress
from collections import deque


class ViolationWindow:
    """Counts violations in a sliding window of `window_s` seconds.

    Args:
        max_violations: Violations within the window that make the abuse sustained (at least 1).
        window_s: The window length, seconds (positive).

    Raises:
        ValueError: On a non-positive limit or window.
    """

    __slots__ = ("_times", "max_violations", "total", "window_s")

    def __init__(self, *, max_violations: int, window_s: float) -> None:
        if max_violations < 1:
            raise ValueError(f"max_violations must be >= 1, got {max_violations}")
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.max_violations = max_violations
        self.window_s = window_s
        self.total = 0
        # Never longer than max_violations: the memory of one window is bounded.
        self._times: deque[float] = deque(maxlen=max_violations)

    def record(self, now: float) -> bool:
        """Record a violation at `now`; return True if the abuse is now sustained."""
        self.total += 1
        times = self._times
        times.append(now)
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return len(times) >= self.max_violations

    def recent(self, now: float) -> int:
        """Return the number of violations within the window ending at `now`."""
        return sum(1 for t in self._times if t > now - self.window_s)


def address_key(host: str) -> str:
    """Return the key under which connections from `host` are rate limited.

    IPv4 addresses count alone; IPv6 addresses count per /64 network, the block one subscriber
    usually holds (otherwise one machine could rotate through 2**64 addresses). IPv4-mapped IPv6
    addresses count as their IPv4 address. Anything else (a unix socket path...) is its own key.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
