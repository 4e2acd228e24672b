"""A log-linear (HDR-style) histogram of non-negative integers, mergeable across processes.

Values below ``2 * SUB_BUCKETS`` get a bucket each (exact). Above that, every power-of-two range
``[2**k, 2**(k+1))`` is cut into ``SUB_BUCKETS`` equal buckets, so a bucket is at most
``1/SUB_BUCKETS`` (0.78 %) of its values wide. A percentile is reported as the midpoint of the
bucket holding the ranked value (clamped into the recorded min/max), hence within
``1/(2 * SUB_BUCKETS)`` (0.39 %) of the exact answer. Memory is one dict entry per non-empty bucket:
at most ``SUB_BUCKETS`` per power of two, about 4,600 for the whole range.

Percentiles use the nearest-rank definition: the p-th percentile of N values is the value of
rank ``max(1, ceil(p/100 * N))`` in ascending order (see `rank`).

The buckets are HdrHistogram's with two significant digits (`bucket_index` is its counts index).
The `hdrhistogram` package is not used: its percentile rounds the rank (p25 of five values is
the first) and reports a bucket's highest value (up to 0.78 % high, the maximum too), its mean
comes from bucket midpoints, and its `record_value` costs about twice this `record` in a load
generator's receive path; what would remain of it is the counts array.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from mqim.bench._exceptions import TrackingLimitExceeded

SUB_BITS = 7
SUB_BUCKETS = 1 << SUB_BITS
"""Linear buckets per power of two; sets the precision (1/128 of the value)."""

MAX_VALUE = (1 << 48) - 1
"""Largest value accepted: about 78 hours in nanoseconds. Larger values are refused."""

_EXACT_LIMIT = 2 * SUB_BUCKETS


def bucket_index(value: int) -> int:
    """Return the bucket of `value` (0 <= value <= MAX_VALUE)."""
    shift = max(0, value.bit_length() - (SUB_BITS + 1))
    return (shift << SUB_BITS) + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """Return the lowest and highest value (inclusive) that fall into bucket `index`."""
    if index < _EXACT_LIMIT:
        return index, index
    shift = (index >> SUB_BITS) - 1
    low = (index - (shift << SUB_BITS)) << shift
    return low, low + (1 << shift) - 1


def rank(percentile: float, count: int) -> int:
    """Return the 1-based nearest rank of `percentile` (0..100) among `count` values."""
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {percentile}")
    # Rounded first so that e.g. 99.9 % of 1000 is rank 999, not 1000 through float noise.
    return max(1, math.ceil(round(percentile * count / 100.0, 9)))


@dataclass(frozen=True, kw_only=True)
class HistogramSnapshot:
    """A histogram as plain data, to send between processes (JSON) and merge.

    Attributes:
        buckets: `(bucket index, count)` pairs of the non-empty buckets, ascending.
        count: Number of recorded values.
        min: Smallest recorded value (0 when empty).
        max: Largest recorded value (0 when empty).
        total: Sum of the recorded values.
    """

    buckets: tuple[tuple[int, int], ...] = ()
    count: int = 0
    min: int = 0
    max: int = 0
    total: int = 0


class Histogram:
    """Counts of integer values in log-linear buckets; see the module docstring."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self.count = 0
        self.min = 0
        self.max = 0
        self.total = 0

    def record(self, value: int, times: int = 1) -> None:
        """Add `value` to the histogram `times` times.

        Raises:
            TrackingLimitExceeded: When `value` is negative or above `MAX_VALUE`.
        """
        if value < 0 or value > MAX_VALUE:
            raise TrackingLimitExceeded(f"histogram value {value} outside 0..{MAX_VALUE}")
        if times <= 0:
            return
        index = bucket_index(value)
        self._counts[index] = self._counts.get(index, 0) + times
        if self.count == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.count += times
        self.total += value * times

    def merge(self, other: Histogram | HistogramSnapshot) -> None:
        """Add every value of `other` to this histogram."""
        snap = other.snapshot() if isinstance(other, Histogram) else other
        if snap.count == 0:
            return
        for index, n in snap.buckets:
            self._counts[index] = self._counts.get(index, 0) + n
        self.min = snap.min if self.count == 0 else min(self.min, snap.min)
        self.max = max(self.max, snap.max)
        self.count += snap.count
        self.total += snap.total

    def percentile(self, percentile: float) -> int:
        """Return the value at `percentile` (0..100), within 0.4 % (the min and max exactly); 0 when empty."""
        if self.count == 0:
            return 0
        wanted = rank(percentile, self.count)
        # The extremes are known exactly.
        if wanted == self.count:
            return self.max
        if wanted == 1:
            return self.min
        seen = 0
        for index in sorted(self._counts):
            seen += self._counts[index]
            if seen >= wanted:
                low, high = bucket_bounds(index)
                return min(max((low + high) // 2, self.min), self.max)
        return self.max  # unreachable: the counts add up to self.count

    def percentiles(self, wanted: Iterable[float]) -> dict[float, int]:
        """Return several percentiles at once."""
        return {p: self.percentile(p) for p in wanted}

    @property
    def mean(self) -> float:
        """Arithmetic mean of the recorded values (exact); 0.0 when empty."""
        return self.total / self.count if self.count else 0.0

    def snapshot(self) -> HistogramSnapshot:
        """Return the histogram as plain data."""
        return HistogramSnapshot(
            buckets=tuple(sorted(self._counts.items())),
            count=self.count,
            min=self.min,
            max=self.max,
            total=self.total,
        )

    @classmethod
    def from_snapshot(cls, snap: HistogramSnapshot) -> Histogram:
        """Rebuild a histogram from `snapshot()` output."""
        hist = cls()
        hist.merge(snap)
        return hist

    def summary_ms(self) -> dict[str, float | int]:
        """Return count, p50, p99, p99.9, max and mean, the values in milliseconds (ns / 1e6)."""
        return {
            "count": self.count,
            "p50_ms": self.percentile(50) / 1e6,
            "p99_ms": self.percentile(99) / 1e6,
            "p999_ms": self.percentile(99.9) / 1e6,
            "max_ms": self.max / 1e6,
            "mean_ms": self.mean / 1e6,
        }
