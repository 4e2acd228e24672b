"""Token buckets: one, and one per key in a bounded map. Pure: time is passed in.

Nothing here reads a clock: every call takes `now` (seconds, monotonic), so the caller decides
what time is and the tests can walk through time exactly.

- `TokenBucket` — `rate` tokens per second refill a bucket of `burst` tokens; an action costs
  tokens and is refused when the bucket holds too few. It starts full.
- `KeyedBuckets` — one bucket per key (a user, a source address) in a map bounded by `max_keys`:
  the least recently used key leaves first. Dropping a key is harmless for the honest (their
  bucket comes back full), and an attacker cannot grow the map.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from cachetools import LRUCache

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
        self._buckets: LRUCache[_K, TokenBucket] = LRUCache(maxsize=max_keys)

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def take(self, key: _K, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens from the bucket of `key` (created full); return whether it did."""
        buckets = self._buckets
        try:
            bucket = buckets[key]  # a use: the key becomes the most recent
        except KeyError:
            # Full: the least recently used key leaves to make room.
            bucket = buckets[key] = TokenBucket(rate=self.rate, burst=self.burst, now=now)
        return bucket.take(now, cost)

    def forget(self, key: _K) -> None:
        """Drop the bucket of `key`, if any."""
        self._buckets.pop(key, None)
