"""Token buckets, bounded keyed buckets, violation windows and address keys (pure, explicit time)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqim._util import KeyedBuckets, TokenBucket, ViolationWindow, address_key


def test_bucket_starts_full_and_refuses_when_empty() -> None:
    bucket = TokenBucket(rate=1.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_rate_up_to_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    for _ in range(3):
        bucket.take(0.0)
    assert not bucket.take(0.4)  # 0.8 token
    assert bucket.take(0.5)  # 1.0 token
    assert bucket.tokens(100.0) == 3  # capped at burst
    assert bucket.full(100.0)


def test_bucket_ignores_a_clock_going_backwards() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert bucket.tokens(5.0) == 0
    assert bucket.take(11.0)


def test_zero_rate_never_refills() -> None:
    bucket = TokenBucket(rate=0, burst=2, now=0.0)
    assert bucket.take(0.0)
    assert bucket.take(0.0)
    assert not bucket.take(1e9)


def test_cost_larger_than_one() -> None:
    bucket = TokenBucket(rate=1.0, burst=5, now=0.0)
    assert bucket.take(0.0, cost=5)
    assert not bucket.take(1.0, cost=2)
    assert bucket.take(2.0, cost=2)


@pytest.mark.parametrize(("rate", "burst"), [(-1.0, 1), (1.0, 0), (1.0, 0.5)])
def test_bucket_validation(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        TokenBucket(rate=rate, burst=burst, now=0.0)


@given(
    rate=st.floats(min_value=0.1, max_value=100),
    burst=st.integers(min_value=1, max_value=50),
    steps=st.lists(st.floats(min_value=0, max_value=2), max_size=200),
)
def test_bucket_never_allows_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[float]
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst, now=0.0)
    now, taken = 0.0, 0
    for step in steps:
        now += step
        taken += bucket.take(now)
        assert taken <= burst + rate * now + 1e-6


def test_keyed_buckets_are_independent_and_bounded() -> None:
    buckets: KeyedBuckets[str] = KeyedBuckets(rate=0.0, burst=1, max_keys=2)
    assert buckets.take("a", 0.0)
    assert not buckets.take("a", 0.0)
    assert buckets.take("b", 0.0)
    assert len(buckets) == 2
    assert buckets.take("c", 0.0)  # evicts the least recently used: "a"
    assert len(buckets) == 2
    assert "a" not in buckets
    assert "b" in buckets
    buckets.forget("b")
    assert "b" not in buckets


def test_keyed_buckets_lru_keeps_the_recently_used() -> None:
    buckets: KeyedBuckets[str] = KeyedBuckets(rate=0.0, burst=5, max_keys=2)
    buckets.take("a", 0.0)
    buckets.take("b", 0.0)
    buckets.take("a", 0.0)  # "a" is now the most recent
    buckets.take("c", 0.0)
    assert "a" in buckets
    assert "b" not in buckets


@given(keys=st.lists(st.text(max_size=3), max_size=300), limit=st.integers(min_value=1, max_value=20))
def test_keyed_buckets_never_exceed_max_keys(keys: list[str], limit: int) -> None:
    buckets: KeyedBuckets[str] = KeyedBuckets(rate=1.0, burst=1, max_keys=limit)
    for key in keys:
        buckets.take(key, 0.0)
        assert len(buckets) <= limit


def test_keyed_buckets_validation() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        KeyedBuckets(rate=1.0, burst=1, max_keys=0)
    with pytest.raises(ValueError, match="burst"):
        KeyedBuckets(rate=1.0, burst=0, max_keys=1)


def test_violation_window_sustained_only_within_the_window() -> None:
    window = ViolationWindow(max_violations=3, window_s=10.0)
    assert not window.record(0.0)
    assert not window.record(1.0)
    assert window.record(2.0)  # three within 10 s
    spaced = ViolationWindow(max_violations=3, window_s=10.0)
    assert not any(spaced.record(t) for t in (0.0, 6.0, 12.0, 18.0, 24.0))  # never 3 within 10 s
    assert spaced.total == 5
    assert spaced.recent(24.0) == 2


def test_violation_window_validation() -> None:
    with pytest.raises(ValueError, match="max_violations"):
        ViolationWindow(max_violations=0, window_s=1.0)
    with pytest.raises(ValueError, match="window_s"):
        ViolationWindow(max_violations=1, window_s=0)


@given(times=st.lists(st.floats(min_value=0, max_value=1000), max_size=100))
def test_violation_window_memory_is_bounded(times: list[float]) -> None:
    window = ViolationWindow(max_violations=5, window_s=3.0)
    for t in sorted(times):
        window.record(t)
        assert len(window._times) <= 5


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_address_key(host: str, key: str) -> None:
    assert address_key(host) == key
