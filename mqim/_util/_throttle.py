"""Log throttling for events that repeat: log the 1st, 2nd, 4th, 8th... occurrence only."""

from __future__ import annotations


def worth_logging(count: int) -> bool:
    """Whether the `count`-th occurrence of a repeated event should be logged.

    True for the 1st, 2nd, 4th, 8th... (powers of two): a problem that keeps happening stays
    visible, with its count so far in each line, without flooding the log under load (a million
    occurrences make 20 lines).

    Args:
        count: How many times the event happened, this one included.
    """
    return count & (count - 1) == 0
