"""Cluster mode: one broker node among N, coordinated through Redis (DESIGN.md section 6).

`ClusterLink` joins a node's `Hub` to the others:

* Node registry: a heartbeat key with a TTL per node (`ClusterSettings.heartbeat_s`,
  `node_ttl_s`) and the node listed in a hash. `cluster_status` reads it.
* Route table: the filters of the node's sessions (reported by `SharedIndex.on_filter`) are kept
  in a Redis set per node; changes are published as deltas on a pub/sub channel, and every node
  resyncs the whole table periodically and after reconnecting. The other nodes' filters live in
  `RemoteRoutes`, so a publish finds its remote nodes without a scan.
* Forwarding: a message published on this node goes (`Hub.forwarder`) to every remote node whose
  filters match, by XADD to that node's stream (bounded by MAXLEN ~). Each node reads its stream
  through a consumer group, routes the entries locally (never forwarded again) and XACKs them
  after the durable commit. At start it first re-reads its own pending entries.
* Client ids: on CONNECT the node records client id -> node; if another node held it, a `kick`
  entry makes that node close the old connection and flush the session, which the new node then
  loads from the shared `RedisSessionStore`. A node loads only the sessions it owns at start.
* Failure: when a node's heartbeat expires, one surviving node (a lock decides) adopts it: it
  takes over its persistent sessions, publishes their routes, claims its stream's pending and
  unread entries (XAUTOCLAIM, XREADGROUP under its own consumer name) and delivers them to the
  adopted sessions only, deduplicated by message id; then it deregisters the dead node, drains
  what still arrives for a grace period and deletes its stream. The other nodes keep forwarding
  to a dead node until it is deregistered (so no message finds no route meanwhile).
* Handover and dedupe: `cluster/_adopt.py` (moved sessions stay routed here for a grace period and
  what arrives for them is sent on; every forward has a message id each session remembers).
* Fencing: `cluster/_fence.py` (a node that cannot renew its heartbeat stops serving before the
  others may adopt it, then rejoins).
* Shared subscriptions: for each message one node serves each share group (`ShareChooser`).

Every background task is named and owned: `async with link:` runs the writer (which the broker
needs to commit); `async with link.running():` runs the others once the broker is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from mqim.broker._connection import MqttConnection
from mqim.broker._session import Session
from mqim.cluster._adopt import Moved, SeenIndex, deliver_to
from mqim.cluster._exceptions import ClusterError
from mqim.cluster._fence import Fence
from mqim.cluster._keys import (
    GROUP,
    ClusterKeys,
    ClusterSettings,
    Fields,
    Forward,
    Kick,
    decode_delta,
    decode_entry,
    encode_delta,
    encode_forward,
    encode_kick,
)
from mqim.cluster._routes import LOCAL, RemoteRoutes, ShareChooser
from mqim.cluster._store import ClusterSessionStore
from mqim.storage import (
    QueuedMessage,
    RedisSessionStore,
    RetainedRecord,
    SessionStore,
    StorageError,
    StoredSession,
)

# The session store's key layout and value format: the node loads one session on demand.
from mqim.storage._redis_codec import Keys, decode_queued, decode_retained, decode_session

if TYPE_CHECKING:
    from mqim.broker._broker import MqimBroker

log = logging.getLogger("mqim.cluster")

_DOWN: Final = (RedisError, OSError)
_RETRY_MAX_S: Final = 1.0
_WRITE_BATCH: Final = 512
_POOL_SIZE: Final = 32
_KICK_ANSWER_TTL_S: Final = 30
_ADOPT_LOCK_MS: Final = 60_000
_LOAD_CHUNK: Final = 256
_MAX_WAIT_ROUNDS: Final = 10_000  # the claim's own timeout ends it first
DEATHS_KEPT: Final = 100
"""Adoptions remembered in `ClusterKeys.deaths` for `mqim cluster status`."""
_HOLD_MAX_S: Final = 30.0  # the test hook never holds an adoption longer than this

# Remove a client id's registry entry only if this node still owns it.
_RELEASE_LUA: Final = """
if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('hdel', KEYS[1], ARGV[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class _Xadd:
    node: str
    fields: Fields
    seq: int


@dataclass(frozen=True, slots=True)
class _Release:
    client_id: str
    seq: int


_Op = _Xadd | _Release


class ClusterLink:
    """This node's membership in the cluster. Use `async with link:` then `link.running()`.

    Args:
        url: Redis URL (the one the session store uses).
        settings: Node id, timing and bounds.
        session_store: The shared session store (a `RedisSessionStore` with the same prefix).
    """

    def __init__(self, *, url: str, settings: ClusterSettings, session_store: SessionStore) -> None:
        self.url = url
        self.settings = settings
        self.node_id = settings.node_id
        self.keys = ClusterKeys(settings.prefix)
        self._store_keys = Keys(settings.prefix)
        self.inner_store = session_store
        self.fence = Fence(ttl_s=settings.node_ttl_s, heartbeat_s=settings.heartbeat_s)
        self.session_store = ClusterSessionStore(
            inner=session_store,
            load=self._load_owned,
            drained=self._drained,
            closing=lambda: self._closing,
            serving=lambda: self.fence.serving,
            enqueued=self._on_enqueued,
        )
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
        self._ops: deque[_Op] = deque()
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

    # -- wiring --------------------------------------------------------------------------------
    def attach(self, broker: MqimBroker) -> None:
        """Hook into `broker` (before it starts): index reports, forwarding, claims, observers."""
        self._broker = broker
        hub = broker.hub
        hub.index.on_filter = self._filter_changed
        hub.index.share_router = self
        hub.forwarder = self.forward
        hub.claim_session = self.claim
        hub.observers.append(self)

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

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        """Connect, register the node, reset its route set, start the writer.

        Raises:
            ClusterError: Redis unreachable, or another live node uses this node id.
        """
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=_POOL_SIZE,
            timeout=self.settings.timeout_s,
            socket_timeout=self.settings.timeout_s + 2.0,  # above the 1 s XREADGROUP block
            socket_connect_timeout=self.settings.timeout_s,
        )
        client = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes its connections
        keys = self.keys
        node = self.node_id
        try:
            value = self._heartbeat_value()
            sent = time.monotonic()
            taken = not await client.set(keys.alive(node), value, px=self._ttl_ms(), nx=True)
            if taken:
                raise ClusterError(f"node id {node!r} is in use by a live node")
            pipe = client.pipeline(transaction=True)
            pipe.hset(keys.nodes, node, json.dumps({"started": time.time(), "pid": os.getpid()}))
            pipe.delete(keys.routes(node))
            pipe.publish(keys.route_channel, encode_delta(node, [], ["*"]))
            await pipe.execute()
            await self._ensure_group(client, node)
        except _DOWN as exc:
            await client.aclose()
            raise ClusterError(f"cluster Redis at {self.url}: {exc}") from exc
        except BaseException:
            await client.aclose()
            raise
        self._redis = client
        self.fence.rejoined(sent)
        self._writer = asyncio.create_task(self._write_loop(), name=f"mqim-cluster-writer:{node}")
        # The heartbeat runs from registration to exit: a slow start must not let it expire.
        self._beat = asyncio.create_task(self._heartbeat_loop(), name=f"mqim-cluster-heartbeat:{node}")
        log.info("node %r joined the cluster", node)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Write what is queued (bounded), leave the registry (the others adopt), disconnect."""
        self._closing = True
        writer, self._writer = self._writer, None
        beat, self._beat = self._beat, None
        client = self.redis
        try:
            if beat is not None:
                self._beat_stop = True
                beat.cancel()
                try:
                    await beat
                except asyncio.CancelledError:
                    if not beat.cancelled():
                        raise
            if writer is not None:
                self._wake.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle(), self.settings.timeout_s)
                self._writer_stop = True  # see `running`: a swallowed cancel still ends the loop
                self._wake.set()
                writer.cancel()
                try:
                    await writer
                except asyncio.CancelledError:
                    if not writer.cancelled():
                        raise
            try:
                await client.delete(self.keys.alive(self.node_id))
            except _DOWN as err:
                log.warning("could not leave the registry (the node will expire): %s", err)
        finally:
            for _, future in self._waiters:
                if not future.done():
                    future.set_exception(ClusterError("cluster link closed"))
            self._waiters.clear()
            await client.aclose()
            self._redis = None
            log.info("node %r left the cluster", self.node_id)

    async def _routes_written(self) -> None:
        """Return once this node's route changes so far are in Redis and published (bounded)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.timeout_s):
                while self._route_add or self._route_del or self._routes_inflight:
                    self._wake.set()
                    await asyncio.sleep(0.01)

    async def _idle(self) -> None:
        while self._ops or self._route_add or self._route_del:
            await self._drained()
            await asyncio.sleep(0)  # route changes are written with the next batch

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the heartbeat, route sync, stream consumer and dead-node watcher (once started).

        The tasks are held here and awaited on exit; one that fails is logged at its end and the
        others keep running (a crashed loop shows in the log and in `cluster status`).
        """
        jobs: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = [
            ("fence", self._fence_loop),
            ("routes", self._route_loop),
            ("consumer", self._consume_loop),
            ("watcher", self._watch_loop),
        ]
        self._stop.clear()
        tasks = [asyncio.create_task(job(), name=f"mqim-cluster-{name}:{self.node_id}") for name, job in jobs]
        try:
            yield
        finally:
            # redis-py can swallow a cancellation that lands inside a command: the loops also
            # watch this flag, so they end either way.
            self._stop.set()
            for task in tasks:
                task.cancel()
            for task in tasks:
                try:
                    await task
                except asyncio.CancelledError:
                    if not task.cancelled():
                        raise
                except Exception:
                    log.exception("cluster task %s failed", task.get_name())

    async def _pause(self, seconds: float) -> None:
        """Sleep, returning early when the loops are told to stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    # -- heartbeat and registry ----------------------------------------------------------------
    def _ttl_ms(self) -> int:
        return int(self.settings.node_ttl_s * 1000)

    def _heartbeat_value(self) -> str:
        broker = self._broker
        info: dict[str, Any] = {"ts": time.time(), "pid": os.getpid()}
        if broker is not None:
            sessions = broker.hub.sessions
            info.update(
                connections=broker.connection_count,
                sessions=len(sessions),
                queued=sum(len(s.queue) for s in sessions.values()),
                outbox=len(self._ops),
                routes=len(broker.hub.index.local_filters()),
                counters=dict(self.counters),
            )
        self.info = info
        return json.dumps(info)

    async def _heartbeat_loop(self) -> None:
        """Renew the heartbeat well inside the TTL; fence when it cannot; rejoin once fenced."""
        key = self.keys.alive(self.node_id)
        while not self._beat_stop:
            try:
                if self.fence.fenced:
                    await self._rejoin()
                elif self.fence.expired:
                    self._fence("heartbeat not renewed in time")
                else:
                    sent = time.monotonic()
                    # XX: only extend a key that still exists; once it expired this node may be
                    # adopted already and must not come back as if nothing happened.
                    renewed = await self.redis.set(key, self._heartbeat_value(), px=self._ttl_ms(), xx=True)
                    self._up()
                    if renewed:
                        self.fence.renewed(sent)
                    else:
                        self._fence("heartbeat key gone (expired, or Redis lost its data)")
            except _DOWN as exc:
                self._down(exc)
            await asyncio.sleep(self.settings.heartbeat_s)  # cancelled at exit

    async def _fence_loop(self) -> None:
        """Fence at the deadline even when the heartbeat task is stuck in a Redis call; end the
        grace of handed-over sessions."""
        period = min(0.05, self.settings.heartbeat_s / 4)
        while not self._stop.is_set():
            if not self.fence.fenced and self.fence.expired:
                self._fence("heartbeat not renewed in time")
            for topic_filter in self.moved.expire():
                self._release_filter(topic_filter)
            await self._pause(period)

    def _release_filter(self, topic_filter: str) -> None:
        broker = self._broker
        local = set(broker.hub.index.local_filters()) if broker is not None else set()
        if topic_filter not in local and not self.moved.holds(topic_filter):
            self._filter_changed(topic_filter, False)

    def _fence(self, reason: str) -> None:
        """Stop serving now (see `cluster/_fence.py`): close every connection, forget the sessions
        in memory (not in Redis), drop the queued session writes, stop consuming and writing."""
        if self.fence.fenced:
            return
        self.fence.fence()
        self._serving_again.clear()
        self._count("fenced")
        dropped = 0
        if isinstance(self.inner_store, RedisSessionStore):
            dropped = self.inner_store.discard_writes()
        closed = 0
        broker = self._broker
        if broker is not None:
            hub = broker.hub
            for session in list(hub.sessions.values()):
                conn = session.conn
                if isinstance(conn, MqttConnection):
                    conn.evict("cluster node fenced")
                    closed += 1
                if hub.sessions.get(session.client_id) is session:
                    del hub.sessions[session.client_id]
                    for topic_filter in session.subscriptions:
                        hub.index.remove(session.client_id, topic_filter)
        self.moved = Moved()
        for parked in self._claiming.values():
            parked.clear()
        self._route_add.clear()
        self._route_del.clear()
        log.error(
            "node %r fenced (%s): %d connections closed, %d session writes dropped; "
            "it rejoins when Redis answers",
            self.node_id,
            reason,
            closed,
            dropped,
        )

    async def _rejoin(self) -> None:
        """Register again under this node's own adoption lock; reload what it still owns."""
        keys, node = self.keys, self.node_id
        lock = await self.redis.set(keys.adopt(node), f"{node}:rejoin", nx=True, px=_ADOPT_LOCK_MS)
        if not lock:
            return  # another node is adopting this one: rejoin after it is done
        try:
            sent = time.monotonic()
            registration = json.dumps({"started": time.time(), "pid": os.getpid()})
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(keys.alive(node), self._heartbeat_value(), px=self._ttl_ms())
            pipe.hsetnx(keys.nodes, node, registration)
            await pipe.execute()
            await self._ensure_group(self.redis, node)
            sessions = await self._read_sessions(sorted(await self._owned()))
            members: Any = await self.redis.smembers(keys.routes(node))
            self.fence.rejoined(sent)
            restored = 0
            broker = self._broker
            local: set[str] = set(self._always)
            if broker is not None:
                hub = broker.hub
                fresh = [stored for stored in sessions if stored.client_id not in hub.sessions]
                hub.restore(fresh, [])
                restored = len(fresh)
                local.update(hub.index.local_filters())
            self._route_add = local
            self._route_del = {_text(m) for m in members} - local
            self._healthy_since = time.monotonic()
            self._serving_again.set()
            self._wake.set()
            self._count("rejoined")
            log.warning("node %r rejoined the cluster: %d sessions it still owns reloaded", node, restored)
        finally:
            await self.redis.delete(keys.adopt(node))

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
        return {_text(m) for m in raw}

    # -- route table: local changes out -------------------------------------------------------
    def subscribe_always(self, topic_filter: str) -> None:
        """Keep `topic_filter` in this node's routes whatever its sessions hold (in-process
        listeners, e.g. the membership follower's group events)."""
        self._always.add(topic_filter)
        self._filter_changed(topic_filter, True)

    def _filter_changed(self, topic_filter: str, present: bool) -> None:
        if not present and (topic_filter in self._always or self.moved.holds(topic_filter)):
            return  # a handed-over session keeps it routed here for its grace period
        if present:
            self._route_del.discard(topic_filter)
            self._route_add.add(topic_filter)
        else:
            self._route_add.discard(topic_filter)
            self._route_del.add(topic_filter)
        self._wake.set()

    # -- route table: remote changes in --------------------------------------------------------
    async def _route_loop(self) -> None:
        """Follow the deltas of the other nodes; resync fully at start, after errors, periodically."""
        while not self._stop.is_set():
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.keys.route_channel)
                await self._resync()
                next_sync = time.monotonic() + self.settings.resync_s
                while not self._stop.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._apply_delta(message["data"])
                    if time.monotonic() >= next_sync:
                        await self._resync()
                        next_sync = time.monotonic() + self.settings.resync_s
            except _DOWN as exc:
                self._down(exc)
                await self._pause(min(self.settings.heartbeat_s, _RETRY_MAX_S))
            finally:
                with contextlib.suppress(*_DOWN):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _apply_delta(self, raw: bytes) -> None:
        delta = decode_delta(raw)
        if delta is None:
            return
        node, add, remove = delta
        if node == self.node_id:
            return
        if "*" in remove:
            self.routes.drop(node)
        for topic_filter in remove:
            self.routes.remove(node, topic_filter)
        for topic_filter in add:
            self.routes.add(node, topic_filter)

    async def _resync(self) -> None:
        # A dead node keeps its routes until its adopter deregisters it: what is published
        # meanwhile waits in its stream for the adopter instead of finding no route at all.
        await self._live_nodes()
        raw: Any = await self.redis.hkeys(self.keys.nodes)
        registered = {_text(n) for n in raw}
        for node in set(self.routes.nodes) - registered:
            self.routes.drop(node)
        for node in registered:
            if node == self.node_id:
                continue
            members: Any = await self.redis.smembers(self.keys.routes(node))
            self.routes.replace(node, (_text(m) for m in members))

    async def _live_nodes(self) -> set[str]:
        raw: Any = await self.redis.hkeys(self.keys.nodes)
        nodes = [_text(n) for n in raw]
        if not nodes:
            self._live = set()
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for node in nodes:
            pipe.exists(self.keys.alive(node))
        alive = await pipe.execute()
        self._live = {node for node, ok in zip(nodes, alive, strict=True) if ok}
        return set(self._live)

    # -- forwarding out (sync, from Hub.route) -------------------------------------------------
    def take_local(self, share_filter: str, local_ready: bool) -> bool:
        """`ShareRouter`: serve `share_filter` here, or pick the remote node that will."""
        inbound = self._inbound_shares
        if inbound is not None:
            return share_filter in inbound
        self._decided.add(share_filter)
        candidates = ([LOCAL] if local_ready else []) + self.routes.share_nodes(share_filter)
        choice = self._chooser.decide(share_filter, candidates)
        if choice is None or choice == LOCAL:
            return True  # no connected member anywhere: queue for a local (persistent) member
        self._share_picks.setdefault(choice, []).append(share_filter)
        return False

    def _on_enqueued(self, client_id: str) -> None:
        """`ClusterSessionStore.enqueue`: remember which message id the session queued."""
        mid = self._inbound_mid
        if mid:
            self._remember(client_id, mid)
        elif len(self._local_enqueued) < 100_000:
            # A local publish: its id is made by `forward`, at the end of the same route call.
            self._local_enqueued.append(client_id)

    def _remember(self, client_id: str, mid: str) -> None:
        self.seen.add(mid, client_id)
        if isinstance(self.inner_store, RedisSessionStore):
            self.inner_store.record_seen(client_id, mid)

    def forward(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        """`Hub.forwarder`: queue the message for every remote node that must route it."""
        picks, decided = self._share_picks, self._decided
        self._share_picks, self._decided = {}, set()
        self._mids += 1
        mid = f"{self.node_id}.{self._incarnation}.{self._mids}"
        local, self._local_enqueued = self._local_enqueued, []
        for client_id in local:
            self._remember(client_id, mid)
        for client_id, node in self.moved.matching(topic):
            # Sent on to where the session went (it may get it there by its routes too: the
            # message id tells it apart).
            fields = encode_forward(
                Forward(
                    topic=topic,
                    payload=payload,
                    qos=qos,
                    retain=False,
                    shares=(),
                    origin=self.node_id,
                    mid=mid,
                    to=(client_id,),
                )
            )
            self._push_xadd(node, fields)
        routes = self.routes
        targets: dict[str, list[str]] = {node: [] for node in routes.plain_targets(topic)}
        for node, shares in picks.items():
            targets.setdefault(node, []).extend(shares)
        for share_filter in routes.share_filters(topic):
            if share_filter in decided:
                continue  # this node has members too: chosen above
            choice = self._chooser.decide(share_filter, routes.share_nodes(share_filter))
            if choice is not None:
                targets.setdefault(choice, []).append(share_filter)
        if retain:
            # Every node keeps the retained messages in memory: tell them all.
            for node in self._live:
                if node != self.node_id:
                    targets.setdefault(node, [])
        if not targets:
            return bool(self.moved.matching(topic)) and qos > 0
        queued = False
        for node, shares in targets.items():
            fields = encode_forward(
                Forward(
                    topic=topic,
                    payload=payload,
                    qos=qos,
                    retain=retain,
                    shares=tuple(shares),
                    origin=self.node_id,
                    mid=mid,
                )
            )
            queued = self._push_xadd(node, fields) or queued
        return (queued or bool(self.moved.matching(topic))) and qos > 0

    def _push_xadd(self, node: str, fields: Fields) -> bool:
        if len(self._ops) >= self.settings.max_outbox or self._closing:
            self._count("forward_dropped")
            log.warning("forward to %r dropped: outbox full (%d) or node stopping", node, len(self._ops))
            return False
        self._queued += 1
        self._ops.append(_Xadd(node, fields, self._queued))
        self._wake.set()
        return True

    async def _drained(self) -> None:
        """Return once every op queued before the call is written to Redis."""
        target = self._queued
        if self._written >= target or self._redis is None:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        self._wake.set()
        await future

    async def _write_loop(self) -> None:
        delay = 0.05
        while not self._writer_stop:
            await self._wake.wait()
            self._wake.clear()
            while self._ops or self._route_add or self._route_del:
                if not self.fence.serving and not self._closing:
                    # Fenced: this node's writes wait for the rejoin (its route set is rebuilt then).
                    await asyncio.sleep(0.05)
                    continue
                batch = [self._ops[i] for i in range(min(len(self._ops), _WRITE_BATCH))]
                adds, dels = self._route_add, self._route_del
                self._route_add, self._route_del = set(), set()
                self._routes_inflight = bool(adds or dels)
                try:
                    await self._write(batch, adds, dels)
                except _DOWN as exc:
                    self._routes_inflight = False
                    self._down(exc)
                    for topic_filter in adds:
                        if topic_filter not in self._route_del:
                            self._route_add.add(topic_filter)
                    for topic_filter in dels:
                        if topic_filter not in self._route_add:
                            self._route_del.add(topic_filter)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RETRY_MAX_S)
                    continue
                delay = 0.05
                self._routes_inflight = False
                self._up()
                for _ in batch:
                    self._ops.popleft()
                if batch:
                    self._written = batch[-1].seq
                self._release_waiters()

    async def _write(self, batch: list[_Op], adds: set[str], dels: set[str]) -> None:
        keys = self.keys
        pipe = self.redis.pipeline(transaction=False)
        for op in batch:
            if isinstance(op, _Xadd):
                fields: Any = op.fields
                pipe.xadd(keys.stream(op.node), fields, maxlen=self.settings.stream_maxlen, approximate=True)
            else:
                pipe.eval(_RELEASE_LUA, 1, keys.clients, op.client_id, self.node_id)
        if adds or dels:
            routes = keys.routes(self.node_id)
            if adds:
                pipe.sadd(routes, *adds)
            if dels:
                pipe.srem(routes, *dels)
            pipe.publish(keys.route_channel, encode_delta(self.node_id, sorted(adds), sorted(dels)))
        await pipe.execute()

    def _release_waiters(self) -> None:
        if not self._waiters:
            return
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._waiters:
            if self._written >= target:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((target, future))
        self._waiters = keep

    # -- HubObserver: a clean session's client id leaves the registry --------------------------
    def session_connected(self, session: Session) -> None:
        return None

    def session_disconnected(self, session: Session) -> None:
        if session.persistent or self._closing or session.client_id.startswith("auto-"):
            return
        if len(self._ops) >= self.settings.max_outbox:
            return  # the stale entry only costs a needless kick later
        self._queued += 1
        self._ops.append(_Release(session.client_id, self._queued))
        self._wake.set()

    def delivered(self, session: Session, topic: str, payload: bytes) -> None:
        return None

    # -- client ids: claim on CONNECT, kick the old node ---------------------------------------
    async def claim(self, client_id: str, clean: bool) -> bool:
        """Make this node the owner of `client_id` before its CONNECT is accepted.

        Kicks the node that held it (which closes the old connection and flushes the session),
        then loads a persistent session from the shared store. When the old node is dead, this
        node adopts it first (or waits for the node adopting it), so the entries the dead node
        had not delivered reach the session wherever it now lives. False when the cluster
        state cannot be reached (the CONNECT is then refused with "server unavailable").
        """
        settings = self.settings
        timeout = (
            settings.kick_timeout_s + settings.node_ttl_s + 4 * settings.heartbeat_s + 2 * settings.timeout_s
        )
        if not self.fence.serving:
            self._count("claim_failed")
            log.error("cannot take client id %r over (CONNECT refused): node fenced", client_id)
            return False
        self.moved.discard(client_id)  # it comes back here
        self._claiming[client_id] = []
        try:
            async with asyncio.timeout(timeout):
                await self._claim(client_id, clean)
            self._deliver_parked(client_id)
            return self.fence.serving
        except (*_DOWN, StorageError, TimeoutError) as exc:
            self._count("claim_failed")
            log.error("cannot take client id %r over (CONNECT refused): %s", client_id, exc)
            return False
        finally:
            self._claiming.pop(client_id, None)

    def _deliver_parked(self, client_id: str) -> None:
        """Deliver the targeted entries that arrived while `client_id` was being claimed."""
        parked = self._claiming.pop(client_id, [])
        durable = False
        for entry in parked:
            durable = self._deliver_targeted(entry, {client_id}) or durable
        if durable:
            self.broker.hub.committer.kick()

    async def _claim(self, client_id: str, clean: bool) -> None:
        keys, node = self.keys, self.node_id
        owner: Any = await self.redis.hget(keys.clients, client_id)
        if owner is not None and _text(owner) != node:
            await self._settle(_text(owner), client_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(keys.clients, client_id)
        pipe.hset(keys.clients, client_id, node)
        if clean:
            pipe.srem(keys.owned(node), client_id)
        else:
            pipe.sadd(keys.owned(node), client_id)
        replies: Any = await pipe.execute()
        previous = _text(replies[0]) if replies[0] else None
        if previous is not None and previous != node:
            await self.redis.srem(keys.owned(previous), client_id)
            await self._kick(previous, client_id)
        hub = self.broker.hub
        if clean:
            if client_id not in hub.sessions:
                self.session_store.delete_session(client_id)  # a stored session elsewhere ends
            return
        if client_id not in hub.sessions:
            stored = await self._load_session(client_id)
            if stored is not None and client_id not in hub.sessions:
                hub.restore([stored], [])

    async def _settle(self, owner: str, client_id: str) -> None:
        """If `owner` is dead (or dies within its TTL), adopt it or wait for its adopter."""
        keys, settings = self.keys, self.settings
        if await self.redis.exists(keys.alive(owner)):
            if await self._kick(owner, client_id) and await self.redis.exists(keys.alive(owner)):
                return  # a live node handed the session over
            # No answer (or the node adopting a dead owner answered from its stream): a dead
            # node's heartbeat key lives on until its TTL; wait that long.
            for _ in range(int(settings.node_ttl_s / settings.heartbeat_s) + 1):
                if not await self.redis.exists(keys.alive(owner)):
                    break
                await self._pause(settings.heartbeat_s)
            else:
                log.warning("node %r holds %r but does not answer; taking it over", owner, client_id)
                return
        if await self._adopt(owner):
            return
        # Another node is adopting it: wait until it is done (bounded by the claim timeout), so
        # every entry of the dead node's stream reached the session before it moves here.
        for _ in range(_MAX_WAIT_ROUNDS):
            if not await self.redis.exists(keys.adopt(owner)):
                break
            await self._pause(settings.heartbeat_s)

    async def _kick(self, node: str, client_id: str) -> bool:
        """Ask `node` to hand `client_id` over; True once it answered."""
        keys = self.keys
        if not await self.redis.exists(keys.alive(node)):
            return False  # dead: its state in Redis is what it flushed; its stream is adopted
        token = uuid.uuid4().hex
        kick = Kick(client_id=client_id, token=token, by=self.node_id)
        fields: Any = encode_kick(kick)
        await self.redis.xadd(keys.stream(node), fields, maxlen=self.settings.stream_maxlen)
        answer = await self.redis.blpop([keys.kicked(token)], timeout=self.settings.kick_timeout_s)
        if answer is None:
            self._count("kick_timeouts")
            wait = self.settings.kick_timeout_s
            log.warning("node %r did not hand %r over within %.1fs", node, client_id, wait)
            return False
        log.info("client id %r taken over from node %r", client_id, node)
        return True

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
                    self.seen.add(_text(mid), client_id)
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
        except _DOWN as exc:
            raise ClusterError(f"cannot load this node's sessions: {exc}") from exc
        retained = sorted((decode_retained(t, v) for t, v in raw.items()), key=lambda r: r.topic)
        log.info("node %r owns %d stored sessions", self.node_id, len(sessions))
        return sessions, retained

    async def _handle_kick(self, kick: Kick) -> None:
        hub = self.broker.hub
        session = hub.sessions.get(kick.client_id)
        if session is not None:
            conn = session.conn
            if isinstance(conn, MqttConnection):
                conn.evict(f"session taken over by node {kick.by}", will=True)
            if session.persistent and hub.sessions.get(kick.client_id) is session:
                # Hand over: forget it here without deleting it from the shared store; its
                # routes stay here for a grace period and what arrives for it is sent on.
                self.moved.add(
                    kick.client_id,
                    node=kick.by,
                    filters=tuple(session.subscriptions),
                    grace_s=self.handover_grace_s,
                )
                del hub.sessions[kick.client_id]
                for topic_filter in session.subscriptions:
                    hub.index.remove(kick.client_id, topic_filter)
        await self.session_store.flush()
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(self.keys.kicked(kick.token), b"1")
        pipe.expire(self.keys.kicked(kick.token), _KICK_ANSWER_TTL_S)
        await pipe.execute()

    # -- forwarding in: this node's stream -----------------------------------------------------
    async def _ensure_group(self, client: aioredis.Redis, node: str) -> None:
        try:
            await client.xgroup_create(self.keys.stream(node), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _consume_loop(self) -> None:
        stream = self.keys.stream(self.node_id)
        last: str | bytes = "0"  # first this consumer's pending entries (a restart), then new ones
        while not self._stop.is_set():
            if not self.fence.serving:
                await self._wait_serving()
                last = "0"  # after a rejoin: first what was read and not acknowledged
                continue
            try:
                block = None if last != ">" else 1000
                reply: Any = await self.redis.xreadgroup(
                    GROUP, self.node_id, {stream: last}, count=self.settings.read_batch, block=block
                )
                entries = reply[0][1] if reply else []
                if last != ">":
                    if not entries:
                        last = ">"
                        continue
                    last = entries[-1][0]
                if entries and not await self._process(stream, entries):
                    last = "0"  # fenced meanwhile: nothing acknowledged, read again after rejoin
                self._up()
            except ResponseError as exc:
                # NOGROUP: the stream was lost (Redis restarted without persistence).
                if "NOGROUP" not in str(exc):
                    self._count("stream_errors")
                    log.error("reading %s failed (retrying): %s", stream, exc)
                    await self._pause(_RETRY_MAX_S)
                with contextlib.suppress(*_DOWN):
                    await self._ensure_group(self.redis, self.node_id)
                last = "0"
            except _DOWN as exc:
                self._down(exc)
                await self._pause(_RETRY_MAX_S)
                last = "0"  # entries read but not acknowledged before the error: read them again

    async def _process(self, stream: str, entries: list[Any], *, adopted: set[str] | None = None) -> bool:
        """Route entries locally, commit, then acknowledge them; False (nothing acknowledged)
        when the node is fenced.

        `adopted`: the entries are a dead node's; deliver them only to the sessions adopted from
        it (the others here got their copy through this node's own stream).
        """
        if not self.fence.serving:
            return False
        hub = self.broker.hub
        durable = False
        ids = []
        for entry_id, fields in entries:
            ids.append(entry_id)
            if not fields:
                continue  # trimmed or deleted meanwhile
            entry = decode_entry(fields)
            if entry is None:
                self._count("bad_entries")
                log.warning("ignoring malformed cluster entry %r on %s", entry_id, stream)
                continue
            if isinstance(entry, Kick):
                if adopted is not None:
                    await self._answer(entry)
                else:
                    await self._handle_kick(entry)
                continue
            self._count("forwards_in")
            try:
                if entry.retain:
                    hub.retain(entry.topic, entry.payload, entry.qos)
                if entry.to or adopted is not None:
                    targets = set(entry.to) if entry.to else set(adopted or ())
                    durable = self._deliver_targeted(entry, targets) or durable
                else:
                    durable = self._route_inbound(entry) or durable
            except Exception:
                # A bug, not a Redis problem: skip this entry rather than stop consuming (or
                # read it again forever).
                self._count("bad_entries")
                log.exception("routing cluster entry %r from %s failed; skipped", entry_id, entry.origin)
        if durable:
            await self.session_store.flush()
            hub.committer.kick()
        if not self.fence.serving:
            return False  # fenced while committing: the entries stay pending for the adopter
        await self.redis.xack(stream, GROUP, *ids)
        return True

    def _route_inbound(self, entry: Forward) -> bool:
        """Route a forwarded entry to every matching local session that does not have it yet."""
        hub = self.broker.hub
        hidden: dict[str, Session] = {}
        if entry.mid:
            # Sessions that already queued this message (its copy came by another stream while
            # the session changed node) sit out this one call (synchronous: nothing else runs).
            for client_id in self.seen.holders(entry.mid):
                session = hub.sessions.pop(client_id, None)
                if session is not None:
                    hidden[client_id] = session
        self._inbound_shares = entry.shares
        self._inbound_mid = entry.mid
        try:
            durable = hub.route(entry.topic, entry.payload, entry.qos, retain=entry.retain, forwarded=True)
        finally:
            self._inbound_shares = None
            self._inbound_mid = ""
            hub.sessions.update(hidden)
        for client_id, node in self.moved.matching(entry.topic):
            durable = self._pass_on(entry, client_id, node) or durable
        return durable

    def _deliver_targeted(self, entry: Forward, targets: set[str]) -> bool:
        """Deliver an entry to `targets` only; park it for a session being claimed here, send it
        on for one that moved away."""
        hub = self.broker.hub
        self._inbound_shares = entry.shares
        self._inbound_mid = entry.mid
        try:
            durable, absent = deliver_to(
                hub, targets, entry.topic, entry.payload, entry.qos, mid=entry.mid, seen=self.seen
            )
        finally:
            self._inbound_shares = None
            self._inbound_mid = ""
        for client_id in absent:
            parked = self._claiming.get(client_id)
            if parked is not None:
                parked.append(entry)
                continue
            node = self.moved.node_of(client_id)
            if node is not None and node != self.node_id:
                durable = self._pass_on(entry, client_id, node) or durable
                continue
            self._count("targeted_dropped")
        return durable

    def _pass_on(self, entry: Forward, client_id: str, node: str) -> bool:
        """Send `entry` on to `node`, for `client_id` only (same message id)."""
        fields = encode_forward(
            Forward(
                topic=entry.topic,
                payload=entry.payload,
                qos=entry.qos,
                retain=False,
                shares=(),
                origin=entry.origin,
                mid=entry.mid,
                to=(client_id,),
            )
        )
        self._count("passed_on")
        queued = self._push_xadd(node, fields)
        return queued and entry.qos > 0

    async def _answer(self, kick: Kick) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(self.keys.kicked(kick.token), b"1")
        pipe.expire(self.keys.kicked(kick.token), _KICK_ANSWER_TTL_S)
        await pipe.execute()

    # -- dead nodes ----------------------------------------------------------------------------
    async def _watch_loop(self) -> None:
        while not self._stop.is_set():
            await self._pause(self.settings.heartbeat_s)
            try:
                raw: Any = await self.redis.hkeys(self.keys.nodes)
                known = [_text(n) for n in raw]
                live = await self._live_nodes()
                for node in set(self.routes.nodes) - set(known):
                    self.routes.drop(node)  # deregistered: its adopter has its sessions
                settled = time.monotonic() - self._healthy_since > self.settings.node_ttl_s
                if self._down_since is not None or not settled or not self.fence.serving:
                    continue  # after an outage every heartbeat may have lapsed: wait for them
                for node in known:
                    if node != self.node_id and node not in live:
                        await self._adopt(node)
            except _DOWN as exc:
                self._down(exc)

    async def _adopt(self, dead: str) -> bool:
        """Adopt a dead node's sessions and stream; False when another node holds the lock."""
        keys = self.keys
        lock = await self.redis.set(keys.adopt(dead), self.node_id, nx=True, px=_ADOPT_LOCK_MS)
        if not lock:
            return False
        try:
            # Under the lock: a node adopted (deregistered) or rejoined meanwhile is left alone.
            if await self.redis.hexists(keys.nodes, dead) and not await self.redis.exists(keys.alive(dead)):
                await self._adopt_locked(dead)
        finally:
            await self.redis.delete(keys.adopt(dead))
        return True

    async def _adopt_locked(self, dead: str) -> None:
        keys = self.keys
        detected = time.time()
        log.warning("node %r is dead: adopting its sessions and stream", dead)
        hub = self.broker.hub
        adopted = 0
        taken: set[str] = set()
        members: Any = await self.redis.smembers(keys.owned(dead))
        for raw in members:
            client_id = _text(raw)
            owner: Any = await self.redis.hget(keys.clients, client_id)
            if owner is not None and _text(owner) != dead:
                continue  # reconnected elsewhere meanwhile
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(keys.clients, client_id, self.node_id)
            pipe.sadd(keys.owned(self.node_id), client_id)
            await pipe.execute()
            taken.add(client_id)
            if client_id not in hub.sessions:
                stored = await self._load_session(client_id)
                if stored is not None and client_id not in hub.sessions:
                    hub.restore([stored], [])
                    adopted += 1
        # Our routes for the adopted sessions reach the other nodes before the dead node is
        # deregistered (until then they keep forwarding to its stream, drained here).
        await self._routes_written()
        await self._hold()
        moved = await self._drain(dead, taken)
        await self._pause(2 * self.settings.heartbeat_s)
        moved += await self._drain(dead, taken)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(keys.nodes, dead)
        pipe.publish(keys.route_channel, encode_delta(dead, [], ["*"]))
        await pipe.execute()
        # Forwards the others queued before they dropped its routes still arrive: drain them.
        tail_until = time.monotonic() + max(1.0, 4 * self.settings.heartbeat_s)
        while time.monotonic() < tail_until and not self._stop.is_set():
            await self._pause(self.settings.heartbeat_s)
            moved += await self._drain(dead, taken)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.stream(dead), keys.routes(dead), keys.owned(dead))
        # The history `mqim cluster status` shows: when a node died and who adopted it.
        death = {"node": dead, "adopted_by": self.node_id, "detected": detected, "adopted": time.time()}
        pipe.lpush(keys.deaths, json.dumps({**death, "sessions": adopted, "entries": moved}))
        pipe.ltrim(keys.deaths, 0, DEATHS_KEPT - 1)
        await pipe.execute()
        self._count("nodes_adopted")
        log.warning("node %r adopted: %d sessions, %d stream entries", dead, adopted, moved)

    async def _hold(self) -> None:
        """Test hook: wait while `ClusterKeys.hold_adopt` exists (bounded), so a test can order
        an adoption against a reconnect. Production never sets the key."""
        key = self.keys.hold_adopt
        deadline = time.monotonic() + _HOLD_MAX_S
        if not await self.redis.exists(key):
            return
        log.warning("adoption held by %s", key)
        while time.monotonic() < deadline and await self.redis.exists(key):
            await self._pause(0.05)

    async def _drain(self, dead: str, adopted: set[str]) -> int:
        """Claim the dead node's pending entries and read its unread ones; deliver them to the
        sessions adopted from it."""
        stream = self.keys.stream(dead)
        moved = 0
        try:
            start: str | bytes = "0-0"
            for _ in range(1_000_000):  # bounded: each round claims up to read_batch entries
                reply: Any = await self.redis.xautoclaim(
                    stream, GROUP, self.node_id, 0, start_id=start, count=self.settings.read_batch
                )
                start, claimed = reply[0], reply[1]
                if claimed:
                    if not await self._process(stream, claimed, adopted=adopted):
                        raise ClusterError("fenced while adopting")
                    moved += len(claimed)
                if start in (b"0-0", "0-0"):
                    break
            for _ in range(1_000_000):
                unread: Any = await self.redis.xreadgroup(
                    GROUP, self.node_id, {stream: ">"}, count=self.settings.read_batch
                )
                entries = unread[0][1] if unread else []
                if not entries:
                    break
                if not await self._process(stream, entries, adopted=adopted):
                    raise ClusterError("fenced while adopting")
                moved += len(entries)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        return moved


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
