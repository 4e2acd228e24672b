"""Wall-clock time as storage records it: milliseconds since the epoch."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Return the wall-clock time in milliseconds since the epoch."""
    return int(time.time() * 1000)
