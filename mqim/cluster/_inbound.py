"""Forwarding in: this node's stream (forwards routed locally, take-over requests answered)."""

from __future__ import annotations

import contextlib
from typing import Any, Final

from redis.exceptions import ResponseError

from mqim.cluster._adopt import deliver_to
from mqim.cluster._core import DOWN, RETRY_MAX_S, log
from mqim.cluster._keys import GROUP, Forward, Kick, decode_entry, encode_forward
from mqim.cluster._routesync import RouteSync

_KICK_ANSWER_TTL_S: Final = 30


class Inbound(RouteSync):
    """Reads this node's stream through the consumer group, routes, commits, acknowledges."""

    # -- forwarding in: this node's stream -----------------------------------------------------

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
                    await self._pause(RETRY_MAX_S)
                with contextlib.suppress(*DOWN):
                    await self._ensure_group(self.redis, self.node_id)
                last = "0"
            except DOWN as exc:
                self._down(exc)
                await self._pause(RETRY_MAX_S)
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
        # Sessions that already queued this message (its copy came by another stream while the
        # session changed node) sit out this one call (synchronous: nothing else runs).
        hidden = hub.hide_sessions(self.seen.holders(entry.mid)) if entry.mid else []
        self._inbound_shares = entry.shares
        self._inbound_mid = entry.mid
        try:
            durable = hub.route(entry.topic, entry.payload, entry.qos, retain=entry.retain, forwarded=True)
        finally:
            self._inbound_shares = None
            self._inbound_mid = ""
            hub.unhide_sessions(hidden)
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

    async def _handle_kick(self, kick: Kick) -> None:
        hub = self.broker.hub
        session = hub.sessions.get(kick.client_id)
        if session is not None:
            hub.evict(session, f"session taken over by node {kick.by}", will=True)
            if session.persistent and hub.sessions.get(kick.client_id) is session:
                # Hand over: forget it here without deleting it from the shared store; its
                # routes stay here for a grace period and what arrives for it is sent on.
                self.moved.add(
                    kick.client_id,
                    node=kick.by,
                    filters=tuple(session.subscriptions),
                    grace_s=self.handover_grace_s,
                )
                hub.hand_over(session)
        await self.session_store.flush()
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(self.keys.kicked(kick.token), b"1")
        pipe.expire(self.keys.kicked(kick.token), _KICK_ANSWER_TTL_S)
        await pipe.execute()
