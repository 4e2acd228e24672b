"""Reading sessions and retained messages back from Redis (start-up load, cluster reads).

Pure reads through a given client and key layout (`Keys`); `RedisSessionStore` calls them from
its writer task (`load`, after the queued writes) or at once (`read_sessions`, `read_retained`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mqim.storage._exceptions import StorageError, Unavailable
from mqim.storage._records import RetainedRecord, StoredSession
from mqim.storage._redis_codec import Keys, decode_queued, decode_retained, decode_session

LOAD_CHUNK: Final = 256
"""Sessions read per pipelined round trip."""

DOWN_ERRORS: Final = (RedisConnectionError, RedisTimeoutError, OSError)
"""What means Redis cannot be reached (as opposed to refusing a command)."""


def as_bytes(value: object) -> bytes:
    """A Redis reply as bytes."""
    # The client is built with decode_responses=False: replies are bytes.
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise StorageError(f"unexpected Redis reply {type(value).__name__}")


def bytes_map(raw: object) -> dict[bytes, bytes]:
    """A Redis hash reply as a dict of bytes."""
    if not isinstance(raw, dict):
        raise StorageError(f"unexpected Redis reply {type(raw).__name__}")
    return {as_bytes(k): as_bytes(v) for k, v in raw.items()}


def describe(exc: BaseException) -> str:
    """An exception in one line, for messages."""
    return f"{type(exc).__name__}: {exc}"


def stored(
    meta: tuple[str, str | None, dict[str, int], int | None], queue: dict[bytes, bytes]
) -> StoredSession:
    """A session from its decoded metadata and its raw queue hash (queue in qid order)."""
    client_id, user, subscriptions, disconnected_ts = meta
    return StoredSession(
        client_id=client_id,
        user=user,
        subscriptions=subscriptions,
        disconnected_ts=disconnected_ts,
        queue=sorted((decode_queued(qid, value) for qid, value in queue.items()), key=lambda m: m.qid),
    )


async def read_sessions(
    client: aioredis.Redis, keys: Keys, client_ids: Sequence[str]
) -> tuple[list[StoredSession], dict[str, list[str]]]:
    """The stored sessions among `client_ids` in that order, and the message ids each recorded."""
    sessions: list[StoredSession] = []
    seen: dict[str, list[str]] = {}
    for start in range(0, len(client_ids), LOAD_CHUNK):
        chunk = client_ids[start : start + LOAD_CHUNK]
        try:
            pipe = client.pipeline(transaction=False)
            for client_id in chunk:
                pipe.hget(keys.sessions, client_id)
                pipe.hgetall(keys.queue(client_id))
                pipe.lrange(keys.seen(client_id), 0, -1)
            results = await pipe.execute()
        except DOWN_ERRORS as exc:
            raise Unavailable(f"Redis unreachable: {describe(exc)}") from exc
        except RedisError as exc:
            raise StorageError(f"read sessions: {describe(exc)}") from exc
        for index, client_id in enumerate(chunk):
            raw, queue, mids = results[3 * index], results[3 * index + 1], results[3 * index + 2]
            if raw is None:
                continue
            seen[client_id] = [as_bytes(mid).decode() for mid in mids]
            sessions.append(stored(decode_session(client_id.encode(), as_bytes(raw)), bytes_map(queue)))
    return sessions, seen


async def read_retained(client: aioredis.Redis, keys: Keys) -> list[RetainedRecord]:
    """Every retained message, sorted by topic."""
    try:
        raw = bytes_map(await client.hgetall(keys.retained))
    except DOWN_ERRORS as exc:
        raise Unavailable(f"Redis unreachable: {describe(exc)}") from exc
    except RedisError as exc:
        raise StorageError(f"read retained messages: {describe(exc)}") from exc
    return sorted((decode_retained(topic, value) for topic, value in raw.items()), key=lambda r: r.topic)


async def read_all(client: aioredis.Redis, keys: Keys) -> tuple[list[StoredSession], list[RetainedRecord]]:
    """Every stored session (queue in qid order) and retained message."""
    try:
        raw_sessions = bytes_map(await client.hgetall(keys.sessions))
        raw_retained = bytes_map(await client.hgetall(keys.retained))
        decoded = sorted(
            (decode_session(cid, value) for cid, value in raw_sessions.items()), key=lambda s: s[0]
        )
        queues: list[dict[bytes, bytes]] = []
        for start in range(0, len(decoded), LOAD_CHUNK):
            pipe = client.pipeline(transaction=False)
            for client_id, *_ in decoded[start : start + LOAD_CHUNK]:
                pipe.hgetall(keys.queue(client_id))
            queues.extend(bytes_map(raw) for raw in await pipe.execute())
    except DOWN_ERRORS as exc:
        raise Unavailable(f"Redis unreachable: {describe(exc)}") from exc
    except RedisError as exc:
        raise StorageError(f"load sessions: {describe(exc)}") from exc
    sessions = [stored(meta, queue) for meta, queue in zip(decoded, queues, strict=True)]
    retained = sorted(
        (decode_retained(topic, value) for topic, value in raw_retained.items()), key=lambda r: r.topic
    )
    return sessions, retained
