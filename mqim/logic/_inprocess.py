"""`InProcessBus`: the logic service inside the broker's process, no network hop."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from mqim._ports import BrokerPort, Receipt
from mqim._util import worth_logging
from mqim.logic._bus import Bus, Inbound, received_stamp
from mqim.logic._exceptions import BusClosed, BusUnavailable
from mqim.protocol import UP_FILTER

_log = logging.getLogger(__name__)

OverflowCallback = Callable[[str, bytes], None]
"""Called with `(topic, payload)` of a request a bus could not queue."""


class InProcessBus(Bus):
    """A `Bus` over a `BrokerPort`: the broker calls us synchronously, we publish synchronously.

    The bus attaches as a consumer: each QoS 1/2 uplink comes with the broker's `Receipt`, and
    its sender's PUBACK waits until the service settles it (after its commit). That makes the
    senders' in-flight windows the back-pressure: the broker stops reading from publishers while
    too many uplinks are unsettled, so this queue stays short under any load.

    Received messages wait in a queue bounded by `max_pending` (a safety bound above the
    broker's own). A message arriving when it is full is not queued: `overflowed` counts it; one
    with a receipt is failed (its sender keeps it and resends), one without (QoS 0, at most once)
    goes to `on_overflow(topic, payload)` if set. The broker must call the consumer on the event
    loop this bus was started on (it runs in the same loop).

    Args:
        port: The broker's in-process port.
        topic_filter: The uplink filter to listen to.
        max_pending: Most received messages waiting for `receive_batch`.
        on_overflow: Called with each message refused because the queue is full. Also settable
            later through the `on_overflow` attribute (the service is usually built after the bus).
    """

    def __init__(
        self,
        *,
        port: BrokerPort,
        topic_filter: str = UP_FILTER,
        max_pending: int = 100_000,
        on_overflow: OverflowCallback | None = None,
    ) -> None:
        if max_pending <= 0:
            raise ValueError(f"max_pending must be positive, got {max_pending}")
        self._port = port
        self._topic_filter = topic_filter
        self._max_pending = max_pending
        self.on_overflow = on_overflow
        self.overflowed = 0
        self._pending: deque[Inbound] = deque()
        self._ready = asyncio.Event()
        self._detach: Callable[[], None] | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Messages received and not yet taken by `receive_batch`."""
        return len(self._pending)

    async def start(self) -> None:
        """Attach the listener to the broker port."""
        if self._detach is not None:
            return
        self._closed = False
        try:
            self._detach = self._port.attach_consumer(self._topic_filter, self._on_message)
        except Exception as exc:
            raise BusUnavailable(f"cannot attach to the broker port: {exc}") from exc

    async def stop(self) -> None:
        """Detach from the port and wake any waiting `receive_batch` (which then raises `BusClosed`).

        Publishes are synchronous, so none is pending. Messages still queued are not processed;
        their number is logged (stop the broker's listeners and wait for `pending == 0` first
        for a lossless shutdown).
        """
        self._closed = True
        detach, self._detach = self._detach, None
        if detach is not None:
            detach()
        if self._pending:
            # Not acknowledged to their senders: they still hold them and send them again.
            _log.warning("in-process bus stopped with %d unprocessed requests", len(self._pending))
            self.fail(list(self._pending))
            self._pending.clear()
        self._ready.set()

    async def receive_batch(self, max_items: int) -> list[Inbound]:
        """Wait for at least one message and return up to `max_items`, in arrival order.

        Raises:
            BusClosed: If the bus is not started or is stopped while waiting.
        """
        if max_items <= 0:
            raise ValueError(f"max_items must be positive, got {max_items}")
        while not self._pending:
            if self._closed or self._detach is None:
                raise BusClosed("the in-process bus is not started")
            self._ready.clear()
            await self._ready.wait()
        count = min(max_items, len(self._pending))
        return [self._pending.popleft() for _ in range(count)]

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Route one message through the broker port (synchronous underneath).

        Raises:
            BusClosed: If the bus is not started.
            BusUnavailable: If the broker refused the message.
        """
        if self._detach is None:
            raise BusClosed("the in-process bus is not started")
        try:
            self._port.publish_local(topic, payload, qos=qos, retain=retain)
        except Exception as exc:
            # The port is the boundary to the broker: whatever it raises becomes our error.
            raise BusUnavailable(f"the broker refused a publish to {topic!r}: {exc}") from exc

    def _on_message(self, topic: str, payload: bytes, receipt: Receipt | None) -> None:
        if len(self._pending) >= self._max_pending:
            self.overflowed += 1
            if worth_logging(self.overflowed):
                _log.warning("in-process bus full: %d requests refused so far", self.overflowed)
            if receipt is not None:
                receipt.fail()  # not acknowledged: the sender still has it and sends it again
                return
            if self.on_overflow is not None:
                try:
                    self.on_overflow(topic, payload)
                except Exception:
                    # We run inside the broker's routing: a failing callback must not break it.
                    _log.exception("on_overflow callback failed for %r", topic[:200])
            return
        self._pending.append(
            Inbound(topic=topic, payload=bytes(payload), receipt=receipt, received_ns=received_stamp())
        )
        self._ready.set()
