"""Cluster mode: one broker node among N, coordinated through Redis (DESIGN.md section 6).

`ClusterLink` joins a node's `Hub` to the others, as the hub's `ClusterPort` (`Hub.attach_cluster`):

* Node registry: a heartbeat key with a TTL per node (`ClusterSettings.heartbeat_s`,
  `node_ttl_s`) and the node listed in a hash. `cluster_status` reads it.
* Route table: the filters of the node's sessions (reported to `filter_changed`) are kept in a
  Redis set per node; changes are published as deltas on a pub/sub channel, and every node
  resyncs the whole table periodically and after reconnecting. The other nodes' filters live in
  `RemoteRoutes`, so a publish finds its remote nodes without a scan.
* Forwarding: a message published on this node goes (`forward`) to every remote node whose
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

The class is assembled from one layer per concern, each using only the layers below it:
`_core.py` (state, Redis health, sessions read from the shared store) < `_outbox.py` (forwarding
out, the writer) < `_routesync.py` (route table) < `_inbound.py` (this node's stream, the hand-over
of a kicked session) < `_adoption.py` (dead nodes) < `_claims.py` (client-id claims) <
`_registry.py` (heartbeat, fencing, rejoin) < `ClusterLink` here (wiring and lifecycle).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mqim.cluster._core import DOWN, log
from mqim.cluster._exceptions import ClusterError
from mqim.cluster._keys import ClusterSettings, encode_delta
from mqim.cluster._registry import Registry
from mqim.cluster._store import ClusterSessionStore
from mqim.storage import RedisSessionStore

if TYPE_CHECKING:
    from mqim.broker import MqimBroker

_POOL_SIZE: Final = 32


class ClusterLink(Registry):
    """This node's membership in the cluster. Use `async with link:` then `link.running()`.

    Args:
        url: Redis URL (the one the session store uses).
        settings: Node id, timing and bounds.
        session_store: The shared session store (its prefix is `settings.prefix`).
    """

    def __init__(self, *, url: str, settings: ClusterSettings, session_store: RedisSessionStore) -> None:
        super().__init__(url=url, settings=settings, session_store=session_store)
        self.session_store = ClusterSessionStore(
            inner=session_store,
            load=self._load_owned,
            drained=self._drained,
            closing=lambda: self._closing,
            serving=lambda: self.fence.serving,
            enqueued=self._on_enqueued,
        )

    # -- wiring --------------------------------------------------------------------------------
    def attach(self, broker: MqimBroker) -> None:
        """Join `broker`'s hub to the cluster (before it starts): this link is its `ClusterPort`
        (forwarding, claims, filter reports, share choices) and a `HubObserver` (clean sessions
        leave the client-id registry)."""
        self._broker = broker
        hub = broker.hub
        hub.attach_cluster(self)
        hub.add_observer(self)

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
            # One immediate retry replaces a pooled connection a Redis restart broke (else the
            # first command on it fails: a client-id claim refused the CONNECT after the restart);
            # longer outages are the heartbeat's and the fence's (cluster/_registry.py).
            retry=Retry(NoBackoff(), 1),
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
        except DOWN as exc:
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
            except DOWN as err:
                log.warning("could not leave the registry (the node will expire): %s", err)
        finally:
            for _, future in self._waiters:
                if not future.done():
                    future.set_exception(ClusterError("cluster link closed"))
            self._waiters.clear()
            await client.aclose()
            self._redis = None
            log.info("node %r left the cluster", self.node_id)

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
