"""The state every layer of `ClusterLink` shares (see `cluster/_link.py`), and the helpers they all
use: Redis health (`_up`, `_down`), the stop-aware pause, and the sessions read from the shared store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from mqim.cluster._adopt import Moved, SeenIndex
from mqim.cluster._exceptions import ClusterError
from mqim.cluster._fence import Fence
from mqim.cluster._keys import GROUP, ClusterKeys, ClusterSettings, Fields, Forward
from mqim.cluster._routes import RemoteRoutes, ShareChooser
from mqim.cluster._store import ClusterSessionStore
from mqim.storage import QueuedMessage, RetainedRecord, SessionStore, StoredSession

# The session store's key layout and value format: the node loads one session on demand.
from mqim.storage._redis_codec import Keys, decode_queued, decode_retained, decode_session

if TYPE_CHECKING:
    from mqim.broker import MqimBroker


log = logging.getLogger("mqim.cluster")

DOWN: Final = (RedisError, OSError)
RETRY_MAX_S: Final = 1.0
ADOPT_LOCK_MS: Final = 60_000
_LOAD_CHUNK: Final = 256


@dataclass(frozen=True, slots=True)
class Xadd:
    node: str
    fields: Fields
    seq: int


@dataclass(frozen=True, slots=True)
class Release:
    client_id: str
    seq: int


Op = Xadd | Release


class LinkCore:
    """The link's state and shared helpers (see the module docstring).

    Args:
        url: Redis URL (the one the session store uses).
        settings: Node id, timing and bounds.
        session_store: The shared session store (a `RedisSessionStore` with the same prefix).
    """

    session_store: ClusterSessionStore
    """The broker's session store (`ClusterLink` makes it: it needs the writer and the stream)."""

    def __init__(self, *, url: str, settings: ClusterSettings, session_store: SessionStore) -> None:
        self.url = url
        self.settings = settings
        self.node_id = settings.node_id
        self.keys = ClusterKeys(settings.prefix)
        self._store_keys = Keys(settings.prefix)
        self.inner_store = session_store
        self.fence = Fence(ttl_s=settings.node_ttl_s, heartbeat_s=settings.heartbeat_s)
        self.seen = SeenIndex()
        self.moved = Moved()
        # Grace of a handover: the old node keeps the session's routes this long (the other
        # nodes learn the new node's routes within a pub/sub delivery, or a resync at worst).
        self.handover_grace_s = max(2.0, 8 * settings.heartbeat_s)
        # Client ids being claimed here: targeted entries for them wait until the session is.
        self._claiming: dict[str, list[Forward]] = {}
        self._incarnation = uuid.uuid4().hex[:8]
        self._mids = 0
        self._inbound_mid = ""
        self._local_enqueued: list[str] = []
        self._serving_again = asyncio.Event()
        self._serving_again.set()
        self.routes = RemoteRoutes()
        self._chooser = ShareChooser()
        self._broker: MqimBroker | None = None
        self._redis: aioredis.Redis | None = None
        self._ops: deque[Op] = deque()
        self._queued = 0
        self._written = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._writer_stop = False
        self._route_add: set[str] = set()
        self._route_del: set[str] = set()
        self._writer: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None
        self._beat_stop = False
        self._routes_inflight = False
        self._closing = False
        self._live: set[str] = set()
        self._always: set[str] = set()
        # Set while routing an entry from another node: the share filters that entry makes this
        # node serve (None: a local publish, this node chooses).
        self._inbound_shares: tuple[str, ...] | None = None
        self._share_picks: dict[str, list[str]] = {}
        self._decided: set[str] = set()
        self._healthy_since = time.monotonic()
        self._down_since: float | None = None
        self.info: dict[str, Any] = {}
        self.counters: dict[str, int] = {}

    @property
    def broker(self) -> MqimBroker:
        """The attached broker."""
        assert self._broker is not None, "ClusterLink.attach() was not called"
        return self._broker

    @property
    def redis(self) -> aioredis.Redis:
        """The link's Redis client (open between enter and exit)."""
        assert self._redis is not None, "cluster link not open"
        return self._redis

    @property
    def healthy(self) -> bool:
        """False while Redis is unreachable (the error is logged once, cleared when it is back)."""
        return self._down_since is None

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    async def _pause(self, seconds: float) -> None:
        """Sleep, returning early when the loops are told to stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    def _ttl_ms(self) -> int:
        return int(self.settings.node_ttl_s * 1000)

    async def _wait_serving(self) -> bool:
        """Wait (bounded by the stop flag) until the node serves again; True if it does."""
        while not self._stop.is_set() and not self.fence.serving:
            await self._pause(0.05)
        return self.fence.serving

    def _up(self) -> None:
        if self._down_since is not None:
            log.info("cluster Redis reachable again after %.1fs", time.monotonic() - self._down_since)
            self._down_since = None
            self._healthy_since = time.monotonic()
            # A Redis that lost its data must learn this node's routes again (SADD is idempotent).
            broker = self._broker
            if broker is not None:
                self._route_add.update(broker.hub.index.local_filters())
            self._route_add.update(self._always)
            self._route_del.difference_update(self._route_add)
            self._wake.set()

    def _down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error("cluster Redis unreachable (retrying): %s", exc)
            self._count("redis_errors")

    async def _owned(self) -> set[str]:
        raw: Any = await self.redis.smembers(self.keys.owned(self.node_id))
        return {text(m) for m in raw}

    async def _ensure_group(self, client: aioredis.Redis, node: str) -> None:
        try:
            await client.xgroup_create(self.keys.stream(node), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _load_session(self, client_id: str) -> StoredSession | None:
        await self.inner_store.flush()  # ordered after this node's own queued writes
        found = await self._read_sessions([client_id])
        return found[0] if found else None

    async def _read_sessions(self, client_ids: list[str]) -> list[StoredSession]:
        """The stored sessions (with queues) among `client_ids`, read in pipelined chunks."""
        keys = self._store_keys
        sessions: list[StoredSession] = []
        for start in range(0, len(client_ids), _LOAD_CHUNK):
            chunk = client_ids[start : start + _LOAD_CHUNK]
            pipe = self.redis.pipeline(transaction=False)
            for client_id in chunk:
                pipe.hget(keys.sessions, client_id)
                pipe.hgetall(keys.queue(client_id))
                pipe.lrange(keys.seen(client_id), 0, -1)
            results: Any = await pipe.execute()
            for index, client_id in enumerate(chunk):
                raw, queue, seen = results[3 * index], results[3 * index + 1], results[3 * index + 2]
                if raw is None:
                    continue
                for mid in seen:
                    self.seen.add(text(mid), client_id)
                cid, user, subscriptions, dts = decode_session(client_id.encode(), raw)
                messages: list[QueuedMessage] = sorted(
                    (decode_queued(qid, value) for qid, value in queue.items()), key=lambda m: m.qid
                )
                sessions.append(
                    StoredSession(
                        client_id=cid,
                        user=user,
                        subscriptions=subscriptions,
                        disconnected_ts=dts,
                        queue=messages,
                    )
                )
        return sessions

    async def _load_owned(self) -> tuple[list[StoredSession], list[RetainedRecord]]:
        """`ClusterSessionStore.load`: this node's sessions (not everyone's) and the retained."""
        try:
            await self.inner_store.flush()
            owned = sorted(await self._owned())
            sessions = await self._read_sessions(owned)
            raw: Any = await self.redis.hgetall(self._store_keys.retained)
        except DOWN as exc:
            raise ClusterError(f"cannot load this node's sessions: {exc}") from exc
        retained = sorted((decode_retained(t, v) for t, v in raw.items()), key=lambda r: r.topic)
        log.info("node %r owns %d stored sessions", self.node_id, len(sessions))
        return sessions, retained


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
