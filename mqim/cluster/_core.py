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
from mqim.storage import RedisSessionStore, RetainedRecord, StoredSession, Unavailable

if TYPE_CHECKING:
    from mqim.broker import MqimBroker


log = logging.getLogger("mqim.cluster")

DOWN: Final = (RedisError, OSError)
RETRY_MAX_S: Final = 1.0
ADOPT_LOCK_MS: Final = 60_000


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
        session_store: The shared session store (its prefix is `settings.prefix`).
    """

    session_store: ClusterSessionStore
    """The broker's session store (`ClusterLink` makes it: it needs the writer and the stream)."""

    def __init__(self, *, url: str, settings: ClusterSettings, session_store: RedisSessionStore) -> None:
        self.url = url
        self.settings = settings
        self.node_id = settings.node_id
        self.keys = ClusterKeys(settings.prefix)
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
        """The stored sessions (with queues) among `client_ids`; the message ids they queued
        join `seen`.

        Raises:
            Unavailable: Redis is unreachable.
        """
        sessions, seen = await self.inner_store.read_sessions(client_ids)
        for client_id, mids in seen.items():
            for mid in mids:
                self.seen.add(mid, client_id)
        return sessions

    async def _load_owned(self) -> tuple[list[StoredSession], list[RetainedRecord]]:
        """`ClusterSessionStore.load`: this node's sessions (not everyone's) and the retained."""
        await self.inner_store.flush()
        try:
            owned = sorted(await self._owned())
            sessions = await self._read_sessions(owned)
            retained = await self.inner_store.read_retained()
        except (*DOWN, Unavailable) as exc:
            raise ClusterError(f"cannot load this node's sessions: {exc}") from exc
        log.info("node %r owns %d stored sessions", self.node_id, len(sessions))
        return sessions, retained


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
