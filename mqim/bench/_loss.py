"""Zero-loss bookkeeping: which numbered messages of a stream arrived, how often.

A publisher numbers its messages 1..N; each subscriber stream feeds the numbers it receives to a
`SequenceChecker`, which counts duplicates, and at the end reports which of 1..N never arrived.
The same checker also counts holes in a server-assigned sequence (mqim's per-conversation `seq`)
whose first value is not known in advance: numbers missing between the smallest and the largest
seen.
"""

from __future__ import annotations

from dataclasses import dataclass

from mqim.bench._exceptions import TrackingLimitExceeded

MAX_TRACKED_PER_STREAM = 2_000_000
"""Distinct numbers one checker remembers (about 100 MB); beyond it, recording is refused."""


@dataclass(frozen=True, kw_only=True)
class LossStats:
    """What arrived of the messages numbered 1..expected, summed over streams.

    Attributes:
        expected: Deliveries that should have happened (messages x streams).
        received: Deliveries that happened, duplicates included.
        distinct: Different expected messages delivered.
        missing: Expected deliveries that never happened.
        duplicates: Deliveries of a message already delivered on the same stream.
        out_of_range: Deliveries numbered outside 1..expected.
        holes: Numbers missing inside the seen range of a server-assigned sequence.
    """

    expected: int = 0
    received: int = 0
    distinct: int = 0
    missing: int = 0
    duplicates: int = 0
    out_of_range: int = 0
    holes: int = 0

    def __add__(self, other: LossStats) -> LossStats:
        return LossStats(
            expected=self.expected + other.expected,
            received=self.received + other.received,
            distinct=self.distinct + other.distinct,
            missing=self.missing + other.missing,
            duplicates=self.duplicates + other.duplicates,
            out_of_range=self.out_of_range + other.out_of_range,
            holes=self.holes + other.holes,
        )


class SequenceChecker:
    """The numbers seen on one stream; see the module docstring.

    Args:
        limit: Most distinct numbers remembered (`MAX_TRACKED_PER_STREAM` by default).
    """

    def __init__(self, *, limit: int = MAX_TRACKED_PER_STREAM) -> None:
        self._seen: set[int] = set()
        self._limit = limit
        self.received = 0
        self.duplicates = 0

    def record(self, number: int) -> bool:
        """Note one delivery of `number`; return False if it is a duplicate.

        Raises:
            TrackingLimitExceeded: When more than `limit` distinct numbers would be remembered.
        """
        self.received += 1
        if number in self._seen:
            self.duplicates += 1
            return False
        if len(self._seen) >= self._limit:
            raise TrackingLimitExceeded(f"more than {self._limit} distinct sequence numbers on one stream")
        self._seen.add(number)
        return True

    @property
    def distinct(self) -> int:
        """How many different numbers were seen."""
        return len(self._seen)

    def holes(self) -> int:
        """Numbers never seen between the smallest and the largest seen (0 when none seen)."""
        if not self._seen:
            return 0
        return max(self._seen) - min(self._seen) + 1 - len(self._seen)

    def stats(self, expected: int) -> LossStats:
        """Compare what was seen against the numbers 1..`expected`."""
        in_range = sum(1 for n in self._seen if 1 <= n <= expected)
        # Distinct numbers outside 1..expected; their repeats are already counted as duplicates.
        out_of_range = self.received - self.duplicates - in_range
        return LossStats(
            expected=expected,
            received=self.received,
            distinct=in_range,
            missing=expected - in_range,
            duplicates=self.duplicates,
            out_of_range=out_of_range,
            holes=0,
        )
