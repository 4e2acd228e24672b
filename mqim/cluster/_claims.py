"""Client ids: a CONNECT claims its client id cluster-wide and takes its session over."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Final

from mqim.cluster._adoption import Adoption
from mqim.cluster._core import DOWN, log, text
from mqim.cluster._keys import Kick, encode_kick
from mqim.storage import StorageError

_MAX_WAIT_ROUNDS: Final = 10_000  # the claim's own timeout ends it first


class Claims(Adoption):
    """The claiming side of a take-over (the old node hands over in `Inbound`)."""

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
        except (*DOWN, StorageError, TimeoutError) as exc:
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
        if owner is not None and text(owner) != node:
            await self._settle(text(owner), client_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(keys.clients, client_id)
        pipe.hset(keys.clients, client_id, node)
        if clean:
            pipe.srem(keys.owned(node), client_id)
        else:
            pipe.sadd(keys.owned(node), client_id)
        replies: Any = await pipe.execute()
        previous = text(replies[0]) if replies[0] else None
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
            if stored is not None:
                hub.take_over([stored])

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
