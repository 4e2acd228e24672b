"""The node registry: heartbeat, fencing (`cluster/_fence.py`) and the rejoin after a fence."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from mqim.cluster._adopt import Moved
from mqim.cluster._claims import Claims
from mqim.cluster._core import ADOPT_LOCK_MS, DOWN, log, text
from mqim.storage import Unavailable


class Registry(Claims):
    """Renews the heartbeat, fences this node when it cannot, rejoins once Redis answers."""

    # -- heartbeat and registry ----------------------------------------------------------------

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
            except (*DOWN, Unavailable) as exc:  # Unavailable: the sessions read from the shared store
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

    def _fence(self, reason: str) -> None:
        """Stop serving now (see `cluster/_fence.py`): close every connection, forget the sessions
        in memory (not in Redis), drop the queued session writes, stop consuming and writing."""
        if self.fence.fenced:
            return
        self.fence.fence()
        self._serving_again.clear()
        self._count("fenced")
        dropped = self.inner_store.discard_writes()
        closed = 0
        broker = self._broker
        if broker is not None:
            hub = broker.hub
            for session in list(hub.sessions.values()):
                if hub.evict(session, "cluster node fenced"):
                    closed += 1
                hub.hand_over(session)
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
        lock = await self.redis.set(keys.adopt(node), f"{node}:rejoin", nx=True, px=ADOPT_LOCK_MS)
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
                restored = hub.take_over(sessions)
                local.update(hub.index.local_filters())
            self._route_add = local
            self._route_del = {text(m) for m in members} - local
            self._healthy_since = time.monotonic()
            self._serving_again.set()
            self._wake.set()
            self._count("rejoined")
            log.warning("node %r rejoined the cluster: %d sessions it still owns reloaded", node, restored)
        finally:
            await self.redis.delete(keys.adopt(node))
