"""One client connection: MQTT 3.1.1 over an asyncio transport (TCP, TLS or WebSocket).

An `asyncio.Protocol` rather than stream reader/writer pairs: no task per connection, no task per
packet, small memory per idle client. Everything after CONNECT is handled synchronously in
`data_received`; only authentication awaits (in a named task owned by the broker).

Invalid input closes the connection and is logged (MQTT 3.1.1 has no negative acknowledgement):
stock amqtt instead kept a "zombie" that acknowledged and dropped everything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from mqim import mqtt as c
from mqim._util import SummaryLog, host_of
from mqim.acl import Identity
from mqim.broker._conn_io import HOLD_BACK, PAUSE_HELD, PAUSE_OWED
from mqim.broker._conn_state import State
from mqim.broker._exceptions import MalformedPacket, ProtocolViolation
from mqim.broker._handshake import ConnectHandshake
from mqim.broker._holds import Hold
from mqim.broker._host import ConnectionHost
from mqim.broker._retained_quota import account_of
from mqim.broker._session import Session
from mqim.broker._subscribe import grant_subscriptions
from mqim.broker._topics import check_filter, is_sys_topic, valid_publish_topic
from mqim.protocol import PREFIX, ErrorCode

__all__ = ["MqttConnection", "State", "is_sys_topic"]
# `State` (now in `_conn_state`) and `is_sys_topic` (`_topics`) keep their old import path.

log = logging.getLogger("mqim.broker.connection")
# Protocol-violation closes are aggregated per source address and reason (first occurrence,
# then a periodic summary): an attacker cannot fill the disk with log lines.
_violations = SummaryLog(logger=log, what="closed on a protocol violation", level=logging.WARNING)


_UP_PREFIX = f"{PREFIX}/up/"


class MqttConnection(ConnectHandshake):
    """The broker side of one client connection: the packets after CONNECT and their acknowledgements.

    Its CONNECT path is `ConnectHandshake` and its transport side `ConnectionIO`, its bases.

    Args:
        host: The broker that accepted the socket (`ConnectionHost`).
        listener: The name of the listener it came on.
    """

    # Slots: thousands of idle connections each pay for their attributes, not for a __dict__
    # (those the CONNECT path and the transport side set are slots of their classes).
    __slots__ = (
        "_backlog",
        "_clean_disconnect",
        "_deferred",
        "decoder",
        "host",
        "hub",
        "last_rx",
        "listener",
        "opened_at",
        "over_limit",
        "peer",
    )

    host: ConnectionHost[MqttConnection]

    def __init__(self, *, host: ConnectionHost[MqttConnection], listener: str) -> None:
        self.host = host
        self.hub = host.hub
        self.listener = listener
        self.state = State.AWAIT_CONNECT
        self.transport: asyncio.BaseTransport | None = None
        self.writable = True
        self.decoder = c.PacketDecoder(
            max_packet_bytes=host.settings.max_packet_bytes,
            hard_limit_bytes=host.settings.max_publish_discard_bytes,
        )
        self.session: Session | None = None
        self.identity: Identity | None = None
        self.connect: c.Connect | None = None
        self.keepalive = 0.0
        self.opened_at = time.monotonic()
        self.last_rx = self.opened_at
        self.peer: str = "?"
        self.over_limit = False
        self._backlog: list[c.Frame] = []
        self._out: list[bytes] | None = None  # bytes written this loop tick, sent by _flush
        # Acknowledgements waiting, in arrival order: (commit generation or 0, hold or None, bytes).
        self._deferred: deque[tuple[int, Hold | None, bytes]] | None = None
        self._read_paused = 0  # why reading is paused: bits PAUSE_WRITE, PAUSE_HELD, PAUSE_OWED
        self._clean_disconnect = False
        self.closing = False
        self.close_reason = ""

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
        # Counted here and released exactly once in connection_lost, whatever happens between:
        # stock amqtt leaked slots when a CONNECT failed or the socket reset.
        self.over_limit = not self.host.connection_opened(self)

    def data_received(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        self.last_rx = time.monotonic()
        self.hub.traffic.bytes_received += len(data)
        try:
            if (
                self.state is State.AWAIT_CONNECT
                and not self.closing
                and not self.decoder.buffered
                and data[:1] != b"\x10"
            ):
                # Judge the very first byte: a socket that does not start with CONNECT is closed
                # now instead of holding a connection slot until the CONNECT timeout.
                raise ProtocolViolation("first packet is not CONNECT (MQTT-3.1.0-1)")
            frames = self.decoder.feed(data)
            if self.state is not State.CONNECTED:
                self._backlog.extend(frames)
                if self.state is State.AWAIT_CONNECT and self._backlog:
                    self._on_first_packet()
                return
            if self._backlog:
                self._backlog.extend(frames)  # behind frames held back by back-pressure
                return
            self._run_frames(frames)
        except ProtocolViolation as exc:
            self._violation(str(exc))

    def _run_frames(self, frames: list[c.Frame]) -> None:
        for index, (packet_type, flags, body) in enumerate(frames):
            if self.closing:
                return  # nothing is read after DISCONNECT or a violation
            if self._read_paused & HOLD_BACK:
                # Back-pressure: the rest of what was read waits (one read's worth at most).
                self._backlog.extend(frames[index:])
                return
            self._dispatch(packet_type, flags, body)

    def _run_backlog(self) -> None:
        if self.state is not State.CONNECTED or self._read_paused & HOLD_BACK or not self._backlog:
            return
        backlog, self._backlog = self._backlog, []
        try:
            self._run_frames(backlog)
        except ProtocolViolation as exc:
            self._violation(str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        was_connected = self.state is State.CONNECTED
        self.state = State.CLOSED
        self.hub.committer.forget(self)
        self.hub.forget_reader(self)
        session = self.session
        if was_connected and session is not None and session.conn is self:
            if not self._clean_disconnect:
                self.host.publish_will(self)
            self.hub.disconnected(session)
        self.host.connection_closed(self)

    def evict(self, reason: str, *, will: bool = False) -> None:
        """Abort at once, leaving the session to another owner (a cluster take-over or fence).

        The session is detached first, so this connection's `connection_lost` touches it no
        more; `will` publishes the client's will before (its session was taken over).
        """
        session = self.session
        if will:
            self.host.publish_will(self)
        self.session = None
        if session is not None:
            self.hub.disconnected(session)
        self.state = State.CLOSED
        self.close(reason, abort=True)

    def _violation(self, reason: str) -> None:
        self.hub.counters.protocol_errors += 1
        who = self.session.client_id if self.session else self.peer
        _violations.note(host_of(self.peer), reason, "closing %s: %s", who, reason)
        self.close(reason)

    # -- packets after CONNECT -----------------------------------------------------------------
    def _dispatch(self, packet_type: int, flags: int, body: bytes | c.Oversize) -> None:
        session = self.session
        assert session is not None
        if isinstance(body, c.Oversize):
            self._on_oversize(body)
            return
        if packet_type == c.PUBLISH:
            self._on_publish(session, c.decode_publish(flags, body))
        elif packet_type == c.PUBACK:
            msg = session.on_puback(c.decode_ack(packet_type, flags, body))
            if msg is not None and self.hub.observers:
                for observer in self.hub.observers:
                    observer.delivered(session, msg.topic, msg.payload)
        elif packet_type == c.PUBREC:
            msg = session.on_pubrec(c.decode_ack(packet_type, flags, body))
            if msg is not None and self.hub.observers:
                for observer in self.hub.observers:
                    observer.delivered(session, msg.topic, msg.payload)
        elif packet_type == c.PUBCOMP:
            session.on_pubcomp(c.decode_ack(packet_type, flags, body))
        elif packet_type == c.PUBREL:
            pid = c.decode_ack(packet_type, flags, body)
            if pid in session.incoming_qos2:
                session.incoming_qos2.discard(pid)
            self._ack(c.encode_ack(c.PUBCOMP, pid), durable=False)
        elif packet_type == c.SUBSCRIBE:
            self._on_subscribe(session, *c.decode_subscribe(flags, body))
        elif packet_type == c.UNSUBSCRIBE:
            pid, filters = c.decode_unsubscribe(flags, body)
            for topic_filter in filters:
                check_filter(topic_filter, "UNSUBSCRIBE")
            for topic_filter in filters:
                self.hub.unsubscribe(session, topic_filter)
            self.write(c.encode_unsuback(pid))
        elif packet_type == c.PINGREQ:
            if flags or body:
                raise MalformedPacket("malformed PINGREQ")
            self.write(c.PINGRESP_BYTES)
        elif packet_type == c.DISCONNECT:
            if flags or body:
                raise MalformedPacket("malformed DISCONNECT")
            self._clean_disconnect = True  # MQTT-3.14.4-3: discard the will
            self.close("client disconnected")
        elif packet_type == c.CONNECT:
            raise ProtocolViolation("second CONNECT on one connection (MQTT-3.1.0-2)")
        else:
            raise MalformedPacket(f"packet type {packet_type} not allowed from a client")

    def _on_publish(self, session: Session, pub: c.Publish) -> None:
        topic = pub.topic
        if pub.dup and not pub.qos:
            raise ProtocolViolation("QoS 0 PUBLISH with DUP=1 (MQTT-3.3.1-2)")
        if not valid_publish_topic(topic):
            raise ProtocolViolation(f"invalid PUBLISH topic {topic!r} (MQTT-3.3.2-2, 4.7.1-1, 4.7.3-1)")
        if is_sys_topic(topic):
            # The server's own topics: a Mosquitto bridge's connection notice is recorded; any
            # other client PUBLISH there is acknowledged, dropped and counted, never routed.
            if not self.host.accept_special_publish(self, pub):
                self.host.dropped_sys_publish(self, topic)
            self._ack_publish(pub, durable=False)
            return
        identity = self.identity
        assert identity is not None
        verdict = self.host.admit_publish(self, pub)
        if verdict is not None:
            # Refused by ACL or a limit: dropped, counted, the user told; the PUBACK still goes out
            # because MQTT 3.1.1 has no negative acknowledgement.
            self._ack_publish(pub, durable=False)
            return
        hub = self.hub
        if pub.qos == 2:
            if pub.packet_id in session.incoming_qos2:
                self._ack_publish(pub, durable=False)  # a resend: exactly once, route nothing
                return
            if len(session.incoming_qos2) >= self.host.settings.max_inflight:
                raise ProtocolViolation("too many unreleased QoS 2 publishes")
            session.note_incoming_qos2(pub.packet_id or 0)
        # PUBACK means durably accepted (docs/architecture.md, "The broker"): consumers that must store the
        # message first (the logic service, a worker, a bridge outbox) take this hold.
        hold = Hold(waiter=self, counter=hub) if pub.qos else None
        durable = hub.route(topic, pub.payload, pub.qos, origin=session, retain=pub.retain, hold=hold)
        if pub.retain and hub.retain(topic, pub.payload, pub.qos, by=account_of(session.identity)):
            durable = durable or hub.store is not None
        if hold is not None and hold.failed:
            return  # a consumer refused it at once (hold_failed closed us): no PUBACK
        if hold is not None and hold.taken:
            self._ack_publish(pub, durable=durable, hold=hold)
            if hub.saturated(self):
                self._pause_reading(PAUSE_HELD)
        elif hold is not None and not durable and topic.startswith(_UP_PREFIX):
            # An IM request nobody took (no logic service attached, no worker session, not
            # durably forwarded to another cluster node's worker): a PUBACK would tell the client
            # it is stored. It is not acknowledged; the client resends it.
            self.host.no_consumer(self, topic)
            self.close("no logic service to take the request; reconnect and resend")
            return
        else:
            self._ack_publish(pub, durable=durable)
        deferred = self._deferred
        if deferred and len(deferred) >= self.host.settings.max_unacked_publishes:
            self._pause_reading(PAUSE_OWED)

    def _on_oversize(self, big: c.Oversize) -> None:
        """A PUBLISH above `max_packet_bytes` was read and discarded without buffering it.

        It is acknowledged (PUBACK / PUBREC) so a client that stores its QoS 1 messages moves
        on instead of sending it again after every reconnect, and the user is told `too_large`
        with the request id when the first bytes carry one. The connection stays open.
        """
        self.hub.counters.oversize_discarded += 1
        identity = self.identity
        assert identity is not None
        limit = self.host.settings.max_packet_bytes
        if identity.kind == "user":
            message = f"message of {big.length} bytes exceeds the {limit}-byte packet limit; it was discarded"
            self.host.tell_error(identity, big.payload_head, ErrorCode.TOO_LARGE, message)
        if big.qos == 1:
            self._ack(c.encode_ack(c.PUBACK, big.packet_id or 0), durable=False)
        elif big.qos == 2:
            self._ack(c.encode_ack(c.PUBREC, big.packet_id or 0), durable=False)

    def _ack_publish(self, pub: c.Publish, *, durable: bool, hold: Hold | None = None) -> None:
        if pub.qos == 1:
            self._ack(c.encode_ack(c.PUBACK, pub.packet_id or 0), durable=durable, hold=hold)
        elif pub.qos == 2:
            self._ack(c.encode_ack(c.PUBREC, pub.packet_id or 0), durable=durable, hold=hold)

    def _ack(self, data: bytes, *, durable: bool, hold: Hold | None = None) -> None:
        # Acknowledgements leave in the order their packets arrived (MQTT-4.6.0-2), so once one
        # waits for a commit or a hold, those behind it wait too.
        committer = self.hub.committer
        durable = durable and committer.durable
        if durable or hold is not None or self._deferred:
            if self._deferred is None:
                self._deferred = deque()
            self._deferred.append((committer.wait(self) if durable else 0, hold, data))
        else:
            self.write(data)

    def release_acks(self, committed: int) -> None:
        """Send the acknowledgements whose commit is durable and whose holds are settled, in order."""
        deferred = self._deferred
        if not deferred:
            return
        while deferred:
            generation, hold, data = deferred[0]
            if generation > committed:
                self.hub.committer.wait(self)  # the front waits for a commit: be told of it
                break
            if hold is not None and hold.taken:
                break  # hold_settled() calls again
            if generation and generation in self.hub.committer.lost:
                # The durable write this acknowledgement promised was lost: never send it.
                deferred.clear()
                log.warning("closing %s: a write it was to be acknowledged for was lost", self.peer)
                self.close("storage failed; reconnect and resend")
                return
            deferred.popleft()
            self.write(data)
        low_water = self.host.settings.max_unacked_publishes // 2
        if self._read_paused & PAUSE_OWED and len(deferred) < low_water:
            self._resume_reading(PAUSE_OWED)

    def hold_settled(self, hold: Hold) -> None:
        """Every consumer of a held publish has it durably (`HoldWaiter`)."""
        deferred = self._deferred
        if deferred and deferred[0][1] is hold:
            self.release_acks(self.hub.committer.committed)

    def hold_failed(self, hold: Hold) -> None:
        """A consumer lost a held publish before storing it (`HoldWaiter`).

        MQTT 3.1.1 has no negative acknowledgement: the PUBACK is never sent and the connection
        closes, so the client sends the message again (with DUP) when it reconnects
        (MQTT-4.4.0-1); acknowledging it would lose it.
        """
        if self.state is State.CLOSED:
            return
        log.warning("closing %s: an uplink was lost before it was stored; the client resends it", self.peer)
        self.close("uplink not stored; reconnect and resend")

    def _on_subscribe(self, session: Session, pid: int, topics: list[tuple[str, int]]) -> None:
        identity = self.identity
        assert identity is not None
        codes, granted = grant_subscriptions(
            hub=self.hub, settings=self.host.settings, session=session, identity=identity, topics=topics
        )
        self.write(c.encode_suback(pid, codes))
        for topic_filter, qos in granted:
            self.hub.send_retained(session, topic_filter, qos)

    def info(self) -> dict[str, Any]:
        """A snapshot for `mqim status`."""
        return {
            "peer": self.peer,
            "listener": self.listener,
            "state": self.state.name,
            "client_id": self.session.client_id if self.session else None,
        }
