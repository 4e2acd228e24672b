"""Cheap in-process measurements shared by the broker and the logic service. Pure: no I/O.

The components keep these as plain attributes; `mqim.admin` reads them at scrape time, so the
hot path pays an integer increment (and, one time in `SAMPLE_EVERY`, a clock read).
"""

from mqim.stats._latency import DEFAULT_BOUNDS_S, SAMPLE_EVERY, LatencyHistogram

__all__ = [
    "DEFAULT_BOUNDS_S",
    "SAMPLE_EVERY",
    "LatencyHistogram",
]
