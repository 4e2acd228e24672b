"""Delivery receipts: a recipient's PUBACK of a message on its inbox tells the sender.

A `HubObserver`: `delivered(session, topic, payload)` is called when a session acknowledges a
QoS 1/2 delivery. For a message (`im/v1/u/{me}/msg` or `im/v1/g/{group}/msg`) that someone else
sent, the sender gets `{"v":1,"conv","seq","user","kind":"delivered"}` on
`im/v1/u/{sender}/receipt`:

- direct conversations: at once, once per (conversation, recipient, seq) however many devices
  of the recipient acknowledge it;
- groups: aggregated: at most one receipt per (conversation, seq) per `interval_s`, carrying
  `count`, the number of members known to have it so far (and the latest of them as `user`).

The recipient's delivered cursor moves forward too, written in batches every `interval_s`.

Bounds: the per-(conversation, user) high-water marks and the group counters are LRU tables of
`max_tracked` entries; an entry that left can cost at most a repeated receipt. Pending cursor
writes are bounded by the same number (beyond it they are counted in `cursors_dropped` and the
next acknowledgement moves the cursor instead).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from cachetools import LRUCache

from mqim.broker import Hub, Session, group_of
from mqim.protocol import PREFIX, InboxKind, Receipt, inbox_topic, is_valid_id
from mqim.storage import Storage, StorageError

log = logging.getLogger("mqim.broker.receipts")

_INBOX_PREFIX = f"{PREFIX}/u/"


@dataclass(slots=True)
class _GroupCount:
    sender: str
    count: int
    user: str
    dirty: bool


def read_message(payload: bytes) -> tuple[str, int, str] | None:
    """`(conv, seq, sender)` of a delivered message payload, or None. Pure."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    conv, seq, sender = body.get("conv"), body.get("seq"), body.get("from")
    if not isinstance(conv, str) or not isinstance(sender, str) or not isinstance(seq, int):
        return None
    return conv, seq, sender


class DeliveryReceipts:
    """Turns acknowledgements of inbox and group messages into receipts and delivered cursors.

    Run `run()` in a task owned by the server (it flushes every `interval_s`); `flush()` once
    more before closing storage to write the last cursors.

    Args:
        hub: The broker's hub (routing of the receipts).
        storage: Where delivered cursors are written; None: receipts only.
        interval_s: Group receipt period and cursor batch period, in seconds.
        max_tracked: Size of each bounded table (at least 1).

    Raises:
        ValueError: On a `max_tracked` below 1.
    """

    def __init__(
        self, *, hub: Hub, storage: Storage | None, interval_s: float = 1.0, max_tracked: int = 100_000
    ) -> None:
        if max_tracked < 1:
            raise ValueError(f"max_tracked must be >= 1, got {max_tracked}")
        self._hub = hub
        self._storage = storage
        self._interval_s = interval_s
        self._max = max_tracked
        # Bounded LRUs: when full, the least recently used entry leaves to make room.
        self._high: LRUCache[tuple[str, str], int] = LRUCache(maxsize=max_tracked)  # (conv, user) -> seq
        self._groups: LRUCache[tuple[str, int], _GroupCount] = LRUCache(maxsize=max_tracked)
        self._cursors: dict[tuple[str, str], int] = {}  # (user, conv) -> delivered seq
        self.receipts = 0
        self.cursors_dropped = 0

    # -- HubObserver ---------------------------------------------------------------------------
    def session_connected(self, session: Session) -> None:
        """Not used by receipts."""

    def session_disconnected(self, session: Session) -> None:
        """Not used by receipts."""

    def delivered(self, session: Session, topic: str, payload: bytes) -> None:
        """A session acknowledged `topic`/`payload`: receipt and cursor if it is a message."""
        if not topic.endswith("/msg"):
            return
        identity = session.identity
        if identity is None or identity.kind != "user":
            return
        user = identity.user
        group = group_of(topic)
        if group is None and topic != f"{_INBOX_PREFIX}{user}/msg":
            return
        message = read_message(payload)
        if message is None:
            return
        conv, seq, sender = message
        if sender == user or not is_valid_id(sender):
            return  # one's own messages (other devices, notes to self) need no receipt
        key = (conv, user)
        if self._high.get(key, 0) >= seq:
            return  # another device of this user had it already
        self._high[key] = seq
        self._note_cursor(user, conv, seq)
        if group is None:
            self._send(sender, Receipt(conv=conv, seq=seq, user=user, kind="delivered"))
            return
        counter = self._groups.get((conv, seq))
        if counter is None:
            counter = _GroupCount(sender=sender, count=0, user=user, dirty=True)
            self._groups[(conv, seq)] = counter
        counter.count += 1
        counter.user = user
        counter.dirty = True

    # -- flushing ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Flush every `interval_s` until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            await self.flush()

    def flush_receipts(self) -> int:
        """Publish one receipt per group message whose count changed; returns how many."""
        sent = 0
        for (conv, seq), counter in self._groups.items():
            if counter.dirty:
                counter.dirty = False
                receipt = Receipt(
                    conv=conv, seq=seq, user=counter.user, kind="delivered", count=counter.count
                )
                self._send(counter.sender, receipt)
                sent += 1
        return sent

    async def flush(self) -> None:
        """Publish pending group receipts and write the pending delivered cursors."""
        self.flush_receipts()
        if self._storage is None or not self._cursors:
            self._cursors.clear()
            return
        pending, self._cursors = self._cursors, {}
        outcomes = await asyncio.gather(
            *(
                self._storage.advance_cursor(user, conv, delivered_seq=seq)
                for (user, conv), seq in pending.items()
            ),
            return_exceptions=True,
        )
        failed = 0
        for outcome in outcomes:
            if isinstance(outcome, StorageError):
                failed += 1
            elif isinstance(outcome, BaseException):
                raise outcome
        if failed:
            # Delivered cursors are advisory (receipts already went out); the next ack moves them.
            log.warning("%d delivered cursors could not be written", failed)

    # -- internals -----------------------------------------------------------------------------
    def _note_cursor(self, user: str, conv: str, seq: int) -> None:
        key = (user, conv)
        if key not in self._cursors and len(self._cursors) >= self._max:
            # Cursors are advisory (the receipt goes out regardless); the next flush catches up
            # with later acknowledgements. Bounded, counted, never blocking the router.
            self.cursors_dropped += 1
            return
        self._cursors[key] = max(self._cursors.get(key, 0), seq)

    def _send(self, sender: str, receipt: Receipt) -> None:
        self._hub.publish_local(inbox_topic(sender, InboxKind.RECEIPT), receipt.to_json(), qos=1)
        self.receipts += 1
