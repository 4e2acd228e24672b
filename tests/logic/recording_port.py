"""A test double of the broker's in-process port (the broker is not part of mqim.logic).

It records `publish_local` calls and holds the attached listener so a test can play the
broker's routing of uplink publishes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from mqim.logic import Receipt


class RecordedReceipt:
    """A receipt as the broker would hand out: records whether it was settled or failed."""

    def __init__(self) -> None:
        self.settled = 0
        self.failed = 0

    def settle(self) -> None:
        self.settled += 1

    def fail(self) -> None:
        self.failed += 1


class RecordingPort:
    """A `BrokerPort` that records publishes and lets the test route uplinks."""

    def __init__(self) -> None:
        self.filter: str | None = None
        self.callback: Callable[[str, bytes], None] | None = None
        self.published: list[tuple[str, bytes, int, bool]] = []
        self.receipts: list[RecordedReceipt] = []
        self.consumer: Callable[[str, bytes, Receipt | None], None] | None = None
        self.refuse_publishes = False
        self._changed = asyncio.Event()

    def attach_listener(
        self, topic_filter: str, callback: Callable[[str, bytes], None]
    ) -> Callable[[], None]:
        self.filter, self.callback = topic_filter, callback

        def detach() -> None:
            self.callback = None

        return detach

    def attach_consumer(
        self, topic_filter: str, callback: Callable[[str, bytes, Receipt | None], None]
    ) -> Callable[[], None]:
        self.filter, self.consumer = topic_filter, callback

        def detach() -> None:
            self.consumer = None

        return detach

    def publish_local(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> None:
        if self.refuse_publishes:
            raise RuntimeError("broker says no")
        self.published.append((topic, payload, qos, retain))
        self._changed.set()

    def route(self, topic: str, payload: bytes, *, qos: int = 1) -> RecordedReceipt | None:
        """Deliver an uplink publish as the broker would (synchronously); returns its receipt.

        A consumer gets a receipt for QoS 1/2 (the sender's PUBACK would wait for it).
        """
        if self.consumer is not None:
            receipt = RecordedReceipt() if qos else None
            if receipt is not None:
                self.receipts.append(receipt)
            self.consumer(topic, payload, receipt)
            return receipt
        assert self.callback is not None, "no listener attached"
        self.callback(topic, payload)
        return None

    def send(self, user: str, payload: dict[str, Any] | bytes, *, kind: str = "msg") -> None:
        """Route `payload` (JSON-encoded if a dict) as published by `user` on `up/{user}/{kind}`."""
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.route(f"im/v1/up/{user}/{kind}", raw)

    async def wait_for(self, count: int) -> None:
        """Wait until at least `count` messages were published (bounded, for a stuck test)."""
        async with asyncio.timeout(10):
            while len(self.published) < count:
                self._changed.clear()
                await self._changed.wait()

    def on(self, topic: str) -> list[dict[str, Any]]:
        """Decoded payloads published on `topic`, in order."""
        return [json.loads(payload) for t, payload, _, _ in self.published if t == topic]

    def topics(self) -> list[str]:
        return [t for t, _, _, _ in self.published]
