"""Forwarding out: what this node writes to Redis, and the messages it sends to other nodes.

`forward` (from `Hub.route`, synchronous) queues a message for every remote node whose filters
match; the writer task writes the queued forwards, client-id releases and route changes in
pipelined batches; `_drained` lets a commit wait until everything queued before it is in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

from mqim.broker import Session
from mqim.cluster._core import DOWN, RETRY_MAX_S, LinkCore, Op, Release, Xadd, log
from mqim.cluster._keys import Fields, Forward, encode_delta, encode_forward
from mqim.cluster._routes import LOCAL

_WRITE_BATCH: Final = 512

# Remove a client id's registry entry only if this node still owns it.
_RELEASE_LUA: Final = """
if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('hdel', KEYS[1], ARGV[1])
end
return 0
"""


class Outbox(LinkCore):
    """Forwarding out, share choices, the message ids of local publishes, the writer."""

    # -- forwarding out (sync, from Hub.route) -------------------------------------------------
    def take_local(self, share_filter: str, local_ready: bool) -> bool:
        """`ClusterPort.take_local`: serve `share_filter` here, or pick the remote node that will."""
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
        self.inner_store.record_seen(client_id, mid)

    def forward(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        """`ClusterPort.forward`: queue the message for every remote node that must route it."""
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
        self._ops.append(Xadd(node, fields, self._queued))
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
                except DOWN as exc:
                    self._routes_inflight = False
                    self._down(exc)
                    for topic_filter in adds:
                        if topic_filter not in self._route_del:
                            self._route_add.add(topic_filter)
                    for topic_filter in dels:
                        if topic_filter not in self._route_add:
                            self._route_del.add(topic_filter)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                delay = 0.05
                self._routes_inflight = False
                self._up()
                for _ in batch:
                    self._ops.popleft()
                if batch:
                    self._written = batch[-1].seq
                self._release_waiters()

    async def _write(self, batch: list[Op], adds: set[str], dels: set[str]) -> None:
        keys = self.keys
        pipe = self.redis.pipeline(transaction=False)
        for op in batch:
            if isinstance(op, Xadd):
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

    # -- HubObserver: a clean session's client id leaves the registry --------------------------
    def session_connected(self, session: Session) -> None:
        return None

    def session_disconnected(self, session: Session) -> None:
        if session.persistent or self._closing or session.client_id.startswith("auto-"):
            return
        if len(self._ops) >= self.settings.max_outbox:
            return  # the stale entry only costs a needless kick later
        self._queued += 1
        self._ops.append(Release(session.client_id, self._queued))
        self._wake.set()

    def delivered(self, session: Session, topic: str, payload: bytes) -> None:
        return None
