"""`RedisSessionStore`: durable MQTT sessions, queues and retained messages in a real Redis.

The behaviours of `test_sqlite_sessions.py`, plus what Redis adds: a restart of the server, an
outage (clear errors, nothing queued is lost, automatic reconnect) and key prefixes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mqim.storage import QueuedMessage, RedisSessionStore, RetainedRecord, StorageError, Unavailable
from mqim.storage._redis_codec import Keys, decode_queued, encode_batch, encode_queued
from mqim.storage._session_writes import DequeueOp, EnqueueOp, RetainOp, SaveOp
from tests.support.servers import RedisServer, redis_server

ALL_BYTES = bytes(range(256)) + b"\x00\x00\xff"


def q(qid: int, payload: bytes = b"p", topic: str = "im/v1/u/bob/msg", qos: int = 1) -> QueuedMessage:
    return QueuedMessage(qid=qid, topic=topic, payload=payload, qos=qos)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def store_for(server: RedisServer, prefix: str, **kwargs: float) -> RedisSessionStore:
    return RedisSessionStore(url=server.url, prefix=prefix, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def raw(redis_proc: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_proc.url)
    yield client
    await client.aclose()


async def test_save_and_load_sessions_with_queues(redis_proc: RedisServer, prefix: str) -> None:
    async with store_for(redis_proc, prefix) as store:
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
    async with store_for(redis_proc, prefix) as store:
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


async def test_save_replaces_metadata_and_keeps_queue(redis_proc: RedisServer, prefix: str) -> None:
    async with store_for(redis_proc, prefix) as store:
        store.save_session("dev", user="alice", subscriptions={"a/#": 1}, disconnected_ts=None)
        store.enqueue("dev", q(1))
        await store.flush()
        store.save_session("dev", user="alice", subscriptions={"b/#": 0}, disconnected_ts=99)
        [session], _ = await store.load()
    assert session.subscriptions == {"b/#": 0}
    assert session.disconnected_ts == 99
    assert session.queue == [q(1)]


async def test_caller_mutation_after_save_is_not_stored(redis_proc: RedisServer, prefix: str) -> None:
    async with store_for(redis_proc, prefix) as store:
        subs = {"a/#": 1}
        store.save_session("dev", user=None, subscriptions=subs, disconnected_ts=None)
        subs["b/#"] = 1
        [session], _ = await store.load()
    assert session.subscriptions == {"a/#": 1}
    assert session.user is None


async def test_dequeue(redis_proc: RedisServer, prefix: str) -> None:
    async with store_for(redis_proc, prefix) as store:
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


async def test_delete_session_removes_its_queue(
    redis_proc: RedisServer, prefix: str, raw: aioredis.Redis
) -> None:
    async with store_for(redis_proc, prefix) as store:
        for cid in ("keep", "drop"):
            store.save_session(cid, user="u", subscriptions={}, disconnected_ts=None)
            store.enqueue(cid, q(1))
        await store.flush()
        store.enqueue("drop", q(2))
        store.delete_session("drop")
        sessions, _ = await store.load()
        assert [(s.client_id, [m.qid for m in s.queue]) for s in sessions] == [("keep", [1])]
        assert await raw.exists(Keys(prefix).queue("drop")) == 0
        # A session re-created after delete starts with an empty queue.
        store.save_session("drop", user="u", subscriptions={}, disconnected_ts=None)
        sessions, _ = await store.load()
        assert {s.client_id: s.queue for s in sessions}["drop"] == []


async def test_retained_set_replace_and_clear(redis_proc: RedisServer, prefix: str) -> None:
    async with store_for(redis_proc, prefix) as store:
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
    async with store_for(redis_proc, prefix) as store:
        _, retained = await store.load()
    assert retained == [
        RetainedRecord(topic="im/v1/presence/alice", payload=b"online", qos=1),
        RetainedRecord(topic="im/v1/presence/bob", payload=b"online", qos=1),
        RetainedRecord(topic="t/flip", payload=b"2", qos=1),
    ]


async def test_binary_payloads_and_odd_names_round_trip(redis_proc: RedisServer, prefix: str) -> None:
    async with store_for(redis_proc, prefix) as store:
        store.save_session("dév:1 ✓", user="u", subscriptions={"a/+/ü": 2}, disconnected_ts=None)
        store.enqueue("dév:1 ✓", q(1, payload=ALL_BYTES, topic="t/ü/✓"))
        store.enqueue("dév:1 ✓", q(2, payload=b"\x00"))
        store.enqueue(
            "dév:1 ✓", QueuedMessage(qid=3, topic="t", payload=bytes(bytearray(b"\xff\xfe")), qos=2)
        )
        store.enqueue("dév:1 ✓", q(4, payload=b""))
        store.set_retained(RetainedRecord(topic="bin/ü", payload=ALL_BYTES, qos=1))
    async with store_for(redis_proc, prefix) as store:
        [session], [retained] = await store.load()
    assert session.client_id == "dév:1 ✓"
    assert session.subscriptions == {"a/+/ü": 2}
    assert [m.payload for m in session.queue] == [ALL_BYTES, b"\x00", b"\xff\xfe", b""]
    assert all(type(m.payload) is bytes for m in session.queue)
    assert session.queue[0].topic == "t/ü/✓"
    assert session.queue[2].qos == 2
    assert retained == RetainedRecord(topic="bin/ü", payload=ALL_BYTES, qos=1)
    assert type(retained.payload) is bytes


async def test_flush_makes_writes_visible_to_other_clients(
    redis_proc: RedisServer, prefix: str, raw: aioredis.Redis
) -> None:
    async with store_for(redis_proc, prefix, batch_max=3) as store:
        store.save_session("dev", user="u", subscriptions={}, disconnected_ts=None)
        for qid in range(1, 101):
            store.enqueue("dev", q(qid))
        await store.flush()
        # Another client (another broker node) already sees the acknowledged data.
        assert await raw.hlen(Keys(prefix).queue("dev")) == 100


async def test_many_concurrent_flushes(redis_proc: RedisServer, prefix: str) -> None:
    async with store_for(redis_proc, prefix) as store:
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


async def test_prefixes_isolate_deployments(redis_proc: RedisServer, prefix: str) -> None:
    async with store_for(redis_proc, prefix + "a") as a, store_for(redis_proc, prefix + "b") as b:
        a.save_session("dev", user="alice", subscriptions={}, disconnected_ts=None)
        a.set_retained(RetainedRecord(topic="t", payload=b"a", qos=0))
        await a.flush()
        assert await b.load() == ([], [])
        [session], [retained] = await a.load()
    assert session.user == "alice"
    assert retained.payload == b"a"


async def test_operations_after_close_raise_unavailable(redis_proc: RedisServer, prefix: str) -> None:
    store = store_for(redis_proc, prefix)
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


async def test_bad_write_is_reported_by_flush_and_loses_only_itself(
    redis_proc: RedisServer, prefix: str
) -> None:
    async with store_for(redis_proc, prefix) as store:
        store.save_session("dev", user="u", subscriptions={}, disconnected_ts=None)
        store.enqueue("dev", q(1))
        store.enqueue("dev", QueuedMessage(qid=2, topic="t", payload=b"x", qos=None))  # type: ignore[arg-type]
        store.enqueue("dev", q(3))
        with pytest.raises(StorageError, match="EnqueueOp"):
            await store.flush()
        await store.flush()  # reported once
        [session], _ = await store.load()
    assert [m.qid for m in session.queue] == [1, 3]


async def test_write_refused_by_redis_is_reported(
    redis_proc: RedisServer, prefix: str, raw: aioredis.Redis
) -> None:
    # Something else put a string where a queue hash belongs: Redis answers WRONGTYPE.
    await raw.set(Keys(prefix).queue("broken"), b"not a hash")
    async with store_for(redis_proc, prefix) as store:
        store.save_session("ok", user="u", subscriptions={}, disconnected_ts=None)
        store.enqueue("broken", q(1))
        store.enqueue("ok", q(1))
        with pytest.raises(StorageError, match="WRONGTYPE"):
            await store.flush()
        sessions, _ = await store.load()
    assert [(s.client_id, len(s.queue)) for s in sessions] == [("ok", 1)]


async def test_open_fails_clearly_when_redis_is_down(prefix: str) -> None:
    with redis_server() as server:
        url = server.url
    store = RedisSessionStore(url=url, prefix=prefix, timeout_s=1.0)
    with pytest.raises(Unavailable, match="unreachable"):
        await store.open()
    await store.close()


# -- the server goes away and comes back -------------------------------------------------------
async def test_flushed_data_survives_redis_crash_and_restart(tmp_path: Path, prefix: str) -> None:
    with redis_server(data_dir=tmp_path / "redis") as server:
        async with store_for(server, prefix) as store:
            store.save_session("dev", user="bob", subscriptions={"im/v1/u/bob/#": 1}, disconnected_ts=7)
            for qid in range(1, 201):
                store.enqueue("dev", q(qid, payload=bytes([qid % 256]) * 64))
            store.dequeue("dev", [1, 2])
            store.set_retained(RetainedRecord(topic="im/v1/presence/bob", payload=b"\x00online", qos=1))
            await store.flush()
            # SIGKILL: nothing is flushed by Redis at exit; only the fsynced append-only file counts.
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)
            # The same store reconnects by itself.
            [session], [retained] = await store.load()
    assert session.user == "bob"
    assert session.subscriptions == {"im/v1/u/bob/#": 1}
    assert session.disconnected_ts == 7
    assert [m.qid for m in session.queue] == list(range(3, 201))
    assert all(m.payload == bytes([m.qid % 256]) * 64 for m in session.queue)
    assert retained == RetainedRecord(topic="im/v1/presence/bob", payload=b"\x00online", qos=1)


async def test_outage_gives_clear_errors_and_loses_nothing_queued(tmp_path: Path, prefix: str) -> None:
    with redis_server(data_dir=tmp_path / "redis") as server:
        async with store_for(server, prefix) as store:
            store.save_session("dev", user="bob", subscriptions={}, disconnected_ts=None)
            store.enqueue("dev", q(1))
            await store.flush()
            await asyncio.to_thread(server.stop)
            # Writes are still accepted (the broker keeps running) ...
            for qid in range(2, 12):
                store.enqueue("dev", q(qid))
            # ... but nobody is told they are durable.
            with pytest.raises(Unavailable, match="Redis unreachable"):
                await asyncio.wait_for(store.flush(), timeout=30)
            with pytest.raises(Unavailable, match="Redis unreachable"):
                await store.load()
            store.enqueue("dev", q(12))
            await asyncio.to_thread(server.start)
            await flush_when_back(store)
            [session], _ = await store.load()
    assert [m.qid for m in session.queue] == list(range(1, 13))


async def flush_when_back(store: RedisSessionStore) -> None:
    """Flush, retrying while the store still reports the outage (bounded)."""
    for _ in range(200):
        try:
            await asyncio.wait_for(store.flush(), timeout=30)
            return
        except Unavailable:
            await asyncio.sleep(0.05)
    raise AssertionError("the store did not reconnect")


async def test_backlog_is_bounded_while_redis_is_down(tmp_path: Path, prefix: str) -> None:
    with redis_server(data_dir=tmp_path / "redis") as server:
        store = RedisSessionStore(
            url=server.url, prefix=prefix, batch_max=4, max_pending=8, close_timeout_s=0
        )
        await store.open()
        try:
            await asyncio.to_thread(server.stop)
            store.enqueue("dev", q(1))
            with pytest.raises(Unavailable):
                await asyncio.wait_for(store.flush(), timeout=30)
            # The writer holds the first batch; the backlog takes max_pending more ...
            for qid in range(2, 10):
                store.enqueue("dev", q(qid))
            # ... and refuses the next one clearly.
            with pytest.raises(Unavailable, match="backlog full"):
                store.enqueue("dev", q(10))
        finally:
            with pytest.raises(StorageError, match="not stored"):
                await store.close()


# -- the pure encoding -------------------------------------------------------------------------
def test_queued_encoding_round_trips() -> None:
    for topic, payload, qos in [("t", b"", 0), ("a/ü/✓", ALL_BYTES, 2), ("x" * 65535, b"\x00", 1)]:
        value = encode_queued(topic, payload, qos)
        assert decode_queued(b"17", value) == QueuedMessage(qid=17, topic=topic, payload=payload, qos=qos)
    with pytest.raises(ValueError, match="65535"):
        encode_queued("x" * 65536, b"", 0)
    with pytest.raises(ValueError, match="qos"):
        encode_queued("t", b"", 3)
    with pytest.raises(StorageError, match="corrupt"):
        decode_queued(b"1", b"\x09\x00")


def test_encode_batch_merges_enqueues_and_isolates_bad_values() -> None:
    keys = Keys("p")
    encoded = encode_batch(
        keys,
        [
            SaveOp("a", "u", {"t/#": 1}, None),
            EnqueueOp("a", 1, "t", b"1", 1),
            EnqueueOp("a", 2, "t", b"2", 1),
            EnqueueOp("a", 3, "t", b"3", 7),  # bad qos: left out
            EnqueueOp("b", 1, "t", b"1", 1),
            DequeueOp("a", (1,)),
            RetainOp("r", b"", 0),
        ],
    )
    assert [c[:2] for c in encoded.commands] == [
        ("HSET", "p:sessions"),
        ("HSET", "p:q:a"),
        ("HSET", "p:q:b"),
        ("HDEL", "p:q:a"),
        ("HDEL", "p:retained"),
    ]
    assert encoded.commands[1][2::2] == (1, 2)  # one HSET for both entries of "a"
    assert [type(op).__name__ for op, _ in encoded.failed] == ["EnqueueOp"]
    assert len(encoded.owners) == len(encoded.commands)
