"""What a session delivers: a queued QoS 1/2 entry (`Outgoing`), the result of one delivery
(`Delivery`), and the part of a connection a session writes to (`Writer`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from mqim.broker._holds import Hold


class Writer(Protocol):
    """The part of a connection a session writes to."""

    writable: bool

    def write(self, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """What `Session.deliver` did with one message.

    Attributes:
        refused: A service session's full queue did not take a message nobody holds (nothing
            was queued; the caller counts it).
        evicted: Entries that left the queue to respect its bounds (the caller tells the
            session to sync).
    """

    refused: bool = False
    evicted: int = 0


TAKEN: Final = Delivery()
"""Delivered, queued, or dropped as QoS 0 allows, with nothing evicted (the common result)."""
REFUSED_FULL: Final = Delivery(refused=True)
"""A full service-account queue refused a message nobody holds."""


class Outgoing:
    """A queued QoS 1/2 delivery."""

    __slots__ = ("hold", "payload", "pid", "qid", "qos", "released", "retain", "topic", "topic_enc")

    def __init__(
        self,
        *,
        qid: int,
        topic: str,
        topic_enc: bytes,
        payload: bytes,
        qos: int,
        retain: bool,
        hold: Hold | None = None,
    ) -> None:
        self.qid = qid
        self.topic = topic
        self.topic_enc = topic_enc
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.pid = 0  # 0: pending, not sent on this connection
        self.released = False  # QoS 2: PUBREC received, PUBREL sent, waiting for PUBCOMP
        # A logic worker's copy of an uplink: the sender's PUBACK waits for this session's
        # acknowledgement, which the worker sends after its commit (see _holds.py).
        self.hold = hold

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.topic_enc)
