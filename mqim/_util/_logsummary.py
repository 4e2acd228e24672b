"""Bounded logging under abuse: the first occurrence is logged, repeats are counted and summarised.

An attacker who makes the server refuse or close thousands of connections a second must not be
able to fill the disk with one log line each. `LogSummary` (pure) decides, per (key, reason) —
a source address and a reason class, say — whether an event is logged now; repeats are counted
and drained by `summary()` at the end of each period. A key still active in the last period is
not logged again as "first": a steady attacker costs one summary line per period. At most
`max_keys` pairs are tracked per period; events beyond that are only counted (`overflow`).

`SummaryLog` is the thin shell: a `logging.Logger` plus a `LogSummary`, draining itself with a
loop timer (`call_later`, no task) `interval_s` after the first event of a period.

Exact totals are not this module's job: callers keep them in counters. `totals` here is the
number of events per reason class, bounded like the keys.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

LOG_SUMMARY_INTERVAL_S = 60.0
"""Default period of a summary."""
LOG_SUMMARY_MAX_KEYS = 1024
"""Default number of (key, reason) pairs tracked per period."""
LOG_SUMMARY_MAX_LINES = 20
"""Default most summary lines logged per period (the busiest pairs); the rest are totalled."""

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
# Hex first (protocol levels such as 0xd4 from a fuzzer), then decimal numbers.
_NUMBER = re.compile(r"(?<![\w.-])(?:0x[0-9a-fA-F]+|\d+(?:\.\d+)?)(?![\w.-])")
_MAX_REASON_CHARS = 120


def reason_class(reason: str) -> str:
    """`reason` without what varies between occurrences: quoted values and bare (hex) numbers.

    "bad credentials for user 'x1'" and "... 'x2'" are one class, so an attacker cycling user
    names still gets one line per period. Rule ids such as `MQTT-3.1.0-1` are kept.
    """
    text = _NUMBER.sub("N", _QUOTED.sub("…", reason))
    return text[:_MAX_REASON_CHARS]


def host_of(peer: str) -> str:
    """The host of a "host:port" peer (IPv6 hosts keep their colons)."""
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer


@dataclass(frozen=True, slots=True, kw_only=True)
class SummaryLine:
    """Repeats of one (key, reason) pair within a period."""

    key: str
    reason: str
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """One drained period: the busiest pairs first, and what did not fit."""

    lines: tuple[SummaryLine, ...]
    omitted_pairs: int
    omitted_events: int
    overflow: int

    def __bool__(self) -> bool:
        return bool(self.lines or self.omitted_events or self.overflow)


class LogSummary:
    """Decides which events to log; counts the rest.

    Args:
        max_keys: The most (key, reason) pairs tracked per period (at least 1).
        max_lines: The most pairs a summary lists by name (at least 1).

    Raises:
        ValueError: On a limit below 1.
    """

    def __init__(
        self, *, max_keys: int = LOG_SUMMARY_MAX_KEYS, max_lines: int = LOG_SUMMARY_MAX_LINES
    ) -> None:
        if max_keys < 1 or max_lines < 1:
            raise ValueError("max_keys and max_lines must be >= 1")
        self.max_keys = max_keys
        self.max_lines = max_lines
        self._period: dict[tuple[str, str], int] = {}  # pair -> repeats not logged
        self._carried: set[tuple[str, str]] = set()  # pairs with repeats in the last period
        self._overflow = 0
        self.totals: dict[str, int] = {}
        self.total = 0

    def note(self, key: str, reason: str) -> bool:
        """Record one event; return True if it should be logged now (its pair's first)."""
        self.total += 1
        totals = self.totals
        if reason in totals or len(totals) < self.max_keys:
            totals[reason] = totals.get(reason, 0) + 1
        pair = (key, reason)
        period = self._period
        count = period.get(pair)
        if count is not None:
            period[pair] = count + 1
            return False
        if len(period) >= self.max_keys:
            self._overflow += 1
            return False
        if pair in self._carried:
            period[pair] = 1  # still going on: the summary tells, no new "first" line
            return False
        period[pair] = 0
        return True

    def summary(self) -> Summary:
        """Drain the period: the pairs with repeats, busiest first; start the next period."""
        repeated = sorted(
            ((count, pair) for pair, count in self._period.items() if count > 0),
            key=lambda item: (-item[0], item[1]),
        )
        shown = repeated[: self.max_lines]
        rest = repeated[self.max_lines :]
        result = Summary(
            lines=tuple(SummaryLine(key=k, reason=r, count=n) for n, (k, r) in shown),
            omitted_pairs=len(rest),
            omitted_events=sum(n for n, _ in rest),
            overflow=self._overflow,
        )
        self._carried = {pair for _, pair in repeated}
        self._period = {}
        self._overflow = 0
        return result


class SummaryLog:
    """A logger that logs first occurrences and summarises repeats every `interval_s`.

    Args:
        logger: Where lines go.
        what: Names the events in summary lines ("refused CONNECT", say).
        level: The level of first-occurrence and summary lines.
        interval_s: The period of a summary.
        max_keys: See `LogSummary`.
        max_lines: See `LogSummary`.
    """

    def __init__(
        self,
        *,
        logger: logging.Logger,
        what: str,
        level: int = logging.INFO,
        interval_s: float = LOG_SUMMARY_INTERVAL_S,
        max_keys: int = LOG_SUMMARY_MAX_KEYS,
        max_lines: int = LOG_SUMMARY_MAX_LINES,
    ) -> None:
        self.logger = logger
        self.what = what
        self.level = level
        self.interval_s = interval_s
        self.summary = LogSummary(max_keys=max_keys, max_lines=max_lines)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def note(self, key: str, reason: str, message: str, *args: object) -> bool:
        """Log `message % args` if (key, reason class of `reason`) is new; else count it.

        Returns whether the line was logged.
        """
        logged = self.summary.note(key, reason_class(reason))
        if logged:
            self.logger.log(self.level, message, *args)
        self._schedule()
        return logged

    def flush(self) -> None:
        """Log the summary of the period now and start the next one."""
        self._timer = None
        drained = self.summary.summary()
        if not drained:
            return
        log, level, what = self.logger, self.level, self.what
        for line in drained.lines:
            log.log(
                level,
                "%s from %s: %s, %d more in %.0fs",
                what,
                line.key,
                line.reason,
                line.count,
                self.interval_s,
            )
        if drained.omitted_pairs:
            log.log(
                level,
                "%s: %d more from %d other source/reason pairs in %.0fs",
                what,
                drained.omitted_events,
                drained.omitted_pairs,
                self.interval_s,
            )
        if drained.overflow:
            log.log(
                level, "%s: %d more from untracked sources in %.0fs", what, drained.overflow, self.interval_s
            )

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous caller): the next call on a loop schedules
        # A timer of a loop that has gone (tests run one loop each) never fires: replace it.
        if self._timer is not None and self._timer_loop is loop and not loop.is_closed():
            return
        self._timer_loop = loop
        self._timer = loop.call_later(self.interval_s, self.flush)
