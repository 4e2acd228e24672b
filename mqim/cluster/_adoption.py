"""Dead nodes: a survivor adopts a dead node's sessions and drains its stream."""

from __future__ import annotations

import json
import time
from typing import Any, Final

from redis.exceptions import ResponseError

from mqim.cluster._core import ADOPT_LOCK_MS, DOWN, log, text
from mqim.cluster._exceptions import ClusterError
from mqim.cluster._inbound import Inbound
from mqim.cluster._keys import GROUP, encode_delta
from mqim.storage import Unavailable

DEATHS_KEPT: Final = 100
"""Adoptions remembered in `ClusterKeys.deaths` for `mqim cluster status`."""
_HOLD_MAX_S: Final = 30.0  # the test hook never holds an adoption longer than this


class Adoption(Inbound):
    """Watches the registry and adopts the nodes whose heartbeat expired."""

    # -- dead nodes ----------------------------------------------------------------------------
    async def _watch_loop(self) -> None:
        while not self._stop.is_set():
            await self._pause(self.settings.heartbeat_s)
            try:
                raw: Any = await self.redis.hkeys(self.keys.nodes)
                known = [text(n) for n in raw]
                live = await self._live_nodes()
                for node in set(self.routes.nodes) - set(known):
                    self.routes.drop(node)  # deregistered: its adopter has its sessions
                settled = time.monotonic() - self._healthy_since > self.settings.node_ttl_s
                if self._down_since is not None or not settled or not self.fence.serving:
                    continue  # after an outage every heartbeat may have lapsed: wait for them
                for node in known:
                    if node != self.node_id and node not in live:
                        await self._adopt(node)
            except (*DOWN, Unavailable) as exc:  # Unavailable: the sessions read from the shared store
                self._down(exc)

    async def _adopt(self, dead: str) -> bool:
        """Adopt a dead node's sessions and stream; False when another node holds the lock."""
        keys = self.keys
        lock = await self.redis.set(keys.adopt(dead), self.node_id, nx=True, px=ADOPT_LOCK_MS)
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
            client_id = text(raw)
            owner: Any = await self.redis.hget(keys.clients, client_id)
            if owner is not None and text(owner) != dead:
                continue  # reconnected elsewhere meanwhile
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(keys.clients, client_id, self.node_id)
            pipe.sadd(keys.owned(self.node_id), client_id)
            await pipe.execute()
            taken.add(client_id)
            if client_id not in hub.sessions:
                stored = await self._load_session(client_id)
                if stored is not None and hub.take_over([stored]):
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
