"""The log-linear histogram against an exact sorted-list reference."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqim.bench import Histogram, HistogramSnapshot, TrackingLimitExceeded
from mqim.bench._histogram import MAX_VALUE, SUB_BUCKETS, bucket_bounds, bucket_index, rank
from mqim.bench._messages import ResultEv

PERCENTILES = (0.0, 1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0)
values = st.integers(min_value=0, max_value=MAX_VALUE)
# Latency-like values: mostly microseconds to seconds in nanoseconds, some tiny ones.
samples = st.lists(
    st.one_of(st.integers(0, 300), st.integers(1_000, 10**10), values), min_size=1, max_size=400
)


def reference(sorted_values: list[int], percentile: float) -> int:
    """Nearest rank on the exact sorted values."""
    return sorted_values[rank(percentile, len(sorted_values)) - 1]


@given(samples)
def test_percentiles_within_precision_of_the_exact_answer(data: list[int]) -> None:
    hist = Histogram()
    for v in data:
        hist.record(v)
    exact = sorted(data)
    for p in PERCENTILES:
        want = reference(exact, p)
        got = hist.percentile(p)
        # Half a bucket: at most 1/256 of the value (and the promised ~1 % with room to spare).
        assert abs(got - want) <= want / (2 * SUB_BUCKETS), (p, got, want)
        assert abs(got - want) <= want * 0.01
    assert hist.count == len(data)
    assert hist.min == exact[0]
    assert hist.max == exact[-1]
    assert hist.percentile(100) == exact[-1]
    assert hist.mean == pytest.approx(sum(data) / len(data))


@given(samples, samples)
def test_merge_equals_recording_everything_in_one(a: list[int], b: list[int]) -> None:
    left, right, both = Histogram(), Histogram(), Histogram()
    for v in a:
        left.record(v)
        both.record(v)
    for v in b:
        right.record(v)
        both.record(v)
    left.merge(right.snapshot())
    assert left.snapshot() == both.snapshot()


@given(samples)
def test_snapshot_survives_the_worker_protocol(data: list[int]) -> None:
    hist = Histogram()
    for v in data:
        hist.record(v)
    wire = ResultEv(latency=hist.snapshot()).model_dump_json()
    back = ResultEv.model_validate_json(wire).latency
    assert back == hist.snapshot()
    assert Histogram.from_snapshot(back).percentiles(PERCENTILES) == hist.percentiles(PERCENTILES)


@given(values)
def test_every_value_falls_inside_its_bucket(value: int) -> None:
    low, high = bucket_bounds(bucket_index(value))
    assert low <= value <= high
    assert high - low + 1 <= max(1, low / SUB_BUCKETS)


def test_buckets_are_contiguous() -> None:
    previous_high = -1
    for index in range(bucket_index(MAX_VALUE) + 1):
        low, high = bucket_bounds(index)
        assert low == previous_high + 1
        previous_high = high
    assert previous_high >= MAX_VALUE


def test_small_values_are_exact() -> None:
    hist = Histogram()
    for v in range(2 * SUB_BUCKETS):
        hist.record(v)
    assert [hist.percentile(100 * (i + 1) / (2 * SUB_BUCKETS)) for i in range(2 * SUB_BUCKETS)] == list(
        range(2 * SUB_BUCKETS)
    )


def test_empty_histogram_reports_zero() -> None:
    hist = Histogram()
    assert hist.percentile(99) == 0
    assert hist.snapshot() == HistogramSnapshot()
    assert hist.summary_ms()["count"] == 0


def test_times_records_a_value_repeatedly() -> None:
    hist = Histogram()
    hist.record(1_000_000, times=99)
    hist.record(50_000_000)
    assert hist.percentile(99) == pytest.approx(1_000_000, rel=0.01)
    assert hist.percentile(100) == 50_000_000
    assert hist.summary_ms()["max_ms"] == 50.0


@pytest.mark.parametrize("value", [-1, MAX_VALUE + 1])
def test_values_outside_the_range_are_refused(value: int) -> None:
    with pytest.raises(TrackingLimitExceeded):
        Histogram().record(value)


def test_rank_uses_nearest_rank_without_float_noise() -> None:
    assert rank(99.9, 1000) == 999
    assert rank(50, 1) == 1
    assert rank(0, 10) == 1
    assert rank(100, 10) == 10
    assert rank(99, 1000) == math.ceil(990)
    with pytest.raises(ValueError, match="percentile"):
        rank(100.5, 10)
