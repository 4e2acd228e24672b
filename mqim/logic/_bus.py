"""The logic service talks to the world through a `Bus`: receive uplink requests, publish replies.

Two implementations: `InProcessBus` over a `BrokerPort` (`mqim._ports`; the embedded server, no
network hop) and `MqttBus` over aiomqtt (a standalone `mqim logic` process).
"""

from __future__ import annotations

import abc
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import ClassVar, Self

from mqim._ports import Receipt
from mqim.logic._exceptions import BusClosed, BusError
from mqim.stats import SAMPLE_EVERY


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message received from the broker.

    `receipt` is how the bus acknowledges it to the broker (None when nobody waits, as for
    QoS 0); the service hands it back through `Bus.settle` or `Bus.fail`.
    """

    topic: str
    payload: bytes
    receipt: Receipt | None = field(default=None, compare=False)
    received_ns: int = field(default=0, compare=False)
    """`time.monotonic_ns()` when the bus got it, for a sampled few (`received_stamp`); else 0."""


_ticks = itertools.count(1)


def received_stamp() -> int:
    """`time.monotonic_ns()` once in `SAMPLE_EVERY` calls, else 0 (the delivery latency sample)."""
    return time.monotonic_ns() if next(_ticks) % SAMPLE_EVERY == 0 else 0


class Bus(abc.ABC):
    """Subscribe/publish transport of the logic service. Use as an async context manager."""

    pipelined: ClassVar[bool] = False
    """True when concurrent `publish` calls keep their call order on the wire and overlap their
    round trips (an MQTT client); the service then publishes a batch's replies concurrently."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect and subscribe to the uplink filter."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Disconnect; pending publishes are flushed first."""

    @abc.abstractmethod
    async def receive_batch(self, max_items: int) -> list[Inbound]:
        """Wait for at least one inbound message and return up to `max_items`, in arrival order."""

    def settle(self, items: Sequence[Inbound]) -> None:
        """Tell the broker these requests are durable: their senders' PUBACKs may go.

        Synchronous and cheap; items without a receipt are ignored.
        """
        for item in items:
            receipt = item.receipt
            if receipt is not None:
                receipt.settle()

    def fail(self, items: Sequence[Inbound]) -> None:
        """Tell the broker these requests can never be made durable: their senders resend."""
        for item in items:
            receipt = item.receipt
            if receipt is not None:
                receipt.fail()

    async def publish_many(self, messages: Sequence[tuple[str, bytes, int]]) -> list[BusError | None]:
        """Publish `(topic, payload, qos)` messages in order; one outcome per message.

        A bus that pipelines overrides this to put them all on the wire before waiting once.

        Raises:
            BusClosed: If the bus is not started or is stopping.
        """
        outcomes: list[BusError | None] = []
        for topic, payload, qos in messages:
            try:
                await self.publish(topic, payload, qos=qos)
            except BusClosed:
                raise
            except BusError as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return outcomes

    @abc.abstractmethod
    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish one message."""
