"""One MQTT session: subscriptions, the outgoing queue and the in-flight window.

The queue is the session's list of QoS 1/2 messages not yet acknowledged by the client. Each
entry is either pending (not yet sent on the current connection) or in flight (sent, waiting for
PUBACK / PUBREC / PUBCOMP). Nothing leaves the queue because of a timer: an in-flight message is
sent again with DUP=1 when a persistent session reconnects (MQTT-4.4.0-1), and only the client's
acknowledgement or the queue bound removes it. When the bound is reached the oldest pending
entries leave first and the session is told to `sync` (the messages remain in storage).

Synchronous: the connection and the hub call into it from the event loop.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from mqim.acl import Identity, ReceiveScope
from mqim.broker._exceptions import ProtocolViolation
from mqim.broker._holds import Hold
from mqim.broker._outgoing import REFUSED_FULL, TAKEN, Delivery, Outgoing, Writer
from mqim.mqtt import PUBREL, encode_ack, encode_publish, encode_str
from mqim.storage import QueuedMessage, SessionStore

if TYPE_CHECKING:
    from mqim.broker._settings import BrokerSettings


_NO_PENDING: deque[Outgoing] = deque()
"""Placeholder `Session.pending` of sessions that never queued anything; always empty."""
_NO_IDS: set[int] = set()
"""Placeholder `Session.incoming_qos2` until the first QoS 2 publish; always empty."""


class Session:
    """State of one client id, connected or not."""

    __slots__ = (
        "_next_pid",
        "_next_qid",
        "client_id",
        "conn",
        "disconnected_at",
        "dropped_qos0",
        "evicted",
        "identity",
        "incoming_qos2",
        "inflight",
        "is_bridge",
        "overflow_qid",
        "pending",
        "persistent",
        "queue",
        "queued_bytes",
        "scopes",
        "settings",
        "store",
        "subscriptions",
        "wide",
    )

    def __init__(
        self,
        *,
        client_id: str,
        identity: Identity | None,
        persistent: bool,
        settings: BrokerSettings,
        store: SessionStore | None,
    ) -> None:
        self.client_id = client_id
        self.identity = identity
        self.persistent = persistent
        self.settings = settings
        self.store = store if persistent else None
        self.subscriptions: dict[str, int] = {}
        # What each subscription may deliver (see _scopes.py); `wide` lists the filters whose
        # scope is not the whole filter: only deliveries to such sessions look at scopes.
        self.scopes: dict[str, ReceiveScope] = {}
        self.wide: tuple[str, ...] = ()
        self.conn: Writer | None = None
        self.queue: dict[int, Outgoing] = {}
        # Shared empty placeholders until first use: an idle session then costs no deque (624 B)
        # and no set. Only `_pend` and `note_incoming_qos2` replace them; never mutate in place.
        self.pending: deque[Outgoing] = _NO_PENDING
        self.inflight: dict[int, Outgoing] = {}
        self.incoming_qos2: set[int] = _NO_IDS
        self.queued_bytes = 0
        self.disconnected_at: float | None = None
        self.dropped_qos0 = 0
        self.evicted = 0
        self.overflow_qid = 0  # qid of the queued "please sync" event, 0 when none is queued
        self.is_bridge = False
        self._next_qid = 1
        self._next_pid = 1

    @property
    def user(self) -> str | None:
        return self.identity.user if self.identity is not None else None

    # -- delivery ------------------------------------------------------------------------------
    @property
    def is_service(self) -> bool:
        """Whether this is a logic worker's session (a service account)."""
        identity = self.identity
        return identity is not None and identity.kind == "service"

    def deliver(
        self,
        topic: str,
        topic_enc: bytes,
        payload: bytes,
        qos: int,
        *,
        retain: bool = False,
        hold: Hold | None = None,
    ) -> Delivery:
        """Deliver or queue one message at the already-downgraded `qos`.

        A service session takes `hold` (the sender's PUBACK then waits for this session's
        acknowledgement) and never evicts or refuses a held message: what is held is bounded by
        the broker's back-pressure on the senders instead. Other sessions ignore `hold`.

        Returns what happened (`Delivery`): the entries evicted to respect the queue bounds
        (the caller then tells the session to sync), or a refusal when a service session's full
        queue did not take a message nobody holds. Durable writes are queued on the session store.
        """
        conn = self.conn
        if qos == 0:
            # QoS 0 is at most once: it is not queued for an absent or congested client.
            if conn is not None and conn.writable:
                conn.write(encode_publish(topic=topic_enc, payload=payload, qos=0, retain=retain))
            else:
                self.dropped_qos0 += 1
            return TAKEN
        if conn is None and not self.persistent:
            return TAKEN
        service = self.is_service
        if service:
            if hold is not None:
                hold = hold.take()
            elif self._full(len(payload) + len(topic_enc)):
                # A logic worker's queue holds requests nobody else has: evicting the oldest
                # would lose them. A message nobody holds is refused instead (and counted).
                return REFUSED_FULL
        else:
            hold = None
        msg = Outgoing(
            qid=self._next_qid,
            topic=topic,
            topic_enc=topic_enc,
            payload=payload,
            qos=qos,
            retain=retain,
            hold=hold,
        )
        self._next_qid += 1
        self.queue[msg.qid] = msg
        self._pend(msg)
        self.queued_bytes += msg.size
        if self.store is not None:
            self.store.enqueue(
                self.client_id, QueuedMessage(qid=msg.qid, topic=topic, payload=payload, qos=qos)
            )
        evicted = 0 if service else self._enforce_bounds()
        self.pump()
        return TAKEN if not evicted else Delivery(evicted=evicted)

    def queue_notice(self, topic: str, topic_enc: bytes, payload: bytes) -> None:
        """Queue the "please sync" notice of an overflow, at QoS 1 (one at a time).

        The notice is the one entry allowed beyond the queue bounds and is never evicted by them:
        the session keeps its newest `max_queue_messages` messages and learns it must `sync`.
        """
        if self.conn is None and not self.persistent:
            return
        msg = Outgoing(
            qid=self._next_qid, topic=topic, topic_enc=topic_enc, payload=payload, qos=1, retain=False
        )
        self._next_qid += 1
        self.queue[msg.qid] = msg
        self._pend(msg)
        self.queued_bytes += msg.size
        self.overflow_qid = msg.qid
        if self.store is not None:
            self.store.enqueue(
                self.client_id, QueuedMessage(qid=msg.qid, topic=topic, payload=payload, qos=1)
            )
        self.pump()

    def _full(self, size: int) -> bool:
        limits = self.settings
        return (
            len(self.queue) >= limits.max_queue_messages or self.queued_bytes + size > limits.max_queue_bytes
        )

    def _enforce_bounds(self) -> int:
        limits = self.settings
        notice = self.queue.get(self.overflow_qid) if self.overflow_qid > 0 else None
        spare_count = 0 if notice is None else 1
        spare_bytes = 0 if notice is None else notice.size
        pending = self.pending
        kept: Outgoing | None = None
        evicted: list[int] = []
        while pending and (
            len(self.queue) - spare_count > limits.max_queue_messages
            or self.queued_bytes - spare_bytes > limits.max_queue_bytes
        ):
            old = pending.popleft()
            if old is notice:
                kept = old  # the overflow notice stays, at its place
                continue
            del self.queue[old.qid]
            self.queued_bytes -= old.size
            evicted.append(old.qid)
        if kept is not None:
            pending.appendleft(kept)
        if evicted:
            self.evicted += len(evicted)
            if self.store is not None:
                self.store.dequeue(self.client_id, evicted)
        return len(evicted)

    def _pend(self, msg: Outgoing) -> None:
        if self.pending is _NO_PENDING:
            self.pending = deque()
        self.pending.append(msg)

    def note_incoming_qos2(self, packet_id: int) -> None:
        """Remember an inbound QoS 2 packet id until its PUBREL (exactly-once, MQTT-4.3.3)."""
        if self.incoming_qos2 is _NO_IDS:
            self.incoming_qos2 = set()
        self.incoming_qos2.add(packet_id)

    def pump(self) -> None:
        """Send pending messages while the client is writable and the window has room."""
        conn = self.conn
        if conn is None:
            return
        pending = self.pending
        inflight = self.inflight
        window = self.settings.max_inflight_service if self.is_service else self.settings.max_inflight
        while pending and conn.writable and len(inflight) < window:
            msg = pending.popleft()
            pid = self._alloc_pid()
            msg.pid = pid
            inflight[pid] = msg
            conn.write(
                encode_publish(
                    topic=msg.topic_enc, payload=msg.payload, qos=msg.qos, retain=msg.retain, packet_id=pid
                )
            )

    def _alloc_pid(self) -> int:
        pid = self._next_pid
        inflight = self.inflight
        # The window (<= 65535) guarantees a free id exists.
        while pid in inflight:
            pid = pid % 65535 + 1
        self._next_pid = pid % 65535 + 1
        return pid

    # -- acknowledgements ----------------------------------------------------------------------
    def on_puback(self, pid: int) -> Outgoing | None:
        """QoS 1 delivery acknowledged: drop it from the queue. Returns the message, if known.

        An id not in flight is ignored (a late duplicate after a resend); a PUBACK for a QoS 2
        delivery is a protocol violation (MQTT-4.3.3, MQTT-4.8.0-1: the connection closes).
        """
        msg = self.inflight.get(pid)
        if msg is None:
            return None
        if msg.qos != 1:
            raise ProtocolViolation(f"PUBACK for QoS 2 delivery {pid} (MQTT-4.3.3-1)")
        del self.inflight[pid]
        self._forget(msg)
        self._settle(msg)
        self.pump()
        return msg

    def on_pubrec(self, pid: int) -> Outgoing | None:
        """QoS 2 step 2: the client has the message; answer PUBREL and keep the id until PUBCOMP.

        A PUBREC for a QoS 1 delivery is a protocol violation (MQTT-4.3.2, MQTT-4.8.0-1); one for
        an id not in flight (a late duplicate) still gets its PUBREL so the client can finish.
        """
        msg = self.inflight.get(pid)
        if msg is not None and msg.qos != 2:
            raise ProtocolViolation(f"PUBREC for QoS 1 delivery {pid} (MQTT-4.3.2-1)")
        if self.conn is not None:
            self.conn.write(encode_ack(PUBREL, pid))
        if msg is None or msg.released:
            return None
        msg.released = True
        self._forget(msg)
        return msg

    def on_pubcomp(self, pid: int) -> None:
        """QoS 2 step 4: the packet id is free again.

        A PUBCOMP for a QoS 1 delivery, or before its PUBREC, is a protocol violation
        (MQTT-4.3.3-1, MQTT-4.8.0-1).
        """
        msg = self.inflight.get(pid)
        if msg is None:
            return
        if msg.qos != 2 or not msg.released:
            raise ProtocolViolation(f"PUBCOMP for delivery {pid} without PUBREC (MQTT-4.3.3-1)")
        del self.inflight[pid]
        self._settle(msg)  # a worker completes QoS 2 only once it has processed the message
        self.pump()

    @staticmethod
    def _settle(msg: Outgoing) -> None:
        hold = msg.hold
        if hold is not None:
            msg.hold = None
            hold.settle()

    def held(self) -> list[Outgoing]:
        """The queued messages whose senders wait for this session (a logic worker's)."""
        return [msg for msg in self.queue.values() if msg.hold is not None] + [
            msg for msg in self.inflight.values() if msg.released and msg.hold is not None
        ]

    def release_held(self, msg: Outgoing) -> None:
        """Take a held message out of this session (it moves to another worker)."""
        if msg.pid and self.inflight.get(msg.pid) is msg:
            del self.inflight[msg.pid]
        elif msg in self.pending:
            self.pending = deque(m for m in self.pending if m is not msg)
        msg.hold = None
        self._forget(msg)

    def fail_held(self) -> int:
        """This session is going away with held messages: their senders must resend them."""
        failed = 0
        for msg in self.held():
            hold = msg.hold
            if hold is not None:
                msg.hold = None
                hold.fail()
                failed += 1
        return failed

    def _forget(self, msg: Outgoing) -> None:
        if self.queue.pop(msg.qid, None) is not None:
            self.queued_bytes -= msg.size
            if self.store is not None:
                self.store.dequeue(self.client_id, (msg.qid,))
        if msg.qid == self.overflow_qid:
            self.overflow_qid = 0

    # -- connection lifecycle ------------------------------------------------------------------
    def attach(self, conn: Writer) -> None:
        """A connection took this session: resend what was in flight (DUP=1), then pump."""
        self.conn = conn
        self.disconnected_at = None
        for pid, msg in self.inflight.items():
            if msg.released:
                conn.write(encode_ack(PUBREL, pid))
            else:
                # MQTT-4.4.0-1: resend unacknowledged PUBLISH packets with the same id and DUP set.
                conn.write(
                    encode_publish(
                        topic=msg.topic_enc,
                        payload=msg.payload,
                        qos=msg.qos,
                        retain=msg.retain,
                        dup=True,
                        packet_id=pid,
                    )
                )
        self.pump()

    def detach(self, now: float) -> None:
        """The connection went away; in-flight entries stay for redelivery on reconnect."""
        self.conn = None
        self.disconnected_at = now

    def restore(self, queued: list[QueuedMessage], topic_encoder: dict[str, bytes]) -> None:
        """Refill the queue from durable storage after a restart (retain flag is 0 on replay)."""
        for entry in queued:
            enc = topic_encoder.get(entry.topic)
            if enc is None:
                enc = topic_encoder[entry.topic] = encode_str(entry.topic)
            msg = Outgoing(
                qid=entry.qid,
                topic=entry.topic,
                topic_enc=enc,
                payload=entry.payload,
                qos=entry.qos,
                retain=False,
            )
            self.queue[msg.qid] = msg
            self._pend(msg)
            self.queued_bytes += msg.size
            self._next_qid = max(self._next_qid, entry.qid + 1)
