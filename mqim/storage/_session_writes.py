"""Queued session-store operations shared by the SQLite and Redis session stores.

The broker calls the `SessionStore` write methods synchronously on its hot path; both backends
turn each call into one of these operation records, buffer it, and commit buffers in batches.
`QueuedWrites` implements the five write methods once over a backend's `_push_write`.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from mqim.storage._records import QueuedMessage, RetainedRecord, StoredSession


@dataclass(slots=True)
class SaveOp:
    """`save_session`."""

    client_id: str
    user: str | None
    subscriptions: dict[str, int]
    disconnected_ts: int | None


@dataclass(slots=True)
class DeleteOp:
    """`delete_session`."""

    client_id: str


@dataclass(slots=True)
class EnqueueOp:
    """`enqueue`."""

    client_id: str
    qid: int
    topic: str
    payload: bytes
    qos: int


@dataclass(slots=True)
class DequeueOp:
    """`dequeue`."""

    client_id: str
    qids: tuple[int, ...]


@dataclass(slots=True)
class RetainOp:
    """`set_retained`; an empty payload clears the topic."""

    topic: str
    payload: bytes
    qos: int


WriteOp = SaveOp | DeleteOp | EnqueueOp | DequeueOp | RetainOp


@dataclass(slots=True)
class Barrier:
    """`flush()`: resolved once everything queued before it is durable."""

    future: asyncio.Future[None]


@dataclass(slots=True)
class Load:
    """`load()`: reads at its place in the order, resolved after the writes before it."""

    future: asyncio.Future[tuple[list[StoredSession], list[RetainedRecord]]]


class Stop:
    """`close()`: the writer ends after the operations before it."""


Op = WriteOp | Barrier | Load | Stop
"""Everything a session store's writer takes from its queue, in order."""


def coalesce(ops: Sequence[WriteOp]) -> list[WriteOp]:
    """Drop writes that later writes of the same list make pointless.

    An enqueue is dropped when a later enqueue of the same (client_id, qid) replaces it, or a
    later dequeue or session delete removes it. The dequeue/delete itself is kept, since the entry
    may also have been stored by an earlier batch. Order of the remaining writes is preserved.
    """
    out: list[WriteOp | None] = []
    pending: dict[str, dict[int, int]] = {}  # client_id -> qid -> index in `out`
    for op in ops:
        if isinstance(op, EnqueueOp):
            per_client = pending.setdefault(op.client_id, {})
            previous = per_client.get(op.qid)
            if previous is not None:
                out[previous] = None
            per_client[op.qid] = len(out)
        elif isinstance(op, DequeueOp):
            per_client = pending.get(op.client_id, {})
            for qid in op.qids:
                index = per_client.pop(qid, None)
                if index is not None:
                    out[index] = None
        elif isinstance(op, DeleteOp):
            for index in pending.pop(op.client_id, {}).values():
                out[index] = None
        out.append(op)
    return [op for op in out if op is not None]


class QueuedWrites(abc.ABC):
    """The `SessionStore` write methods, each turned into one buffered operation."""

    @abc.abstractmethod
    def _push_write(self, op: WriteOp) -> None:
        """Buffer one operation (raises `Unavailable` when the store cannot take it)."""

    def save_session(
        self, client_id: str, *, user: str | None, subscriptions: dict[str, int], disconnected_ts: int | None
    ) -> None:
        """Create or replace a session's metadata (queued write)."""
        self._push_write(SaveOp(client_id, user, dict(subscriptions), disconnected_ts))

    def delete_session(self, client_id: str) -> None:
        """Forget a session and its queue (queued write)."""
        self._push_write(DeleteOp(client_id))

    def enqueue(self, client_id: str, message: QueuedMessage) -> None:
        """Append to a session's queue (queued write)."""
        payload = message.payload if type(message.payload) is bytes else bytes(message.payload)
        self._push_write(EnqueueOp(client_id, message.qid, message.topic, payload, message.qos))

    def dequeue(self, client_id: str, qids: Sequence[int]) -> None:
        """Remove acknowledged or dropped entries (queued write)."""
        if qids:
            self._push_write(DequeueOp(client_id, tuple(qids)))

    def set_retained(self, record: RetainedRecord) -> None:
        """Store a retained message; an empty payload clears the topic (queued write)."""
        payload = record.payload if type(record.payload) is bytes else bytes(record.payload)
        self._push_write(RetainOp(record.topic, payload, record.qos))
