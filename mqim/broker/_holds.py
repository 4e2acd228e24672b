"""Holds: a publisher's PUBACK that waits until every consumer of its message has taken it durably.

An uplink on `im/v1/up/...` is only "received" for its sender once the logic service has stored
it (docs/architecture.md, "The broker": PUBACK means durably accepted). The connection that read
the PUBLISH creates one `Hold` per QoS 1/2 publish and hands it to routing; every consumer that
takes responsibility for the message (an in-process consumer such as the embedded logic service
or an outbound bridge's outbox, or a logic worker's session that must acknowledge it after its
commit) calls `take()`, and later exactly one of `settle()` (durable: the acknowledgement may
go) or `fail()` (the consumer lost it: the publisher must send it again). The connection holds
the PUBACK, and the acknowledgements queued behind it (MQTT-4.6.0-2), until the hold resolves.

Pure and synchronous; the waiter is told on the event loop that settles the hold.
"""

from __future__ import annotations

import itertools
import time
from typing import Protocol

from mqim.stats import SAMPLE_EVERY

# One hold in SAMPLE_EVERY is timed from its first take to its settlement (a tick, not state).
_ticks = itertools.count(1)


class HoldWaiter(Protocol):
    """The connection waiting for its holds (implemented by `MqttConnection`)."""

    def hold_settled(self, hold: Hold) -> None:
        """Every consumer settled `hold`: the acknowledgements it held may leave."""
        ...

    def hold_failed(self, hold: Hold) -> None:
        """A consumer lost the message: the publisher must resend it (the PUBACK never goes)."""
        ...


class HoldCounter(Protocol):
    """Counts holds in force across a broker (the back-pressure bound)."""

    def hold_opened(self) -> None: ...

    def hold_closed(self) -> None: ...

    def hold_durable_ns(self, elapsed_ns: int) -> None:
        """A sampled hold settled `elapsed_ns` after it was first taken."""
        ...


class Hold:
    """One publish waiting for its consumers.

    Args:
        waiter: Told once when the hold resolves; None for publishes nobody waits for.
        counter: Told when the first consumer takes the hold and when it resolves.
    """

    __slots__ = ("_counter", "_failed", "_open", "_t0", "_waiter")

    def __init__(self, *, waiter: HoldWaiter | None, counter: HoldCounter | None = None) -> None:
        self._waiter = waiter
        self._counter = counter
        self._open = 0
        self._failed = False
        self._t0 = 0

    @property
    def taken(self) -> bool:
        """Whether some consumer still has to settle (or fail) this hold."""
        return self._open > 0

    @property
    def failed(self) -> bool:
        """Whether a consumer failed the hold."""
        return self._failed

    def take(self) -> Hold:
        """A consumer takes responsibility for the message; returns `self` for convenience."""
        if self._open == 0 and self._counter is not None:
            self._counter.hold_opened()
            if next(_ticks) % SAMPLE_EVERY == 0:
                self._t0 = time.monotonic_ns()
        self._open += 1
        return self

    def settle(self) -> None:
        """One consumer has the message durably. Extra calls after resolution are ignored."""
        if self._open <= 0:
            return
        self._open -= 1
        if self._open == 0:
            self._resolve()

    def fail(self) -> None:
        """One consumer lost the message before making it durable."""
        if self._open <= 0:
            return
        self._failed = True
        self._open = 0
        self._resolve()

    def _resolve(self) -> None:
        if self._counter is not None:
            self._counter.hold_closed()
            if self._t0 and not self._failed:
                self._counter.hold_durable_ns(time.monotonic_ns() - self._t0)
        waiter, self._waiter = self._waiter, None
        if waiter is None:
            return
        if self._failed:
            waiter.hold_failed(self)
        else:
            waiter.hold_settled(self)
