"""A `RedisSessionStore` with a guard key: Redis applies its batches only while the key exists.

This is what keeps a cluster node that was paused past its heartbeat's TTL from writing over the
sessions its adopter loaded (`mqim/storage/_redis_guard.py`): from Redis' side, a stale write that
arrives late is the same as a write sent after the key expired.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from mqim.storage import QueuedMessage, RedisSessionStore, StorageError
from mqim.storage._redis_codec import MAX_COMMAND_ARGS, Keys, encode_batch
from mqim.storage._session_writes import DequeueOp, EnqueueOp
from tests.support.servers import RedisServer


def q(qid: int, payload: bytes = b"p") -> QueuedMessage:
    return QueuedMessage(qid=qid, topic="im/v1/u/bob/msg", payload=payload, qos=1)


@pytest.fixture
def prefix() -> str:
    return f"g{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def raw(redis_proc: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_proc.url)
    yield client
    await client.aclose()


async def _queue(store: RedisSessionStore, client_id: str) -> dict[int, bytes]:
    await store.flush()
    sessions, _ = await store.load()
    return {m.qid: m.payload for s in sessions if s.client_id == client_id for m in s.queue}


async def test_batches_apply_while_the_guard_key_exists_and_are_refused_once_it_is_gone(
    redis_proc: RedisServer, prefix: str, raw: aioredis.Redis
) -> None:
    guard = f"{prefix}:alive:n3"
    await raw.set(guard, b"1")
    async with RedisSessionStore(url=redis_proc.url, prefix=prefix, guard_key=guard) as store:
        store.save_session("bob-phone", user="bob", subscriptions={}, disconnected_ts=None)
        store.enqueue("bob-phone", q(1, b"m1"))
        assert await _queue(store, "bob-phone") == {1: b"m1"}
        await raw.delete(guard)  # the heartbeat expired: another node may own the session now
        store.enqueue("bob-phone", q(2, b"stale"))
        store.dequeue("bob-phone", [1])
        with pytest.raises(StorageError, match="fenced"):
            await store.flush()
        assert await _queue(store, "bob-phone") == {1: b"m1"}  # none of the batch applied
        await raw.set(guard, b"2")  # registered again (a rejoin)
        store.enqueue("bob-phone", q(3, b"m3"))
        assert await _queue(store, "bob-phone") == {1: b"m1", 3: b"m3"}


async def test_a_paused_nodes_stale_acknowledgement_cannot_remove_the_adopters_entry(
    redis_proc: RedisServer, prefix: str, raw: aioredis.Redis
) -> None:
    # n3 queued "qid 1 acknowledged" before it was paused; n1 adopted the session and reused
    # qid 1 for a new message. n3's write arriving after its key expired must not delete it.
    n3_key, n1_key = f"{prefix}:alive:n3", f"{prefix}:alive:n1"
    await raw.set(n1_key, b"1")
    async with (
        RedisSessionStore(url=redis_proc.url, prefix=prefix, guard_key=n3_key) as n3,
        RedisSessionStore(url=redis_proc.url, prefix=prefix, guard_key=n1_key) as n1,
    ):
        n1.save_session("bob-phone", user="bob", subscriptions={}, disconnected_ts=None)
        n1.enqueue("bob-phone", q(1, b"sent while n3 was paused"))
        await n1.flush()
        n3.dequeue("bob-phone", [1])
        with pytest.raises(StorageError, match="fenced"):
            await n3.flush()
        assert await _queue(n1, "bob-phone") == {1: b"sent while n3 was paused"}


async def test_large_batches_are_split_below_the_script_bound(
    redis_proc: RedisServer, prefix: str, raw: aioredis.Redis
) -> None:
    guard = f"{prefix}:alive:n1"
    await raw.set(guard, b"1")
    count = 3 * MAX_COMMAND_ARGS
    store = RedisSessionStore(url=redis_proc.url, prefix=prefix, guard_key=guard, batch_max=count)
    async with store:
        store.save_session("dev", user="u", subscriptions={}, disconnected_ts=None)
        for qid in range(1, count + 1):
            store.enqueue("dev", q(qid))
        assert len(await _queue(store, "dev")) == count
        store.dequeue("dev", list(range(1, count)))
        assert list(await _queue(store, "dev")) == [count]
    ops: list[EnqueueOp | DequeueOp] = [EnqueueOp("dev", qid, "t", b"p", 1) for qid in range(count)]
    ops.append(DequeueOp("dev", tuple(range(count))))
    commands = encode_batch(Keys(prefix), ops).commands
    assert max(len(command) for command in commands) <= MAX_COMMAND_ARGS


async def test_the_script_is_loaded_again_after_redis_forgot_it(
    redis_proc: RedisServer, prefix: str, raw: aioredis.Redis
) -> None:
    async with RedisSessionStore(url=redis_proc.url, prefix=prefix) as store:
        store.save_session("dev", user="u", subscriptions={}, disconnected_ts=None)
        store.enqueue("dev", q(1))
        await store.flush()
        await raw.script_flush()  # what a Redis restart does to cached scripts
        store.enqueue("dev", q(2))
        assert sorted(await _queue(store, "dev")) == [1, 2]
