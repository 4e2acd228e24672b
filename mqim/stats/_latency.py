"""A fixed-bucket latency histogram fed by sampled `time.monotonic_ns()` differences."""

from __future__ import annotations

from bisect import bisect_left

DEFAULT_BOUNDS_S: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds of the buckets, in seconds (Prometheus `le`); one more bucket holds the rest."""

SAMPLE_EVERY = 64
"""One event in this many is timed: the clock reads stay off the common path."""


class LatencyHistogram:
    """Counts of observed latencies per bucket, their sum and count (not thread-safe: one loop).

    Args:
        bounds_s: Increasing bucket upper bounds, in seconds.
        sample_every: `sample()` says yes once in this many calls (a power of two).
    """

    __slots__ = ("_bounds_ns", "_mask", "_tick", "bounds_s", "count", "counts", "sum_ns")

    def __init__(
        self, *, bounds_s: tuple[float, ...] = DEFAULT_BOUNDS_S, sample_every: int = SAMPLE_EVERY
    ) -> None:
        if sample_every < 1 or sample_every & (sample_every - 1):
            raise ValueError(f"sample_every must be a power of two, got {sample_every}")
        if list(bounds_s) != sorted(set(bounds_s)):
            raise ValueError("bucket bounds must be strictly increasing")
        self.bounds_s = bounds_s
        self._bounds_ns = [int(b * 1e9) for b in bounds_s]
        self.counts = [0] * (len(bounds_s) + 1)
        self.count = 0
        self.sum_ns = 0
        self._mask = sample_every - 1
        self._tick = 0

    def sample(self) -> bool:
        """Whether the caller should time this event (true once in `sample_every` calls)."""
        self._tick += 1
        return self._tick & self._mask == 0

    def observe_ns(self, elapsed_ns: int) -> None:
        """Record one latency, in nanoseconds (negative values count as 0)."""
        elapsed = max(elapsed_ns, 0)
        self.counts[bisect_left(self._bounds_ns, elapsed)] += 1
        self.count += 1
        self.sum_ns += elapsed

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound in seconds, count at or below it) per bucket, `inf` last."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip((*self.bounds_s, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out
