"""The route table: this node's filters out to Redis, the other nodes' filters in."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from mqim.cluster._core import DOWN, RETRY_MAX_S, text
from mqim.cluster._keys import decode_delta
from mqim.cluster._outbox import Outbox


class RouteSync(Outbox):
    """This node's route set (changes reported by its index) and the other nodes' routes."""

    # -- route table: local changes out -------------------------------------------------------
    def subscribe_always(self, topic_filter: str) -> None:
        """Keep `topic_filter` in this node's routes whatever its sessions hold (in-process
        listeners, e.g. the membership follower's group events)."""
        self._always.add(topic_filter)
        self.filter_changed(topic_filter, True)

    def filter_changed(self, topic_filter: str, present: bool) -> None:
        """`ClusterPort.filter_changed`: add `topic_filter` to this node's route set, or remove it
        (unless kept: `subscribe_always`, or a handed-over session's grace)."""
        if not present and (topic_filter in self._always or self.moved.holds(topic_filter)):
            return  # a handed-over session keeps it routed here for its grace period
        if present:
            self._route_del.discard(topic_filter)
            self._route_add.add(topic_filter)
        else:
            self._route_add.discard(topic_filter)
            self._route_del.add(topic_filter)
        self._wake.set()

    def _release_filter(self, topic_filter: str) -> None:
        broker = self._broker
        local = set(broker.hub.index.local_filters()) if broker is not None else set()
        if topic_filter not in local and not self.moved.holds(topic_filter):
            self.filter_changed(topic_filter, False)

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
            except DOWN as exc:
                self._down(exc)
                await self._pause(min(self.settings.heartbeat_s, RETRY_MAX_S))
            finally:
                with contextlib.suppress(*DOWN):
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
        registered = {text(n) for n in raw}
        for node in set(self.routes.nodes) - registered:
            self.routes.drop(node)
        for node in registered:
            if node == self.node_id:
                continue
            members: Any = await self.redis.smembers(self.keys.routes(node))
            self.routes.replace(node, (text(m) for m in members))

    async def _live_nodes(self) -> set[str]:
        raw: Any = await self.redis.hkeys(self.keys.nodes)
        nodes = [text(n) for n in raw]
        if not nodes:
            self._live = set()
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for node in nodes:
            pipe.exists(self.keys.alive(node))
        alive = await pipe.execute()
        self._live = {node for node, ok in zip(nodes, alive, strict=True) if ok}
        return set(self._live)
