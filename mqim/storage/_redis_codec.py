"""Keys, values and commands of `RedisSessionStore` (pure functions, no I/O).

Layout under a prefix (default ``mqim``)::

    {prefix}:sessions       hash  client_id -> JSON {"user", "subs", "dts"}
    {prefix}:q:{client_id}  hash  qid (decimal) -> queued message (binary, see `encode_queued`)
    {prefix}:retained       hash  topic -> retained message (binary, see `encode_retained`)
    {prefix}:seen:{client_id} list  cluster message ids the session queued, newest last (capped)

A batch of writes becomes a list of commands that `RedisSessionStore` runs as one atomic batch
(`mqim/storage/_redis_guard.py`).
Every command sets or deletes whole values, so running the same batch twice (a retry after a
connection dropped before the reply) leaves the same state as running it once.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from mqim.storage._exceptions import StorageError
from mqim.storage._records import QueuedMessage, RetainedRecord
from mqim.storage._session_writes import DeleteOp, DequeueOp, EnqueueOp, RetainOp, SaveOp, WriteOp

# Format byte first, so the encoding can change without ambiguity.
_QUEUED_V1: Final = 1
_RETAINED_V1: Final = 1
_QUEUED_HEAD = struct.Struct(">BBH")  # version, qos, topic length
_RETAINED_HEAD = struct.Struct(">BB")  # version, qos

Command = tuple[str | bytes | int, ...]

MAX_COMMAND_ARGS: Final = 4096
"""Most arguments of one encoded command: consecutive enqueues merge into one HSET up to this
(a batch runs as a Lua script, `mqim/storage/_redis_guard.py`, whose unpack is bounded by 8000)."""


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix."""

    prefix: str

    @property
    def sessions(self) -> str:
        """The hash of session metadata."""
        return f"{self.prefix}:sessions"

    @property
    def retained(self) -> str:
        """The hash of retained messages."""
        return f"{self.prefix}:retained"

    def queue(self, client_id: str) -> str:
        """The hash holding one client's queue."""
        return f"{self.prefix}:q:{client_id}"

    def seen(self, client_id: str) -> str:
        """The list of cluster message ids one client's session queued (cluster dedupe)."""
        return f"{self.prefix}:seen:{client_id}"


SEEN_KEPT: Final = 4096
"""Message ids kept per session: far more than one node reads from a stream per batch."""


@dataclass(slots=True)
class SeenOp:
    """`RedisSessionStore.record_seen`: a session queued the cluster message `mid`.

    Not an `EnqueueOp`, so `coalesce` never drops it: an entry enqueued and acknowledged within
    one batch is still known as received.
    """

    client_id: str
    mid: str


StoreOp = WriteOp | SeenOp


def _qos(qos: object) -> int:
    if not isinstance(qos, int) or isinstance(qos, bool) or not 0 <= qos <= 2:
        raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
    return qos


def encode_queued(topic: str, payload: bytes, qos: int) -> bytes:
    """A queued message as bytes: version, qos, topic length, topic (UTF-8), payload."""
    raw_topic = topic.encode("utf-8")
    if len(raw_topic) > 0xFFFF:
        raise ValueError("topic longer than 65535 bytes")
    return _QUEUED_HEAD.pack(_QUEUED_V1, _qos(qos), len(raw_topic)) + raw_topic + bytes(payload)


def decode_queued(qid: bytes, value: bytes) -> QueuedMessage:
    """The inverse of `encode_queued`."""
    try:
        version, qos, length = _QUEUED_HEAD.unpack_from(value)
        if version != _QUEUED_V1:
            raise ValueError(f"unknown format {version}")
        start = _QUEUED_HEAD.size
        topic = value[start : start + length].decode("utf-8")
        return QueuedMessage(qid=int(qid), topic=topic, payload=bytes(value[start + length :]), qos=qos)
    except (struct.error, ValueError) as exc:
        raise StorageError(f"corrupt queued message {qid!r}: {exc}") from exc


def encode_retained(payload: bytes, qos: int) -> bytes:
    """A retained message as bytes: version, qos, payload."""
    return _RETAINED_HEAD.pack(_RETAINED_V1, _qos(qos)) + bytes(payload)


def decode_retained(topic: bytes, value: bytes) -> RetainedRecord:
    """The inverse of `encode_retained`."""
    try:
        version, qos = _RETAINED_HEAD.unpack_from(value)
        if version != _RETAINED_V1:
            raise ValueError(f"unknown format {version}")
        return RetainedRecord(
            topic=topic.decode("utf-8"), payload=bytes(value[_RETAINED_HEAD.size :]), qos=qos
        )
    except (struct.error, ValueError) as exc:
        raise StorageError(f"corrupt retained message {topic!r}: {exc}") from exc


def encode_session(user: str | None, subscriptions: dict[str, int], disconnected_ts: int | None) -> bytes:
    """Session metadata as JSON."""
    subs = {str(f): _qos(q) for f, q in subscriptions.items()}
    if disconnected_ts is not None and not isinstance(disconnected_ts, int):
        raise ValueError(f"disconnected_ts must be an int or None, not {disconnected_ts!r}")
    if user is not None and not isinstance(user, str):
        raise ValueError(f"user must be a str or None, not {user!r}")
    doc = {"user": user, "subs": subs, "dts": disconnected_ts}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_session(client_id: bytes, value: bytes) -> tuple[str, str | None, dict[str, int], int | None]:
    """(client_id, user, subscriptions, disconnected_ts) from `encode_session` output."""
    try:
        doc = json.loads(value)
        user = doc["user"]
        dts = doc["dts"]
        subs = {str(f): int(q) for f, q in doc["subs"].items()}
        return (
            client_id.decode("utf-8"),
            None if user is None else str(user),
            subs,
            None if dts is None else int(dts),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StorageError(f"corrupt session {client_id!r}: {exc}") from exc


@dataclass(slots=True)
class Encoded:
    """A batch as commands; `owners[i]` is the op that produced `commands[i]`."""

    commands: list[Command]
    owners: list[StoreOp]
    failed: list[tuple[StoreOp, Exception]]


def _op_commands(keys: Keys, op: StoreOp) -> list[Command]:
    if isinstance(op, SeenOp):
        key = keys.seen(op.client_id)
        return [("RPUSH", key, op.mid), ("LTRIM", key, -SEEN_KEPT, -1)]
    if isinstance(op, SaveOp):
        value = encode_session(op.user, op.subscriptions, op.disconnected_ts)
        return [("HSET", keys.sessions, op.client_id, value)]
    if isinstance(op, DeleteOp):
        return [
            ("HDEL", keys.sessions, op.client_id),
            ("DEL", keys.queue(op.client_id), keys.seen(op.client_id)),
        ]
    if isinstance(op, EnqueueOp):
        return [("HSET", keys.queue(op.client_id), op.qid, encode_queued(op.topic, op.payload, op.qos))]
    if isinstance(op, DequeueOp):
        step = MAX_COMMAND_ARGS - 2
        key = keys.queue(op.client_id)
        return [("HDEL", key, *op.qids[i : i + step]) for i in range(0, len(op.qids), step)]
    if isinstance(op, RetainOp):
        if op.payload:
            return [("HSET", keys.retained, op.topic, encode_retained(op.payload, op.qos))]
        return [("HDEL", keys.retained, op.topic)]
    raise TypeError(f"not a write: {op!r}")  # pragma: no cover


def encode_batch(keys: Keys, ops: Sequence[StoreOp]) -> Encoded:
    """The commands for `ops` (already coalesced), in order.

    A write that cannot be encoded (a bad value) is left out and listed in `failed`: it loses
    only itself. Consecutive enqueues of one client become one HSET.
    """
    out = Encoded(commands=[], owners=[], failed=[])
    for op in ops:
        try:
            commands = _op_commands(keys, op)
        except (ValueError, TypeError, UnicodeError, struct.error) as exc:
            out.failed.append((op, exc))
            continue
        for command in commands:
            previous = out.commands[-1] if out.commands else None
            if (
                isinstance(op, EnqueueOp)
                and previous is not None
                and previous[0] == "HSET"
                and previous[1] == command[1]
                and isinstance(out.owners[-1], EnqueueOp)
                and len(previous) + len(command) - 2 <= MAX_COMMAND_ARGS
            ):
                out.commands[-1] = previous + command[2:]
                continue
            out.commands.append(command)
            out.owners.append(op)
    return out
