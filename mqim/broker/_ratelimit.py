"""Abuse limits as pure state machines: token buckets, bounded keyed buckets, violation windows.

Nothing here reads a clock: every call takes `now` (seconds, monotonic), so the broker decides
what time is and the tests can walk through time exactly.

- `TokenBucket` — `rate` tokens per second refill a bucket of `burst` tokens; an action costs
  tokens and is refused when the bucket holds too few. It starts full.
- `KeyedBuckets` — one bucket per key (a user, a source address) in a map bounded by `max_keys`:
  the least recently used key leaves first. Dropping a key is harmless for the honest (their
  bucket comes back full), and an attacker cannot grow the map.
- `ViolationWindow` — counts refusals in a sliding window; reaching `max_violations` within
  `window_s` seconds is sustained abuse, which the broker answers by closing the connection.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import Generic, TypeVar

_K = TypeVar("_K", bound=Hashable)


class TokenBucket:
    """A token bucket.

    Args:
        rate: Tokens added per second; 0 means the bucket never refills.
        burst: The capacity, and the tokens available at the start (at least 1).
        now: The current time, in seconds.

    Raises:
        ValueError: On a negative rate or a burst below 1.
    """

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        if rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def _refill(self, now: float) -> None:
        # A clock that goes backwards adds nothing (and never removes tokens).
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._stamp = now

    def tokens(self, now: float) -> float:
        """Return the tokens available at `now`."""
        self._refill(now)
        return self._tokens

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens if the bucket holds them; return whether it did."""
        self._refill(now)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def full(self, now: float) -> bool:
        """Return True if the bucket is full at `now` (forgetting it would change nothing)."""
        return self.tokens(now) >= self.burst


class KeyedBuckets(Generic[_K]):
    """One `TokenBucket` per key, at most `max_keys` keys (least recently used leave first).

    Args:
        rate: Refill rate of each bucket, tokens per second.
        burst: Capacity of each bucket.
        max_keys: The most keys tracked at once (at least 1).

    Raises:
        ValueError: On a bad rate, burst or `max_keys`.
    """

    def __init__(self, *, rate: float, burst: float, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        TokenBucket(rate=rate, burst=burst, now=0.0)  # validates rate and burst
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[_K, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def take(self, key: _K, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens from the bucket of `key` (created full); return whether it did."""
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = TokenBucket(rate=self.rate, burst=self.burst, now=now)
            if len(buckets) > self.max_keys:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(key)
        return bucket.take(now, cost)

    def forget(self, key: _K) -> None:
        """Drop the bucket of `key`, if any."""
        self._buckets.pop(key, None)


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
