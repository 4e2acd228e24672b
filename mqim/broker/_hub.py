"""The routing core: sessions, the subscription index, retained messages, in-process listeners.

Synchronous by design: a PUBLISH is routed to every matching session within one call, with no
task per message. Durable writes (persistent session queues, retained messages) are queued on the
`SessionStore`; `Committer` flushes them in batches and releases the acknowledgements that
depended on them, so a publisher's PUBACK is sent only once its message is safe on disk.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from mqim.acl import AclEngine, Identity, IdentityKind, ReceiveScope, filter_is_subset, topic_matches
from mqim.broker._holds import Hold
from mqim.broker._ports import ClusterPort
from mqim.broker._retained import RetainedIndex
from mqim.broker._router import SubscriptionIndex
from mqim.broker._scopes import (
    ScopeCompiler,
    any_allows,
    delivery_qos,
    drop_scope,
    filter_allows,
    recompile,
    set_scope,
    users_sessions,
)
from mqim.broker._session import Session, Writer
from mqim.broker._settings import BrokerSettings
from mqim.broker._shared import SharedIndex, parse_shared
from mqim.broker._traffic import Traffic
from mqim.mqtt import encode_str
from mqim.protocol import PREFIX, InboxKind, group_filter, inbox_topic
from mqim.storage import RetainedRecord, SessionStore, StorageError, StoredSession

log = logging.getLogger("mqim.broker")


_GROUP_LEVELS = (*PREFIX.split("/"), "g")


def group_of(topic_or_filter: str) -> str | None:
    """The `{group}` level of `im/v1/g/{group}/...` (a topic or a filter), else None."""
    levels = topic_or_filter.split("/", 4)
    if len(levels) < 4 or tuple(levels[:3]) != _GROUP_LEVELS or levels[3] in ("+", "#", ""):
        return None
    return levels[3]


ConsumerCallback = Callable[[str, bytes, Hold | None], None]
"""An in-process consumer: `(topic, payload, hold)`; it must settle or fail a hold it is given."""


class Reader(Protocol):
    """A publisher's connection the hub may pause for back-pressure."""

    def resume_publishing(self) -> None: ...


@runtime_checkable
class Evictable(Protocol):
    """A connection that can be closed at once, leaving its session to another owner."""

    def evict(self, reason: str, *, will: bool = False) -> None: ...


class HubObserver(Protocol):
    """Hooks for features built on broker events (presence, delivery receipts). Synchronous."""

    def session_connected(self, session: Session) -> None: ...

    def session_disconnected(self, session: Session) -> None: ...

    def delivered(self, session: Session, topic: str, payload: bytes) -> None: ...


@dataclass(slots=True)
class Counters:
    """Monotonic counters exposed by `mqim status` and the metrics endpoint."""

    published: int = 0
    delivered: int = 0
    acl_denied_publish: int = 0
    acl_denied_receive: int = 0
    acl_denied_subscribe: int = 0
    dropped_qos0: int = 0
    evicted: int = 0
    protocol_errors: int = 0
    connections_refused: int = 0
    retained_refused: int = 0
    refused_full: int = 0
    oversize_discarded: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Hub:
    """Sessions and routing of one broker node.

    Args:
        settings: Limits.
        acl: The ACL engine (cached, synchronous decisions).
        store: Durable session state; None keeps everything in memory (tests of the hub only).
        auto_subscriptions: Filters (with QoS) a user's session is subscribed to by the server.
    """

    def __init__(
        self,
        *,
        settings: BrokerSettings,
        acl: AclEngine,
        store: SessionStore | None,
        auto_subscriptions: Callable[[Identity], Iterable[tuple[str, int]]] | None = None,
    ) -> None:
        self.settings = settings
        self.acl = acl
        self.store = store
        self.sessions: dict[str, Session] = {}
        # Plain filters plus `$share/{group}/{filter}` (one member per group, see _shared.py).
        self.index = SharedIndex()
        self.index.connected = self._is_connected
        self.index.admits = self._share_admits
        # Receive scopes (DESIGN.md section 8): compiled with the engine's rules and membership;
        # a membership change recompiles the dynamic scopes of the users it names.
        self.scope_compiler = ScopeCompiler(acl=acl)
        self._unwatch = self.scope_compiler.watch(self._membership_changed)
        self.retained = RetainedIndex()
        self.listeners: SubscriptionIndex[int] = SubscriptionIndex()
        self._listener_callbacks: dict[int, Callable[[str, bytes], None]] = {}
        self._consumers: dict[int, ConsumerCallback] = {}
        self._has_listeners = False
        self.held = 0  # holds in force: publishes whose PUBACK waits for a consumer
        self._paused: set[Reader] = set()
        self._listener_ids = itertools.count(1)
        self._topic_cache: dict[str, bytes] = {}
        self.counters = Counters()
        self.traffic = Traffic()  # by topic class and QoS, read by metrics and $SYS
        self.observers: list[HubObserver] = []
        self.auto_subscriptions = auto_subscriptions
        self.committer = Committer(store=store)
        # Account kinds of non-user accounts (bridge, service), set before `restore` by the server:
        # the session store keeps only the user name, and a restored bridge session must keep
        # receiving its namespace while it is away.
        self.restored_kinds: dict[str, IdentityKind] = {}
        # The groups a user belongs to, set by the server that owns the membership index: with
        # it, each user session is subscribed to `im/v1/g/{group}/#` of its groups and loses
        # (with the queued messages) those of groups it left (DESIGN.md section 4).
        self.member_groups: Callable[[str], Collection[str]] | None = None
        # Cluster mode: the other nodes (forwarding, client-id claims, route and share reports).
        self._cluster: ClusterPort | None = None

    # -- cluster mode --------------------------------------------------------------------------
    def attach_cluster(self, port: ClusterPort) -> None:
        """Join this node's hub to a cluster (before the broker starts; once).

        From then on a local publish is also offered to `port.forward`, a CONNECT with a client id
        waits for `port.claim`, and the index reports its filters to `port.filter_changed` and
        asks `port.take_local` which node serves a share group.
        """
        if self._cluster is not None:
            raise RuntimeError("a cluster port is attached already")
        self._cluster = port
        self.index.on_filter = port.filter_changed
        self.index.share_router = port

    async def claim_session(self, client_id: str, clean: bool) -> bool:
        """Take `client_id` over before its CONNECT is accepted (cluster mode: it may live on
        another node); False refuses the CONNECT. True at once without a cluster."""
        cluster = self._cluster
        return True if cluster is None else await cluster.claim(client_id, clean)

    def take_over(self, sessions: Iterable[StoredSession]) -> int:
        """Load persistent sessions this node now owns (a claimed client id, an adopted node, a
        rejoin) from their stored state, skipping those that have a session here already.

        Returns how many were loaded.
        """
        fresh = [stored for stored in sessions if stored.client_id not in self.sessions]
        if fresh:
            self.restore(fresh, [])
        return len(fresh)

    def hand_over(self, session: Session) -> bool:
        """Forget `session` in memory only: another node owns it now (or may, once this node is
        fenced). It leaves `sessions` and the index; its stored state is untouched (the new owner
        loads it). False when it is not this hub's session for its client id (any more).
        """
        if self.sessions.get(session.client_id) is not session:
            return False
        del self.sessions[session.client_id]
        for topic_filter in session.subscriptions:
            self.index.remove(session.client_id, topic_filter)
        return True

    def evict(self, session: Session, reason: str, *, will: bool = False) -> bool:
        """Close `session`'s connection at once, leaving the session to another owner (a take-over
        from another node, a fence): the connection detaches it first and, with `will`, publishes
        the client's will. False when the session has no connection.
        """
        conn = session.conn
        if not isinstance(conn, Evictable):
            return False
        conn.evict(reason, will=will)
        return True

    def hide_sessions(self, client_ids: Iterable[str]) -> list[Session]:
        """Take these sessions out of routing until `unhide_sessions` (synchronous use only, within
        one call: a message they already have must skip them, share groups included)."""
        hidden: list[Session] = []
        for client_id in client_ids:
            session = self.sessions.pop(client_id, None)
            if session is not None:
                hidden.append(session)
        return hidden

    def unhide_sessions(self, hidden: Iterable[Session]) -> None:
        """Put back the sessions `hide_sessions` took out."""
        for session in hidden:
            self.sessions[session.client_id] = session

    # -- loading -------------------------------------------------------------------------------
    def restore(self, sessions: list[StoredSession], retained: list[RetainedRecord]) -> None:
        """Rebuild state from durable storage after a start."""
        now = time.time()
        for stored in sessions:
            identity = (
                Identity(
                    user=stored.user,
                    client_id=stored.client_id,
                    kind=self.restored_kinds.get(stored.user, "user"),
                )
                if stored.user is not None  # "" is the anonymous user, who owns its sessions too
                else None
            )
            session = Session(
                client_id=stored.client_id,
                identity=identity,
                persistent=True,
                settings=self.settings,
                store=self.store,
            )
            session.restore(stored.queue, self._topic_cache)
            session.disconnected_at = float(stored.disconnected_ts) if stored.disconnected_ts else now
            for topic_filter, qos in stored.subscriptions.items():
                session.subscriptions[topic_filter] = qos
                if identity is not None:
                    # Without the roles yet (they come with the policy, then with the client's
                    # login): recompiled then; an empty scope meanwhile delivers nothing.
                    set_scope(session, topic_filter, self.scope_compiler.compile(identity, topic_filter))
                self.index.add(stored.client_id, topic_filter, qos)
            self.sessions[stored.client_id] = session
        for record in retained:
            self.retained[record.topic] = (record.payload, record.qos)
        log.info("restored %d persistent sessions and %d retained messages", len(sessions), len(retained))

    # -- routing -------------------------------------------------------------------------------
    def encode_topic(self, topic: str) -> bytes:
        enc = self._topic_cache.get(topic)
        if enc is None:
            if len(self._topic_cache) > 100_000:
                self._topic_cache.clear()  # bounded memo, not state
            enc = self._topic_cache[topic] = encode_str(topic)
        return enc

    def route(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        *,
        origin: Session | None = None,
        retain: bool = False,
        forwarded: bool = False,
        hold: Hold | None = None,
    ) -> bool:
        """Deliver a published message to every matching session and in-process listener.

        `retain` is the flag as published: bridge sessions get it as is (retain-as-published, so
        the remote broker keeps it retained too); other sessions get 0 (MQTT-3.3.1-9).

        `hold` is the publisher's PUBACK: in-process consumers and logic workers' sessions take
        it, and the publisher's connection sends the PUBACK once all of them settled it.

        Returns True when a durable write was queued (a persistent session got a QoS>0 copy):
        the publisher's acknowledgement must then wait for the next commit.
        """
        self.counters.published += 1
        offset = self.traffic.received(topic, qos)
        durable = False
        targets = self.index.match(topic)
        if targets:
            topic_enc = self.encode_topic(topic)
            sessions = self.sessions
            levels: list[str] | None = None
            for client_id, sub_qos in targets.items():
                session = sessions.get(client_id)
                if session is None:
                    continue
                if origin is not None and session is origin and session.is_bridge:
                    continue  # never echo a bridge's own messages back to it
                if session.wide:
                    # Only sessions holding a scope narrower than its filter pay for a look at
                    # their filters; exact scopes were decided at SUBSCRIBE (see _scopes.py).
                    if levels is None:
                        levels = topic.split("/")
                    sub_qos = delivery_qos(session, levels, sub_qos)
                    if sub_qos < 0:
                        self.counters.acl_denied_receive += 1
                        continue
                # MQTT-3.3.5-1 / 3.8.4-6: delivery QoS is min(publish QoS, subscription QoS).
                out_qos = qos if qos < sub_qos else sub_qos
                delivery = session.deliver(
                    topic, topic_enc, payload, out_qos, retain=retain and session.is_bridge, hold=hold
                )
                if delivery.refused:
                    self.counters.refused_full += 1
                    if self.counters.refused_full & (self.counters.refused_full - 1) == 0:
                        log.warning(
                            "worker session %r full: %d unheld messages refused so far",
                            client_id,
                            self.counters.refused_full,
                        )
                    continue
                if out_qos and session.persistent:
                    durable = True
                self.counters.delivered += 1
                self.traffic.messages_out[offset + out_qos] += 1
                if delivery.evicted:
                    self._overflowed(session, delivery.evicted)
        if self._has_listeners:
            for listener_id in self.listeners.match(topic):
                callback = self._listener_callbacks.get(listener_id)
                if callback is not None:
                    callback(topic, payload)
                    continue
                consumer = self._consumers.get(listener_id)
                if consumer is not None:
                    consumer(topic, payload, hold.take() if hold is not None else None)
        # A message that came from another node is not forwarded again (no loops).
        cluster = self._cluster
        if cluster is not None and not forwarded and cluster.forward(topic, payload, qos, retain):
            durable = True
        return durable

    def _is_connected(self, client_id: str) -> bool:
        session = self.sessions.get(client_id)
        return session is not None and session.conn is not None

    def _share_admits(self, client_id: str, share_filter: str, topic: str) -> bool:
        # A share group's message goes only to a member whose scope allows it.
        session = self.sessions.get(client_id)
        return session is not None and filter_allows(session, share_filter, topic)

    def _overflowed(self, session: Session, evicted: int) -> None:
        self.counters.evicted += evicted
        user = session.user
        if session.overflow_qid:
            return  # one pending notice (and one log line) per overflow episode, until it is read
        if user or session.evicted & (session.evicted - 1) == 0 or session.evicted == evicted:
            # Users: once per episode. Anonymous sessions (no inbox, no notice): at 1, 2, 4, 8...
            log.warning(
                "session %r queue full: %d oldest entries left the queue so far",
                session.client_id,
                session.evicted,
            )
        if not user:
            return
        topic = inbox_topic(user, InboxKind.EVENT)
        body = json.dumps(
            {
                "v": 1,
                "type": "queue_overflow",
                "dropped": session.evicted,
                "action": "sync",
                "message": "your offline queue was full; call sync to fetch what you missed",
            }
        ).encode()
        session.queue_notice(topic, self.encode_topic(topic), body)

    def retain(self, topic: str, payload: bytes, qos: int) -> bool:
        """Set or (empty payload) clear a retained message (MQTT-3.3.1-5, 3.3.1-10)."""
        if not payload:
            if self.retained.pop(topic, None) is not None and self.store is not None:
                self.store.set_retained(RetainedRecord(topic=topic, payload=b"", qos=0))
            return True
        if topic not in self.retained and len(self.retained) >= self.settings.max_retained:
            self.counters.retained_refused += 1
            log.warning(
                "retained message on %r refused: max_retained=%d reached", topic, self.settings.max_retained
            )
            return False
        self.retained[topic] = (payload, qos)
        if self.store is not None:
            self.store.set_retained(RetainedRecord(topic=topic, payload=payload, qos=qos))
        return True

    def send_retained(self, session: Session, topic_filter: str, granted_qos: int) -> None:
        """Send the retained messages matching a new subscription to that session only (MQTT-3.3.1-6)."""
        for topic in self.retained.match(topic_filter):
            payload, qos = self.retained[topic]
            if not filter_allows(session, topic_filter, topic):
                continue
            session.deliver(topic, self.encode_topic(topic), payload, min(qos, granted_qos), retain=True)

    # -- subscriptions -------------------------------------------------------------------------
    def subscribe(
        self, session: Session, topic_filter: str, qos: int, *, scope: ReceiveScope | None = None
    ) -> None:
        """Add or replace a subscription; `scope` is its receive scope (compiled when not given)."""
        identity = session.identity
        if identity is not None:
            set_scope(session, topic_filter, scope or self.scope_compiler.compile(identity, topic_filter))
        session.subscriptions[topic_filter] = qos
        self.index.add(session.client_id, topic_filter, qos)
        self._save(session)

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        if session.subscriptions.pop(topic_filter, None) is None:
            return False
        drop_scope(session, topic_filter)
        self.index.remove(session.client_id, topic_filter)
        self._save(session)
        return True

    def _save(self, session: Session) -> None:
        if session.persistent and self.store is not None:
            ts = int(session.disconnected_at) if session.disconnected_at else None
            self.store.save_session(
                session.client_id,
                user=session.user,
                subscriptions=dict(session.subscriptions),
                disconnected_ts=ts,
            )

    # -- sessions ------------------------------------------------------------------------------
    def open_session(self, *, client_id: str, identity: Identity, clean: bool) -> tuple[Session, bool]:
        """Find or create the session of a CONNECT; returns it and the session-present flag.

        The caller has already checked that an existing session belongs to the same user.
        """
        existing = self.sessions.get(client_id)
        if clean or (existing is not None and not existing.persistent):
            if existing is not None:
                self.drop_session(existing)
            existing = None
        if existing is not None:
            existing.identity = identity
            return existing, True
        session = Session(
            client_id=client_id,
            identity=identity,
            persistent=not clean,
            settings=self.settings,
            store=self.store,
        )
        self.sessions[client_id] = session
        self._save(session)
        return session, False

    def auto_subscribe(self, session: Session) -> None:
        """Apply server-managed subscriptions (DESIGN.md section 4).

        Also drops the group subscriptions of groups the user left while this session was away
        (or the broker was down), with their queued messages, before anything is resent.
        """
        if session.identity is None:
            return
        self._manage(session, self._managed_filters(session.identity))

    # -- server-managed subscriptions ----------------------------------------------------------
    def managed_filters(self, identity: Identity) -> dict[str, int]:
        """The server-managed subscriptions of `identity`: its inbox and its groups."""
        return self._managed_filters(identity)

    def _managed_filters(self, identity: Identity) -> dict[str, int]:
        wanted: dict[str, int] = {}
        if self.auto_subscriptions is not None:
            wanted.update(self.auto_subscriptions(identity))
        if self.member_groups is not None and identity.kind == "user" and identity.user:
            qos = min(1, self.settings.max_qos)
            for group in self.member_groups(identity.user):
                wanted.setdefault(group_filter(group), qos)
        return wanted

    def _manage(self, session: Session, wanted: dict[str, int]) -> None:
        for topic_filter, qos in wanted.items():
            if session.subscriptions.get(topic_filter) != qos:
                self.subscribe(session, topic_filter, qos)
        identity = session.identity
        if self.member_groups is None or identity is None or identity.kind != "user":
            return
        keep = {group for f in wanted if (group := group_of(f)) is not None}
        stale = {group for f in session.subscriptions if (group := group_of(f)) is not None} - keep
        for group in sorted(stale):
            self.revoke(session, group_filter(group))

    def refresh_managed(self, users: Collection[str]) -> None:
        """Bring the server-managed subscriptions of every session of `users` in line, at once.

        Live and persistent (disconnected) sessions alike: a user who joined a group is
        subscribed to its `g/{group}/#`; one who left loses that subscription, any narrower one
        it made in that group, and every queued message of the group (see `revoke`). The
        embedded server registers this as a listener of its `MembershipIndex`.
        """
        if not users or (self.auto_subscriptions is None and self.member_groups is None):
            return
        affected = set(users)
        wanted_by_user: dict[str, dict[str, int]] = {}
        for session in list(self.sessions.values()):
            identity = session.identity
            if identity is None or identity.kind != "user" or identity.user not in affected:
                continue
            wanted = wanted_by_user.get(identity.user)
            if wanted is None:
                wanted = wanted_by_user[identity.user] = self._managed_filters(identity)
            self._manage(session, wanted)

    def set_user_filters(
        self, user: str, *, add: Iterable[tuple[str, int]] = (), remove: Iterable[str] = ()
    ) -> int:
        """Subscribe every session of `user` to `add` and revoke `remove` (see `revoke`).

        Returns the number of sessions changed (live and persistent ones).
        """
        adds, removes = list(add), list(remove)
        changed = 0
        for session in list(self.sessions.values()):
            if session.user != user:
                continue
            changed += 1
            for topic_filter, qos in adds:
                if session.subscriptions.get(topic_filter) != qos:
                    self.subscribe(session, topic_filter, qos)
            for topic_filter in removes:
                self.revoke(session, topic_filter)
        return changed

    def revoke(self, session: Session, topic_filter: str) -> int:
        """Remove `topic_filter` and every narrower subscription of `session`; purge its queue.

        Queued messages matching `topic_filter` leave the queue (and the durable store): those
        not yet sent, and, when the session is disconnected, those sent but unacknowledged,
        which would otherwise be resent on reconnect. On a live connection the in-flight ones
        are already on the wire and keep their packet ids until acknowledged. Returns the
        number of messages purged.
        """
        for existing in [f for f in session.subscriptions if filter_is_subset(f, topic_filter)]:
            self.unsubscribe(session, existing)
        doomed = [m for m in session.pending if topic_matches(topic_filter, m.topic)]
        if session.conn is None:
            for pid, msg in list(session.inflight.items()):
                if not msg.released and topic_matches(topic_filter, msg.topic):
                    del session.inflight[pid]
                    doomed.append(msg)
        if not doomed:
            return 0
        gone = {msg.qid for msg in doomed}
        session.pending = deque(m for m in session.pending if m.qid not in gone)
        for msg in doomed:
            session._forget(msg)  # queue, byte count and durable store, as an acknowledgement does
        self.committer.kick()
        log.info("session %r: %d queued messages of %r purged", session.client_id, len(doomed), topic_filter)
        return len(doomed)

    # -- receive scopes ------------------------------------------------------------------------
    def refresh_scopes(self, session: Session, *, drop_empty: bool, only_dynamic: bool = False) -> list[str]:
        """Compile `session`'s scopes again after a rule, role or membership change.

        With `drop_empty`, a subscription whose scope is now empty is removed (it could deliver
        nothing). When a scope changed, queued messages no subscription may deliver any more
        leave the queue (as in `revoke`). Returns the filters removed.
        """
        if session.identity is None or not session.subscriptions:
            return []
        empty, changed = recompile(self.scope_compiler, session, only_dynamic=only_dynamic)
        removed: list[str] = []
        if drop_empty:
            for topic_filter in empty:
                if self.unsubscribe(session, topic_filter):
                    removed.append(topic_filter)
        if changed:
            self._purge_unscoped(session)
        return removed

    def _purge_unscoped(self, session: Session) -> None:
        doomed = [m for m in session.pending if m.hold is None and not any_allows(session, m.topic)]
        if session.conn is None:
            for pid, msg in list(session.inflight.items()):
                if not msg.released and msg.hold is None and not any_allows(session, msg.topic):
                    del session.inflight[pid]
                    doomed.append(msg)
        if not doomed:
            return
        gone = {msg.qid for msg in doomed}
        session.pending = deque(m for m in session.pending if m.qid not in gone)
        for msg in doomed:
            session._forget(msg)
        self.committer.kick()
        log.info("session %r: %d queued messages no longer allowed purged", session.client_id, len(doomed))

    def _membership_changed(self, users: frozenset[str]) -> None:
        for session in users_sessions(list(self.sessions.values()), users):
            self.refresh_scopes(session, drop_empty=session.conn is not None, only_dynamic=True)

    def close(self) -> None:
        """Stop following the membership lookup (the broker stops)."""
        self._unwatch()

    def connected(self, session: Session, conn: Writer) -> None:
        session.attach(conn)
        for observer in self.observers:
            observer.session_connected(session)

    def disconnected(self, session: Session) -> None:
        """The session's connection went away (any reason)."""
        session.detach(time.time())
        for observer in self.observers:
            observer.session_disconnected(session)
        if session.is_service:
            self._hand_over_held(session)
        if session.persistent:
            self._save(session)
        else:
            self.drop_session(session)

    def _hand_over_held(self, session: Session) -> None:
        """A logic worker left: give its held requests to another connected member of its share.

        A request delivered through `$share/{group}/...` belongs to the group, not to one
        worker: another connected member takes it (and the hold), so its sender's PUBACK does
        not wait for this worker to come back. A worker's plain subscription keeps its requests
        (persistent: redelivered when it reconnects; clean: failed, the senders resend).
        """
        shares = [f for f in session.subscriptions if parse_shared(f) is not None]
        if not shares:
            return
        moved = 0
        for msg in session.held():
            if msg.released:
                continue  # QoS 2 past PUBREC: the worker has it; only its PUBCOMP is missing
            target = self._other_member(session, shares, msg.topic)
            if target is None:
                continue
            hold = msg.hold
            session.release_held(msg)
            target.deliver(msg.topic, msg.topic_enc, msg.payload, msg.qos, hold=hold)
            if hold is not None:
                hold.settle()  # the target took it; this session's share of the hold ends
            moved += 1
        if moved:
            self.committer.kick()
            log.info("worker %r left: %d held requests handed to other workers", session.client_id, moved)

    def _other_member(self, session: Session, shares: list[str], topic: str) -> Session | None:
        for share_filter in shares:
            shared = parse_shared(share_filter)
            if shared is None or not topic_matches(shared[1], topic):
                continue
            for client_id in self.index.share_groups().get(share_filter, ()):
                other = self.sessions.get(client_id)
                if (
                    other is not None
                    and other is not session
                    and other.conn is not None
                    and filter_allows(other, share_filter, topic)
                ):
                    return other
        return None

    def drop_session(self, session: Session) -> None:
        """Forget a session, its subscriptions and queue."""
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        for topic_filter in session.subscriptions:
            self.index.remove(session.client_id, topic_filter)
        session.subscriptions.clear()
        session.scopes.clear()
        session.wide = ()
        failed = session.fail_held()
        if failed:
            log.warning(
                "session %r dropped with %d held requests: their senders resend", session.client_id, failed
            )
        if session.persistent and self.store is not None:
            self.store.delete_session(session.client_id)

    def expire_sessions(self, now: float) -> int:
        """Drop persistent sessions disconnected for longer than `session_expiry_s`."""
        limit = now - self.settings.session_expiry_s
        stale = [
            s
            for s in self.sessions.values()
            if s.conn is None and s.disconnected_at is not None and s.disconnected_at < limit
        ]
        for session in stale:
            log.info("session %r expired", session.client_id)
            self.drop_session(session)
        return len(stale)

    # -- in-process listeners (BrokerPort) -----------------------------------------------------
    def attach_listener(
        self, topic_filter: str, callback: Callable[[str, bytes], None]
    ) -> Callable[[], None]:
        listener_id = next(self._listener_ids)
        self._listener_callbacks[listener_id] = callback
        self._listener_callbacks_changed()
        self.listeners.add(listener_id, topic_filter, 2)

        def detach() -> None:
            self._listener_callbacks.pop(listener_id, None)
            self.listeners.remove(listener_id, topic_filter)
            self._listener_callbacks_changed()

        return detach

    def attach_consumer(self, topic_filter: str, callback: ConsumerCallback) -> Callable[[], None]:
        """Like `attach_listener`, for a consumer that takes the publisher's hold (see route)."""
        listener_id = next(self._listener_ids)
        self._consumers[listener_id] = callback
        self._listener_callbacks_changed()
        self.listeners.add(listener_id, topic_filter, 2)

        def detach() -> None:
            self._consumers.pop(listener_id, None)
            self.listeners.remove(listener_id, topic_filter)
            self._listener_callbacks_changed()

        return detach

    def _listener_callbacks_changed(self) -> None:
        # route() skips the listener index while no listener or consumer exists.
        self._has_listeners = bool(self._listener_callbacks or self._consumers)

    # -- back-pressure (HoldCounter) -----------------------------------------------------------
    def hold_opened(self) -> None:
        self.held += 1

    def hold_durable_ns(self, elapsed_ns: int) -> None:
        self.traffic.durable_latency.observe_ns(elapsed_ns)

    def hold_closed(self) -> None:
        self.held -= 1
        if self._paused and self.held <= self.settings.max_held_uplinks * 9 // 10:
            paused, self._paused = self._paused, set()
            for reader in paused:
                reader.resume_publishing()

    def saturated(self, reader: Reader) -> bool:
        """Whether too many publishes are held; if so `reader` is resumed when enough settle."""
        if self.held < self.settings.max_held_uplinks:
            return False
        self._paused.add(reader)
        return True

    def forget_reader(self, reader: Reader) -> None:
        self._paused.discard(reader)

    def publish_local(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> None:
        if retain:
            self.retain(topic, payload, qos)
        if self.route(topic, payload, qos, retain=retain):
            self.committer.kick()


class AckWaiter(Protocol):
    """A connection holding acknowledgements until a commit generation is durable.

    It must check `Committer.lost` for the generation of each acknowledgement it releases.
    """

    def release_acks(self, committed: int) -> None: ...


class Committer:
    """Flushes the session store in batches and releases acknowledgements that waited for it.

    `generation` is the commit that will include writes queued now; a PUBACK tagged with it is
    sent once `committed >= tag`. One flush covers every write queued before it started.
    """

    def __init__(self, *, store: SessionStore | None) -> None:
        self._store = store
        self.generation = 1
        self.committed = 0
        self._waiters: set[AckWaiter] = set()
        self._wake = asyncio.Event()
        # Generations whose flush lost writes (disk full, I/O error): an acknowledgement tagged
        # with one of them must never leave. Bounded: a connection waits at most a few of them.
        self.lost: deque[int] = deque(maxlen=1024)
        self.failures = 0
        self._failing = False

    @property
    def durable(self) -> bool:
        return self._store is not None

    def wait(self, waiter: AckWaiter) -> int:
        """Register `waiter` for the next commit; returns the generation tag to wait for."""
        self._waiters.add(waiter)
        self._wake.set()
        return self.generation

    def kick(self) -> None:
        """Ask for a commit soon without waiting for it (writes nobody acknowledges yet)."""
        self._wake.set()

    def forget(self, waiter: AckWaiter) -> None:
        self._waiters.discard(waiter)

    async def run(self) -> None:
        """Commit loop; runs until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.commit()

    async def commit(self) -> None:
        """Flush everything queued so far and release the waiting acknowledgements."""
        generation = self.generation
        self.generation += 1
        if self._store is not None:
            try:
                await self._store.flush()
            except StorageError as exc:
                # The writes of this generation are lost: the acknowledgements that waited for
                # them are withheld (their clients resend); the broker itself keeps running.
                self.failures += 1
                self.lost.append(generation)
                if not self._failing:
                    self._failing = True
                    log.error("session store cannot commit (%s): acknowledgements needing it withheld", exc)
            else:
                if self._failing:
                    self._failing = False
                    log.warning("session store commits again (%d failed commits meanwhile)", self.failures)
        self.committed = generation
        waiters = list(self._waiters)
        self._waiters.clear()
        for waiter in waiters:
            waiter.release_acks(generation)
