"""The in-process broker as its in-process clients see it: the logic service and the bridges.

`MqimBroker` implements `BrokerPort` (structurally: the broker imports nothing from here), and
`logic` and `bridge` depend only on this contract, never on `mqim.broker` or amqtt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Receipt(Protocol):
    """The broker's hold on one publish (`mqim/broker/_holds.py`'s `Hold`), as a consumer uses it.

    The publisher's PUBACK waits until the hold is settled. A consumer given a receipt calls
    exactly one of the two, once: `settle()` when it has the message durably (stored, or
    recognised as a duplicate: the PUBACK may go), `fail()` when it cannot take it (the
    publisher keeps the message and sends it again).
    """

    def settle(self) -> None: ...

    def fail(self) -> None: ...


ConsumerCallback = Callable[[str, bytes, Receipt | None], None]
"""`callback(topic, payload, receipt)`, called by the broker for each publish a consumer takes."""


class BrokerPort(Protocol):
    """What the in-process broker offers its in-process clients (`MqimBroker` implements it).

    All methods are synchronous: the broker routes in-process without awaiting, and calls the
    callbacks inside its routing.
    """

    def attach_consumer(self, topic_filter: str, callback: ConsumerCallback) -> Callable[[], None]:
        """Like `attach_listener`, but the consumer takes responsibility for each publish.

        When `callback` gets a `Receipt` (a QoS 1/2 publish from a client) the broker has taken
        it for this consumer, and the publisher's PUBACK waits until the consumer calls exactly
        one of `receipt.settle()` or `receipt.fail()`. It is None for QoS 0 and for messages the
        server publishes itself. Returns a function that detaches the consumer.
        """
        ...

    def attach_listener(
        self, topic_filter: str, callback: Callable[[str, bytes], None]
    ) -> Callable[[], None]:
        """Call `callback(topic, payload)` for every publish matching `topic_filter`.

        Returns a function that detaches the listener.
        """
        ...

    def publish_local(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> None:
        """Route a message as the broker itself (no ACL: its in-process clients are trusted)."""
        ...
