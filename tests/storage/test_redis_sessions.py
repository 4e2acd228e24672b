"""`RedisSessionStore`: durable MQTT sessions, queues and retained messages in a real Redis.

The `SessionStore` behaviours shared with SQLite are in `test_session_store_contract.py`; here is
what Redis adds: a restart of the server, an outage (clear errors, nothing queued is lost,
automatic reconnect), the bounded backlog, writes Redis refuses, key prefixes and value encoding.
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


async def test_prefixes_isolate_deployments(redis_proc: RedisServer, prefix: str) -> None:
    async with store_for(redis_proc, prefix + "a") as a, store_for(redis_proc, prefix + "b") as b:
        a.save_session("dev", user="alice", subscriptions={}, disconnected_ts=None)
        a.set_retained(RetainedRecord(topic="t", payload=b"a", qos=0))
        await a.flush()
        assert await b.load() == ([], [])
        [session], [retained] = await a.load()
    assert session.user == "alice"
    assert retained.payload == b"a"


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


# -- direct reads (a cluster node loading sessions on demand) ----------------------------------
async def test_read_sessions_returns_the_named_sessions_with_their_queues_and_seen_ids(
    redis_proc: RedisServer, prefix: str
) -> None:
    async with store_for(redis_proc, prefix) as store:
        for client_id in ("a", "b", "c"):
            store.save_session(client_id, user="u", subscriptions={f"t/{client_id}": 1}, disconnected_ts=7)
        store.enqueue("b", q(5))
        store.enqueue("b", q(2))
        store.record_seen("b", "n1.x.1")
        store.record_seen("b", "n1.x.2")
        store.set_retained(RetainedRecord(topic="t/z", payload=b"z", qos=0))
        store.set_retained(RetainedRecord(topic="t/a", payload=b"a", qos=1))
        await store.flush()
        sessions, seen = await store.read_sessions(["c", "missing", "b"])
        retained = await store.read_retained()
    assert [s.client_id for s in sessions] == ["c", "b"]  # asked order, absent ones left out
    assert sessions[1].subscriptions == {"t/b": 1}
    assert sessions[1].disconnected_ts == 7
    assert [m.qid for m in sessions[1].queue] == [2, 5]
    assert seen == {"c": [], "b": ["n1.x.1", "n1.x.2"]}
    assert [(r.topic, r.payload) for r in retained] == [("t/a", b"a"), ("t/z", b"z")]


async def test_direct_reads_fail_clearly_when_closed_or_redis_is_down(tmp_path: Path, prefix: str) -> None:
    with redis_server(data_dir=tmp_path / "redis") as server:
        store = store_for(server, prefix)
        with pytest.raises(Unavailable, match="not open"):
            await store.read_sessions(["a"])
        async with store:
            await asyncio.to_thread(server.stop)
            with pytest.raises(Unavailable, match="Redis unreachable"):
                await store.read_sessions(["a"])
            with pytest.raises(Unavailable, match="Redis unreachable"):
                await store.read_retained()
            await asyncio.to_thread(server.start)
            await flush_when_back(store)
            assert await store.read_sessions(["a"]) == ([], {})
        with pytest.raises(Unavailable, match="closed"):
            await store.read_retained()


async def test_direct_read_of_corrupt_data_is_a_storage_error(
    redis_proc: RedisServer, prefix: str, raw: aioredis.Redis
) -> None:
    await raw.hset(Keys(prefix).sessions, "bad", b"not json")
    async with store_for(redis_proc, prefix) as store:
        with pytest.raises(StorageError, match="corrupt session"):
            await store.read_sessions(["bad"])


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
