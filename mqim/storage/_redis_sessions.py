"""`RedisSessionStore`: durable MQTT session state in Redis, shared by every node of a cluster.

The sync write methods only append an operation to an in-memory queue (the broker's hot path
never awaits Redis). A background task, owned by the store (started in `open()`, awaited in
`close()`), takes what is queued and writes it in batches of at most `batch_max` operations, each
one atomic script. Like `SqliteSessionStore`, an enqueue that a later dequeue or delete of
the same batch removes again is never written.

`flush()` and `load()` travel through the same queue, so they are ordered after every write
queued before them. `flush()` resolves once those writes are acknowledged by Redis; how durable
that is depends on the server: with ``appendonly yes`` and ``appendfsync always`` they survive a
Redis crash or restart, with ``everysec`` the last second may be lost.

A cluster node also reads some sessions back directly (`read_sessions`: one session on demand,
or those it owns, with the message ids they recorded; `read_retained`), outside that queue.

When Redis cannot be reached, nothing queued is dropped: the batch is retried with back-off and
the store reconnects by itself. Meanwhile `flush()` and `load()` raise `Unavailable` at once (the
broker keeps running), and the queue is bounded by `max_pending`: beyond it the sync writes raise
`Unavailable` too. A write Redis rejects, or a value that cannot be encoded, loses only itself;
the next `flush()` raises the error once.

A batch runs as one Lua script (atomic, like MULTI/EXEC). With a `guard_key` (a cluster node's
heartbeat key) Redis applies a batch only while that key exists, so a node paused past its TTL
cannot overwrite the sessions its adopter now writes (`mqim/storage/_redis_guard.py`).

Keys are listed in `mqim.storage._redis_codec`. One batch spans several keys, so this runs
against a standalone Redis (or a Sentinel-managed primary), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final, Self

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mqim.storage._contracts import SessionStore
from mqim.storage._exceptions import StorageError, Unavailable
from mqim.storage._records import RetainedRecord, StoredSession
from mqim.storage._redis_codec import (
    Keys,
    SeenOp,
    StoreOp,
    encode_batch,
)
from mqim.storage._redis_guard import GuardedBatch, GuardGone
from mqim.storage._redis_reads import (
    DOWN_ERRORS,
    describe,
    read_all,
    read_retained,
    read_sessions,
)
from mqim.storage._session_writes import (
    Barrier,
    DeleteOp,
    DequeueOp,
    EnqueueOp,
    Load,
    Op,
    QueuedWrites,
    RetainOp,
    SaveOp,
    Stop,
    coalesce,
)

_log = logging.getLogger(__name__)

# How long close() keeps retrying queued writes against an unreachable Redis.
CLOSE_TIMEOUT_S: Final = 10.0
# Back-off between attempts of a batch while Redis is unreachable.
RETRY_FIRST_S: Final = 0.05
RETRY_MAX_S: Final = 1.0
# Sessions whose queues one load() pipeline reads at once.

_WRITE_TYPES: Final = (SaveOp, DeleteOp, EnqueueOp, DequeueOp, RetainOp, SeenOp)


class RedisSessionStore(QueuedWrites, SessionStore):
    """`SessionStore` in Redis (for cluster mode: a persistent client may return to any node).

    Use as an async context manager, or call `open()` and `close()`. The sync write methods
    must be called on the event loop while the store is open; they raise `Unavailable` otherwise.

    Args:
        url: A Redis URL (``redis://host:6379/0``, ``rediss://`` for TLS).
        prefix: Namespace of every key, so several deployments can share one Redis.
        batch_max: Most operations written in one batch.
        max_pending: Most operations queued and not yet written (the bound while Redis is down).
        timeout_s: Connect and socket timeout of one attempt.
        close_timeout_s: How long `close()` keeps retrying queued writes against an
            unreachable Redis before it gives them up.
        guard_key: A key that must exist for Redis to apply a batch (a cluster node's heartbeat
            key); a batch refused for its absence is lost, and the next `flush()` says so.
    """

    def __init__(
        self,
        *,
        url: str,
        prefix: str = "mqim",
        batch_max: int = 1024,
        max_pending: int = 500_000,
        timeout_s: float = 5.0,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
        guard_key: str | None = None,
    ) -> None:
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        if max_pending < batch_max:
            raise ValueError("max_pending must be at least batch_max")
        if not prefix:
            raise ValueError("prefix must not be empty")
        if timeout_s <= 0 or close_timeout_s < 0:
            raise ValueError("timeouts must be positive")
        self._url = url
        self._keys = Keys(prefix)
        self._batch_max = batch_max
        self._max_pending = max_pending
        self._timeout_s = timeout_s
        self._close_timeout_s = close_timeout_s
        self._guard_key = guard_key
        self._ops: collections.deque[Op | SeenOp] = collections.deque()
        self._wake = asyncio.Event()
        self._redis: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        self._closed = False
        # Set while Redis is unreachable: flush() and load() fail fast with it.
        self._down: BaseException | None = None
        # Writes that could not be stored; reported by the next flush().
        self._lost: StorageError | None = None
        # When set, the writer stops retrying an unreachable Redis at this loop time.
        self._give_up_at: float | None = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def pending(self) -> int:
        """Operations queued and not yet written (for metrics and back-pressure)."""
        return len(self._ops)

    @property
    def prefix(self) -> str:
        """The key prefix."""
        return self._keys.prefix

    async def open(self) -> None:
        """Connect (one PING) and start the writer task.

        Raises:
            Unavailable: Redis cannot be reached.
            StorageError: Bad URL, or Redis refused the connection (authentication).
        """
        if self._closed:
            raise Unavailable("session store is closed")
        if self._task is not None:
            return
        try:
            client = aioredis.Redis.from_url(
                self._url,
                decode_responses=False,
                socket_timeout=self._timeout_s,
                socket_connect_timeout=self._timeout_s,
                # One immediate retry replaces a pooled connection a Redis restart broke; longer
                # outages are handled (and reported) by the writer task.
                retry=Retry(NoBackoff(), 1),
            )
        except (ValueError, TypeError) as exc:
            raise StorageError(f"open Redis session store: bad URL {self._url!r}: {exc}") from exc
        try:
            await client.ping()
        except DOWN_ERRORS as exc:
            await client.aclose()
            raise Unavailable(f"Redis at {self._url} unreachable: {describe(exc)}") from exc
        except RedisError as exc:
            await client.aclose()
            raise StorageError(f"Redis at {self._url} refused: {describe(exc)}") from exc
        self._redis = client
        self._task = asyncio.create_task(self._run(client), name=f"mqim-redis-sessions:{self._keys.prefix}")
        self._accepting = True

    async def close(self) -> None:
        """Write everything queued (retrying up to `close_timeout_s`), stop the task, disconnect.

        Raises:
            StorageError: Some writes could not be stored (Redis unreachable or refusing them).
        """
        if self._closed:
            return
        self._closed = True
        self._accepting = False
        task, client = self._task, self._redis
        self._task = self._redis = None
        if task is None or client is None:
            return
        self._give_up_at = asyncio.get_running_loop().time() + self._close_timeout_s
        self._push(Stop())
        try:
            # The writer honours the deadline; the margin covers one last attempt's timeout.
            # (wait_for cancels the task on timeout, and when close() itself is cancelled.)
            await asyncio.wait_for(task, self._close_timeout_s + self._timeout_s + 1.0)
        except TimeoutError:
            self._record_lost(f"{self.pending} queued operation(s) dropped at close")
        except Exception as exc:  # the writer task failed: a bug, reported as a storage error
            self._record_lost(f"session writer failed: {describe(exc)}")
        finally:
            self._fail_waiters(Unavailable("session store is closed"))
            await client.aclose()
        lost, self._lost = self._lost, None
        if lost is not None:
            raise lost

    # -- queued writes (sync, called on the event loop) ------------------------------------------
    def _push(self, op: Op | SeenOp) -> None:
        self._ops.append(op)
        self._wake.set()

    def record_seen(self, client_id: str, mid: str) -> None:
        """Remember that `client_id`'s session queued the cluster message `mid` (queued write,
        ordered with the enqueue: both are in the same or an earlier batch than the
        acknowledgement of the stream entry that carried it)."""
        self._push_write(SeenOp(client_id, mid))

    def discard_writes(self) -> int:
        """Drop every queued write (a fenced cluster node: its sessions may belong to another
        node by now). Pending `flush()` and `load()` calls still resolve. Returns the count."""
        kept: collections.deque[Op | SeenOp] = collections.deque()
        dropped = 0
        for op in self._ops:
            if isinstance(op, _WRITE_TYPES):
                dropped += 1
            else:
                kept.append(op)
        self._ops = kept
        return dropped

    def _push_write(self, op: StoreOp) -> None:
        if not self._accepting:
            raise Unavailable("session store is closed" if self._closed else "session store is not open")
        if len(self._ops) >= self._max_pending:
            reason = f"; Redis unreachable: {describe(self._down)}" if self._down is not None else ""
            raise Unavailable(f"session store backlog full ({self._max_pending} operations){reason}")
        self._push(op)

    # -- ordered reads and barriers --------------------------------------------------------------
    def _new_future(self) -> asyncio.Future[Any]:
        if not self._accepting:
            raise Unavailable("session store is closed" if self._closed else "session store is not open")
        if self._down is not None:
            raise Unavailable(
                f"Redis unreachable ({describe(self._down)}); {self.pending} operation(s) queued, retrying"
            )
        return asyncio.get_running_loop().create_future()

    async def flush(self) -> None:
        """Return when every write queued before this call is acknowledged by Redis.

        Raises:
            Unavailable: The store is closed, or Redis is unreachable (the writes stay queued and
                are retried; flush again later).
            StorageError: A write queued before this call was rejected (it is lost).
        """
        future: asyncio.Future[None] = self._new_future()
        self._push(Barrier(future))
        await future

    async def load(self) -> tuple[list[StoredSession], list[RetainedRecord]]:
        """Every stored session (queue in qid order) and retained message, after queued writes.

        Raises:
            Unavailable: The store is closed or Redis is unreachable.
            StorageError: Stored data is corrupt.
        """
        future: asyncio.Future[tuple[list[StoredSession], list[RetainedRecord]]] = self._new_future()
        self._push(Load(future))
        return await future

    # -- direct reads (cluster mode) ---------------------------------------------------------------
    async def read_sessions(
        self, client_ids: Sequence[str]
    ) -> tuple[list[StoredSession], dict[str, list[str]]]:
        """The stored sessions among `client_ids`, in that order (queue in qid order; ids with no
        stored session are left out), and the cluster message ids each recorded (`record_seen`,
        oldest first).

        A cluster node loads one session on demand this way, or the sessions it owns. Read at
        once, in pipelined chunks of `LOAD_CHUNK` sessions, not through the write queue: call
        `flush()` first to read this store's own queued writes back.

        Raises:
            Unavailable: The store is not open, or Redis is unreachable.
            StorageError: Redis refused a read, or stored data is corrupt.
        """
        return await read_sessions(self._reader(), self._keys, client_ids)

    async def read_retained(self) -> list[RetainedRecord]:
        """Every retained message, sorted by topic (read at once, like `read_sessions`).

        Raises:
            Unavailable: The store is not open, or Redis is unreachable.
            StorageError: Redis refused the read, or stored data is corrupt.
        """
        return await read_retained(self._reader(), self._keys)

    def _reader(self) -> aioredis.Redis:
        client = self._redis
        if client is None or not self._accepting:
            raise Unavailable("session store is closed" if self._closed else "session store is not open")
        return client

    # -- the writer task -------------------------------------------------------------------------
    def _record_lost(self, message: str) -> None:
        _log.error("session store: %s", message)
        if self._lost is None:
            self._lost = StorageError(message)

    def _fail_waiters(self, exc: StorageError) -> None:
        """Fail every queued flush()/load(): what they wait for cannot be done now."""
        kept: collections.deque[Op | SeenOp] = collections.deque()
        for op in self._ops:
            if isinstance(op, Barrier | Load):
                if not op.future.done():
                    op.future.set_exception(exc)
            else:
                kept.append(op)
        self._ops = kept

    async def _run(self, client: aioredis.Redis) -> None:
        try:
            await self._write_loop(client)
        except Exception as exc:
            # A bug: stop accepting writes rather than queue them for nobody.
            self._accepting = False
            self._fail_waiters(StorageError(f"session writer failed: {describe(exc)}"))
            raise

    async def _write_loop(self, client: aioredis.Redis) -> None:
        batches = GuardedBatch(client=client, guard_key=self._guard_key)
        while True:
            if not self._ops:
                self._wake.clear()
                await self._wake.wait()
                continue
            op = self._ops[0]
            if isinstance(op, _WRITE_TYPES):
                batch: list[StoreOp] = []
                while self._ops and len(batch) < self._batch_max and isinstance(self._ops[0], _WRITE_TYPES):
                    write = self._ops.popleft()
                    assert isinstance(write, _WRITE_TYPES)
                    batch.append(write)
                await self._commit(batches, batch)
                continue
            self._ops.popleft()
            if isinstance(op, Stop):
                return
            if isinstance(op, Barrier):
                if not op.future.done():
                    lost, self._lost = self._lost, None
                    if lost is None:
                        op.future.set_result(None)
                    else:
                        op.future.set_exception(lost)
            elif isinstance(op, Load) and not op.future.done():
                try:
                    op.future.set_result(await read_all(client, self._keys))
                except StorageError as exc:
                    op.future.set_exception(exc)

    async def _commit(self, batches: GuardedBatch, batch: list[StoreOp]) -> None:
        # `coalesce` keeps what it does not know (the SeenOps) in place.
        encoded = encode_batch(self._keys, coalesce(batch))  # type: ignore[arg-type]
        for op, exc in encoded.failed:
            self._record_lost(f"{type(op).__name__} for {getattr(op, 'client_id', None) or op}: {exc}")
        if not encoded.commands:
            return
        delay = RETRY_FIRST_S
        while True:
            try:
                results = await batches.apply(encoded.commands)
                break
            except GuardGone as exc:
                self._record_lost(f"batch of {len(batch)} operation(s) refused by Redis: {exc} (fenced)")
                return
            except DOWN_ERRORS as exc:
                if self._down is None:
                    _log.warning("session store: Redis unreachable, retrying: %s", describe(exc))
                self._down = exc
                self._fail_waiters(
                    Unavailable(f"Redis unreachable ({describe(exc)}); writes queued, retrying")
                )
                loop = asyncio.get_running_loop()
                if self._give_up_at is not None and loop.time() >= self._give_up_at:
                    self._record_lost(
                        f"{len(batch) + self.pending} operation(s) not stored: Redis unreachable"
                    )
                    self._ops = collections.deque(op for op in self._ops if isinstance(op, Stop))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            except RedisError as exc:
                # The whole transaction was refused (e.g. EXECABORT, OOM): those writes are lost.
                self._record_lost(f"batch of {len(batch)} operation(s) refused by Redis: {describe(exc)}")
                return
        if self._down is not None:
            _log.info("session store: Redis reachable again")
            self._down = None
        for owner, error in zip(encoded.owners, results, strict=True):
            if error is not None:
                self._record_lost(f"{type(owner).__name__} refused by Redis: {error}")
