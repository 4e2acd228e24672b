"""Reconnect back-off: a pure function, so the schedule is testable without a network."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: float = 0.2,
    rand: Callable[[], float] = random.random,
) -> float:
    """Return the delay before reconnect attempt number `attempt` (1 for the first).

    The delay doubles with each attempt from `base` up to `cap`; a random fraction of up to
    `jitter` of it is taken off so that many clients dropped together do not return together.

    Args:
        attempt: 1-based attempt number.
        base: Delay before the first attempt, in seconds.
        cap: Largest delay, in seconds.
        jitter: Fraction in [0, 1] of the delay that may be taken off at random.
        rand: Source of uniform numbers in [0, 1).
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be in [0, 1], got {jitter}")
    # Cap the exponent before computing the power so huge attempt counts cannot overflow.
    exponent = min(attempt - 1, 62)
    delay = min(cap, base * (2.0**exponent))
    return delay * (1.0 - jitter * rand())
