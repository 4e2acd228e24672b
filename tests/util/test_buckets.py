"""`TokenBucket` and `KeyedBuckets` of mqim._util (pure, explicit time).

The broker's uses of them (publish and connect rates) are tested in tests/security/test_limits.py.
"""

from __future__ import annotations

import pytest

from mqim._util import KeyedBuckets, TokenBucket


def test_bucket_takes_a_cost_and_refills_at_rate() -> None:
    bucket = TokenBucket(rate=1.0, burst=2, now=0.0)
    assert bucket.take(0.0, cost=2.0)
    assert not bucket.take(0.5)
    assert bucket.take(1.0)
    assert bucket.tokens(10.0) == 2  # capped at burst


def test_keyed_buckets_refill_and_stay_bounded() -> None:
    # The typing indicator's limiter (logic/_typing_indicator.py): 2/s, bursts of 3.
    limiter: KeyedBuckets[str] = KeyedBuckets(rate=2.0, burst=3, max_keys=2)
    assert [limiter.take("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.take("a", 0.5)  # one token back after 0.5 s at 2/s
    assert not limiter.take("a", 0.5)
    limiter.take("b", 1.0)
    limiter.take("c", 1.0)
    assert len(limiter) == 2


def test_keyed_buckets_evict_the_least_recently_used_key() -> None:
    buckets: KeyedBuckets[str] = KeyedBuckets(rate=0.0, burst=1, max_keys=2)
    assert buckets.take("a", 0.0)
    assert buckets.take("b", 0.0)
    assert not buckets.take("a", 0.0)  # "a" is now the most recently used
    assert buckets.take("c", 0.0)
    assert "a" in buckets
    assert "b" not in buckets
    assert buckets.take("b", 0.0)  # back with a full bucket


def test_keyed_buckets_forget() -> None:
    buckets: KeyedBuckets[str] = KeyedBuckets(rate=0.0, burst=1, max_keys=2)
    buckets.take("a", 0.0)
    buckets.forget("a")
    buckets.forget("never")
    assert "a" not in buckets
    assert buckets.take("a", 0.0)


@pytest.mark.parametrize(
    ("rate", "burst", "max_keys", "match"),
    [(-1.0, 1, 1, "rate"), (1.0, 0.5, 1, "burst"), (1.0, 1, 0, "max_keys")],
)
def test_keyed_buckets_validation(rate: float, burst: float, max_keys: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        KeyedBuckets(rate=rate, burst=burst, max_keys=max_keys)
