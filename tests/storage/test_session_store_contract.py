"""The `SessionStore` contract, written once and run against every backend (SQLite and Redis).

Sessions with their subscriptions and queues (loaded in qid order), dequeue, delete, retained
messages, binary payloads, flush durability across a reopen, and use after close. What only one
backend has stays in its own file: `test_sqlite_sessions.py` (SIGKILL of a writer process, schema
version, write coalescing) and `test_redis_sessions.py` (server restart and outage, backlog limit,
WRONGTYPE, key prefixes, value encoding).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mqim.storage import (
    QueuedMessage,
    RedisSessionStore,
    RetainedRecord,
    SessionStore,
    SqliteSessionStore,
    StorageError,
    Unavailable,
)
from mqim.storage._redis_codec import Keys
from tests.support.servers import RedisServer

ALL_BYTES = bytes(range(256)) + b"\x00\x00\xff"


def q(qid: int, payload: bytes = b"p", topic: str = "im/v1/u/bob/msg", qos: int = 1) -> QueuedMessage:
    return QueuedMessage(qid=qid, topic=topic, payload=payload, qos=qos)


class Backend(abc.ABC):
    """Makes stores of one backend sharing the same data, and reads that data around them."""

    name: str

    @abc.abstractmethod
    def new(self, *, batch_max: int | None = None) -> SessionStore:
        """A new, not yet opened store over this backend's data."""

    @abc.abstractmethod
    async def stored_queue_len(self, client_id: str) -> int:
        """How many queue entries of `client_id` another reader (a new process, another broker
        node) sees in the backend right now, bypassing the store."""

    @contextlib.asynccontextmanager
    async def opened(self, *, batch_max: int | None = None) -> AsyncIterator[SessionStore]:
        """A new store, opened for the block and closed after it."""
        store = self.new(batch_max=batch_max)
        await store.open()
        try:
            yield store
        finally:
            await store.close()


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, *, path: Path) -> None:
        self.path = path

    def new(self, *, batch_max: int | None = None) -> SessionStore:
        if batch_max is None:
            return SqliteSessionStore(path=self.path)
        return SqliteSessionStore(path=self.path, batch_max=batch_max)

    async def stored_queue_len(self, client_id: str) -> int:
        def count() -> int:
            # A second connection, as a new process would open it.
            with contextlib.closing(sqlite3.connect(self.path)) as conn:
                row = conn.execute("SELECT count(*) FROM queue WHERE client_id = ?", (client_id,)).fetchone()
            return int(row[0])

        return await asyncio.to_thread(count)


class RedisBackend(Backend):
    name = "redis"

    def __init__(self, *, server: RedisServer, prefix: str, raw: aioredis.Redis) -> None:
        self.server = server
        self.prefix = prefix
        self.raw = raw

    def new(self, *, batch_max: int | None = None) -> SessionStore:
        if batch_max is None:
            return RedisSessionStore(url=self.server.url, prefix=self.prefix)
        return RedisSessionStore(url=self.server.url, prefix=self.prefix, batch_max=batch_max)

    async def stored_queue_len(self, client_id: str) -> int:
        # Redis deletes an empty hash, so 0 also means the queue key is gone.
        return int(await self.raw.hlen(Keys(self.prefix).queue(client_id)))


@pytest.fixture(params=["sqlite", "redis"])
async def session_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each backend in turn: SQLite in tmp_path, or a real redis-server (`redis_proc`)."""
    if request.param == "sqlite":
        yield SqliteBackend(path=tmp_path / "sessions.db")
        return
    server: RedisServer = request.getfixturevalue("redis_proc")
    raw = aioredis.Redis.from_url(server.url)
    try:
        yield RedisBackend(server=server, prefix=f"t{uuid.uuid4().hex[:8]}", raw=raw)
    finally:
        await raw.aclose()


async def test_save_and_load_sessions_with_queues(session_store: Backend) -> None:
    async with session_store.opened() as store:
        store.save_session("dev-b", user="bob", subscriptions={"im/v1/u/bob/#": 1}, disconnected_ts=None)
        store.save_session(
            "dev-a",
            user="alice",
            subscriptions={"im/v1/u/alice/#": 1, "im/v1/g/team/#": 0},
            disconnected_ts=42,
        )
        for qid in (3, 1, 2, 10):
            store.enqueue("dev-a", q(qid, payload=f"m{qid}".encode()))
        store.enqueue("dev-b", q(7))
        await store.flush()
    async with session_store.opened() as store:
        sessions, retained = await store.load()
    assert retained == []
    assert [s.client_id for s in sessions] == ["dev-a", "dev-b"]
    a, b = sessions
    assert a.user == "alice"
    assert a.subscriptions == {"im/v1/u/alice/#": 1, "im/v1/g/team/#": 0}
    assert a.disconnected_ts == 42
    # qid order, numerically (10 after 3).
    assert [(m.qid, m.payload) for m in a.queue] == [(1, b"m1"), (2, b"m2"), (3, b"m3"), (10, b"m10")]
    assert b.user == "bob"
    assert b.disconnected_ts is None
    assert b.queue == [q(7)]


async def test_save_replaces_metadata_and_keeps_queue(session_store: Backend) -> None:
    async with session_store.opened() as store:
        store.save_session("dev", user="alice", subscriptions={"a/#": 1}, disconnected_ts=None)
        store.enqueue("dev", q(1))
        await store.flush()
        store.save_session("dev", user="alice", subscriptions={"b/#": 0}, disconnected_ts=99)
        [session], _ = await store.load()
    assert session.subscriptions == {"b/#": 0}
    assert session.disconnected_ts == 99
    assert session.queue == [q(1)]


async def test_caller_mutation_after_save_is_not_stored(session_store: Backend) -> None:
    async with session_store.opened() as store:
        subs = {"a/#": 1}
        store.save_session("dev", user=None, subscriptions=subs, disconnected_ts=None)
        subs["b/#"] = 1
        [session], _ = await store.load()
    assert session.subscriptions == {"a/#": 1}
    assert session.user is None


async def test_dequeue(session_store: Backend) -> None:
    async with session_store.opened() as store:
        store.save_session("dev", user="u", subscriptions={}, disconnected_ts=None)
        for qid in range(1, 6):
            store.enqueue("dev", q(qid))
        await store.flush()
        store.dequeue("dev", [2, 4])
        store.dequeue("dev", [])
        store.dequeue("dev", [99])  # unknown qid: harmless
        [session], _ = await store.load()
        assert [m.qid for m in session.queue] == [1, 3, 5]
        # Enqueued and dequeued within one batch: never visible.
        store.enqueue("dev", q(6))
        store.dequeue("dev", [6, 1])
        [session], _ = await store.load()
        assert [m.qid for m in session.queue] == [3, 5]


async def test_delete_session_removes_its_queue(session_store: Backend) -> None:
    async with session_store.opened() as store:
        for cid in ("keep", "drop"):
            store.save_session(cid, user="u", subscriptions={}, disconnected_ts=None)
            store.enqueue(cid, q(1))
        await store.flush()
        store.enqueue("drop", q(2))
        store.delete_session("drop")
        sessions, _ = await store.load()
        assert [(s.client_id, [m.qid for m in s.queue]) for s in sessions] == [("keep", [1])]
        # Nothing of the queue is left behind in the backend either.
        assert await session_store.stored_queue_len("drop") == 0
        # A session re-created after delete starts with an empty queue.
        store.save_session("drop", user="u", subscriptions={}, disconnected_ts=None)
        sessions, _ = await store.load()
        assert {s.client_id: s.queue for s in sessions}["drop"] == []


async def test_retained_set_replace_and_clear(session_store: Backend) -> None:
    async with session_store.opened() as store:
        store.set_retained(RetainedRecord(topic="im/v1/presence/bob", payload=b"online", qos=1))
        store.set_retained(RetainedRecord(topic="im/v1/presence/alice", payload=b"offline", qos=0))
        store.set_retained(RetainedRecord(topic="im/v1/presence/carol", payload=b"x", qos=1))
        await store.flush()
        store.set_retained(RetainedRecord(topic="im/v1/presence/alice", payload=b"online", qos=1))
        store.set_retained(RetainedRecord(topic="im/v1/presence/carol", payload=b"", qos=0))
        # Set then clear then set again inside one batch: the last write wins.
        store.set_retained(RetainedRecord(topic="t/flip", payload=b"1", qos=0))
        store.set_retained(RetainedRecord(topic="t/flip", payload=b"", qos=0))
        store.set_retained(RetainedRecord(topic="t/flip", payload=b"2", qos=1))
        store.set_retained(RetainedRecord(topic="t/gone", payload=b"1", qos=0))
        store.set_retained(RetainedRecord(topic="t/gone", payload=b"", qos=0))
        await store.flush()
    async with session_store.opened() as store:
        _, retained = await store.load()
    assert retained == [
        RetainedRecord(topic="im/v1/presence/alice", payload=b"online", qos=1),
        RetainedRecord(topic="im/v1/presence/bob", payload=b"online", qos=1),
        RetainedRecord(topic="t/flip", payload=b"2", qos=1),
    ]


async def test_binary_payloads_and_odd_names_round_trip(session_store: Backend) -> None:
    async with session_store.opened() as store:
        store.save_session("dév:1 ✓", user="u", subscriptions={"a/+/ü": 2}, disconnected_ts=None)
        store.enqueue("dév:1 ✓", q(1, payload=ALL_BYTES, topic="t/ü/✓"))
        store.enqueue("dév:1 ✓", q(2, payload=b"\x00"))
        store.enqueue(
            "dév:1 ✓", QueuedMessage(qid=3, topic="t", payload=bytes(bytearray(b"\xff\xfe")), qos=2)
        )
        store.enqueue("dév:1 ✓", q(4, payload=b""))
        store.set_retained(RetainedRecord(topic="bin/ü", payload=ALL_BYTES, qos=1))
    # Closed without an explicit flush: close() flushes.
    async with session_store.opened() as store:
        [session], [retained] = await store.load()
    assert session.client_id == "dév:1 ✓"
    assert session.subscriptions == {"a/+/ü": 2}
    assert [m.payload for m in session.queue] == [ALL_BYTES, b"\x00", b"\xff\xfe", b""]
    assert all(type(m.payload) is bytes for m in session.queue)
    assert session.queue[0].topic == "t/ü/✓"
    assert session.queue[2].qos == 2
    assert retained == RetainedRecord(topic="bin/ü", payload=ALL_BYTES, qos=1)
    assert type(retained.payload) is bytes


async def test_flush_makes_writes_durable_for_other_readers(session_store: Backend) -> None:
    async with session_store.opened(batch_max=3) as store:
        store.save_session("dev", user="u", subscriptions={}, disconnected_ts=None)
        for qid in range(1, 101):
            store.enqueue("dev", q(qid))
        await store.flush()
        # Another reader (a new process, another broker node) already sees the committed data.
        assert await session_store.stored_queue_len("dev") == 100


async def test_many_concurrent_flushes(session_store: Backend) -> None:
    async with session_store.opened() as store:
        store.save_session("dev", user="u", subscriptions={}, disconnected_ts=None)

        async def writer(base: int) -> None:
            for i in range(20):
                store.enqueue("dev", q(base + i))
                if i % 5 == 0:
                    await store.flush()

        await asyncio.gather(*(writer(k * 1000) for k in range(10)))
        await store.flush()
        [session], _ = await store.load()
    assert len(session.queue) == 200


async def test_operations_after_close_raise_unavailable(session_store: Backend) -> None:
    store = session_store.new()
    with pytest.raises(Unavailable):
        store.enqueue("dev", q(1))
    await store.open()
    store.enqueue("dev", q(1))
    await store.close()
    await store.close()
    with pytest.raises(Unavailable):
        store.enqueue("dev", q(2))
    with pytest.raises(Unavailable):
        store.save_session("dev", user=None, subscriptions={}, disconnected_ts=None)
    with pytest.raises(Unavailable):
        await store.flush()
    with pytest.raises(Unavailable):
        await store.load()


async def test_bad_write_is_reported_by_flush_and_loses_only_itself(session_store: Backend) -> None:
    async with session_store.opened() as store:
        store.save_session("dev", user="u", subscriptions={}, disconnected_ts=None)
        store.enqueue("dev", q(1))
        # No backend can store a qos of None (SQLite: NOT NULL column; Redis: not encodable).
        store.enqueue("dev", QueuedMessage(qid=2, topic="t", payload=b"x", qos=None))  # type: ignore[arg-type]
        store.enqueue("dev", q(3))
        with pytest.raises(StorageError, match="EnqueueOp"):
            await store.flush()
        await store.flush()  # reported once
        [session], _ = await store.load()
    assert [m.qid for m in session.queue] == [1, 3]
