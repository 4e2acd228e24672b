"""The routing core: sessions, the subscription index, retained messages, in-process listeners.

Synchronous by design: a PUBLISH is routed to every matching session within one call, with no
task per message. Durable writes (persistent session queues, retained messages) are queued on the
`SessionStore`; `Committer` flushes them in batches and releases the acknowledgements that
depended on them, so a publisher's PUBACK is sent only once its message is safe on disk.

`Hub` is this module's core plus one mixin per concern: `ManagedSubscriptions` (`_managed.py`:
inbox and group subscriptions, revocations, scope refreshes), `Fanout` (`_fanout.py`: in-process
listeners and consumers, holds and back-pressure, a leaving worker's held requests) and
`ClusterSessions` (`_takeover.py`: the cluster port, take-over and hand-over); `Committer` is in
`_committer.py`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from mqim._util import Deadlines, worth_logging
from mqim.acl import AclEngine, Identity, IdentityKind, ReceiveScope
from mqim.broker._committer import Committer
from mqim.broker._counting import Counters
from mqim.broker._fanout import ConsumerCallback as ConsumerCallback  # re-exported for the broker
from mqim.broker._fanout import Fanout, Reader
from mqim.broker._holds import Hold
from mqim.broker._managed import ManagedSubscriptions
from mqim.broker._outgoing import Writer
from mqim.broker._ports import ClusterPort, MembershipView
from mqim.broker._retained import RetainedIndex
from mqim.broker._retained_quota import BY_TOPIC, SERVER, RetainedQuota
from mqim.broker._router import SubscriptionIndex
from mqim.broker._scopes import (
    ScopeCompiler,
    delivery_qos,
    drop_scope,
    filter_allows,
    set_scope,
)
from mqim.broker._session import Session
from mqim.broker._settings import BrokerSettings
from mqim.broker._shared_subs import SharedIndex
from mqim.broker._takeover import ClusterSessions
from mqim.broker._traffic import Traffic
from mqim.mqtt import encode_str
from mqim.storage import RetainedRecord, SessionStore, StoredSession

log = logging.getLogger("mqim.broker")


class HubObserver(Protocol):
    """Hooks for features built on broker events (presence, delivery receipts). Synchronous."""

    def session_connected(self, session: Session) -> None: ...

    def session_disconnected(self, session: Session) -> None: ...

    def delivered(self, session: Session, topic: str, payload: bytes) -> None: ...


class Hub(ManagedSubscriptions, Fanout, ClusterSessions):
    """Sessions and routing of one broker node.

    Args:
        settings: Limits.
        acl: The ACL engine (cached, synchronous decisions).
        store: Durable session state; None keeps everything in memory (tests of the hub only).
        auto_subscriptions: Filters (with QoS) a user's session is subscribed to by the server.
        membership: The groups of each user: with it, each user session is subscribed to
            `im/v1/g/{group}/#` of its groups and loses (with the queued messages) those of
            groups it left (docs/architecture.md, "IM features").
        restored_kinds: Account kinds of the non-user accounts (bridge, service) by id: the
            session store keeps only the user name, and a restored bridge session must keep
            receiving its namespace while it is away.
    """

    def __init__(
        self,
        *,
        settings: BrokerSettings,
        acl: AclEngine,
        store: SessionStore | None,
        auto_subscriptions: Callable[[Identity], Iterable[tuple[str, int]]] | None = None,
        membership: MembershipView | None = None,
        restored_kinds: Mapping[str, IdentityKind] | None = None,
    ) -> None:
        self.settings = settings
        self.acl = acl
        self.store = store
        self.sessions: dict[str, Session] = {}
        # Plain filters plus `$share/{group}/{filter}` (one member per group, see _shared_subs.py).
        self.index = SharedIndex()
        self.index.connected = self._is_connected
        self.index.admits = self._share_admits
        # Receive scopes (docs/architecture.md, "Security"): compiled with the engine's rules and membership;
        # a membership change recompiles the dynamic scopes of the users it names.
        self.scope_compiler = ScopeCompiler(acl=acl)
        self._unwatch = self.scope_compiler.watch(self._membership_changed)
        self.retained = RetainedIndex()
        # Persistent sessions without a connection, by expiry deadline (see expire_sessions).
        self._expiry: Deadlines[str] = Deadlines()
        self.quota = RetainedQuota(
            max_client=settings.max_retained,
            max_per_account=settings.max_retained_per_account,
            max_server=settings.max_server_retained,
        )
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
        self.restored_kinds: Mapping[str, IdentityKind] = dict(restored_kinds or {})
        self.membership = membership
        # Cluster mode: the other nodes (forwarding, client-id claims, route and share reports).
        self._cluster: ClusterPort | None = None

    def add_observer(self, observer: HubObserver) -> None:
        """Tell `observer` of session connects, disconnects and acknowledged deliveries."""
        self.observers.append(observer)

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
            self._expire_later(session)
        for record in retained:
            self.retained[record.topic] = (record.payload, record.qos)
            self.quota.set(record.topic, BY_TOPIC)  # the setter is not stored: known by its topic
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

    def retain(self, topic: str, payload: bytes, qos: int, *, by: str | None = BY_TOPIC) -> bool:
        """Set or (empty payload) clear a retained message (MQTT-3.3.1-5, 3.3.1-10).

        `by` is the account that set it (`""` for a client without one), `SERVER` (None) for the
        broker's own (presence, `$SYS`), or `BY_TOPIC` when unknown (forwarded by another node):
        each is bounded apart (`RetainedQuota`). Returns False when a limit refused it.
        """
        if not payload:
            self.quota.clear(topic)
            if self.retained.pop(topic, None) is not None and self.store is not None:
                self.store.set_retained(RetainedRecord(topic=topic, payload=b"", qos=0))
            return True
        refusal = self.quota.refusal(topic, by)
        if refusal is not None:
            self.counters.retained_refused += 1
            if worth_logging(self.counters.retained_refused):
                log.warning(
                    "retained message on %r refused: %s (%d refused so far)",
                    topic[:200],
                    refusal,
                    self.counters.retained_refused,
                )
            return False
        self.quota.set(topic, by)
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

    def close(self) -> None:
        """Stop following the membership lookup (the broker stops)."""
        self._unwatch()

    def connected(self, session: Session, conn: Writer) -> None:
        session.attach(conn)
        self._expiry.discard(session.client_id)
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
            self._expire_later(session)
        else:
            self.drop_session(session)

    def _expire_later(self, session: Session) -> None:
        if session.disconnected_at is not None:
            self._expiry.set(session.client_id, session.disconnected_at + self.settings.session_expiry_s)

    def drop_session(self, session: Session) -> None:
        """Forget a session, its subscriptions and queue."""
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
            self._expiry.discard(session.client_id)
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
        """Drop persistent sessions disconnected for longer than `session_expiry_s`.

        Only sessions whose expiry has come are looked at (a heap by deadline, set when a
        session is left without a connection): the cost is what expires, not what exists.
        """
        expiry = self.settings.session_expiry_s
        expired = 0
        for client_id in self._expiry.pop_due(now):
            session = self.sessions.get(client_id)
            if session is None or session.conn is not None or session.disconnected_at is None:
                continue  # gone, back, or handed to another node
            deadline = session.disconnected_at + expiry
            if deadline < now:
                log.info("session %r expired", session.client_id)
                self.drop_session(session)
                expired += 1
            else:
                self._expiry.set(client_id, deadline)
        return expired

    def publish_local(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> None:
        if retain:
            self.retain(topic, payload, qos, by=SERVER)
        if self.route(topic, payload, qos, retain=retain):
            self.committer.kick()
