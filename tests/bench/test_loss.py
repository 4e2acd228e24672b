"""The loss and duplicate checker against a Counter reference."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqim.bench import LossStats, SequenceChecker, TrackingLimitExceeded


def test_in_order_delivery_has_no_loss() -> None:
    checker = SequenceChecker()
    assert all(checker.record(n) for n in range(1, 101))
    assert checker.stats(100) == LossStats(expected=100, received=100, distinct=100)
    assert checker.holes() == 0


def test_missing_duplicates_and_out_of_range_are_counted() -> None:
    checker = SequenceChecker()
    for n in (1, 2, 2, 4, 7, 7, 7, 12):
        checker.record(n)
    stats = checker.stats(10)
    assert stats.missing == 6  # 3, 5, 6, 8, 9, 10
    assert stats.duplicates == 3  # one extra 2, two extra 7s
    assert stats.out_of_range == 1  # 12
    assert stats.distinct == 4
    assert stats.received == 8
    assert checker.holes() == 12 - 1 + 1 - 5


def test_holes_of_a_sequence_that_does_not_start_at_one() -> None:
    checker = SequenceChecker()
    for seq in (501, 502, 504, 503, 507):
        checker.record(seq)
    assert checker.holes() == 2  # 505, 506
    assert SequenceChecker().holes() == 0


def test_nothing_received_means_everything_missing() -> None:
    assert SequenceChecker().stats(5) == LossStats(expected=5, missing=5)


@given(
    st.lists(st.integers(min_value=-3, max_value=60), max_size=200), st.integers(min_value=0, max_value=50)
)
def test_stats_match_a_counter(numbers: list[int], expected: int) -> None:
    checker = SequenceChecker()
    firsts = [checker.record(n) for n in numbers]
    counts = Counter(numbers)
    in_range = {n for n in counts if 1 <= n <= expected}
    stats = checker.stats(expected)
    assert stats.received == len(numbers)
    assert stats.duplicates == sum(c - 1 for c in counts.values())
    assert stats.distinct == len(in_range)
    assert stats.missing == expected - len(in_range)
    assert stats.out_of_range == len(set(counts) - in_range)
    assert firsts.count(True) == len(counts)
    if counts:
        assert checker.holes() == max(counts) - min(counts) + 1 - len(counts)


def test_stats_add_up_across_streams() -> None:
    a = SequenceChecker()
    b = SequenceChecker()
    for n in (1, 2, 2):
        a.record(n)
    b.record(3)
    total = a.stats(3) + b.stats(3)
    assert total == LossStats(expected=6, received=4, distinct=3, missing=3, duplicates=1, out_of_range=0)


def test_the_tracking_limit_is_enforced() -> None:
    checker = SequenceChecker(limit=3)
    for n in (1, 2, 3, 3):
        checker.record(n)
    with pytest.raises(TrackingLimitExceeded):
        checker.record(4)
