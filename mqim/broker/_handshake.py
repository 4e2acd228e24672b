"""The CONNECT path of a connection: the first packet, authentication, admission, the session.

`ConnectHandshake` is a part of `MqttConnection` (its only subclass), kept here so the
connection's module holds the packets after CONNECT. The first packet must be a valid CONNECT;
authentication then awaits in a task owned by the broker, reading paused; an admitted client
gets its session (taking over a connection of the same client id) and CONNACK 0. A refusal
answers with a CONNACK code and closes (MQTT-3.2.2-5), delayed when a limit is reached.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Self

from mqim import mqtt as c
from mqim._util import SummaryLog, host_of
from mqim.acl import Action, Identity
from mqim.auth import AuthenticationBusy
from mqim.broker._conn_io import ConnectionIO
from mqim.broker._conn_state import State
from mqim.broker._exceptions import ProtocolViolation
from mqim.broker._notices import bridge_notice_name
from mqim.broker._session import Session
from mqim.broker._topics import valid_publish_topic

log = logging.getLogger("mqim.broker.connection")
# Refusals are aggregated per source address and reason (first occurrence, then a periodic
# summary): an attacker cannot fill the disk with log lines.
_refusals = SummaryLog(logger=log, what="refused CONNECT")
_delayed_refusals = 0  # refusals waiting for LIMIT_REFUSAL_DELAY_S, this process

# A CONNECT refused because a limit is reached (connections, CONNECTs per second from one
# address: issue 12) is answered after this delay, with reading paused meanwhile. A client that
# retries as soon as it is answered (a password guesser) then costs a timer per second instead of
# a socket round trip, and a wake-up of the server, hundreds of times a second. At most
# MAX_DELAYED_REFUSALS wait at once; beyond that a refusal leaves at once.
LIMIT_REFUSAL_DELAY_S = 1.0
MAX_DELAYED_REFUSALS = 1_000


class ConnectHandshake(ConnectionIO):
    """The CONNECT path of `MqttConnection`.

    The attributes it sets are slots of this class; the others it reads are `ConnectionIO`'s
    and `MqttConnection`'s. `host` is a `ConnectionHost` of the concrete connection class, so
    the methods that hand the connection to it are typed `self: Self`.
    """

    __slots__ = ("connect", "identity", "keepalive", "session", "state")

    peer: str
    over_limit: bool
    connect: c.Connect | None
    identity: Identity | None
    keepalive: float
    session: Session | None
    state: State

    def _on_first_packet(self) -> None:
        packet_type, flags, body = self._backlog.pop(0)
        if packet_type != c.CONNECT or isinstance(body, c.Oversize):
            raise ProtocolViolation("first packet is not CONNECT (MQTT-3.1.0-1)")
        try:
            connect = c.decode_connect(flags, body)
        except c.UnsupportedProtocol as exc:
            self.write(c.encode_connack(session_present=False, return_code=c.REFUSED_PROTOCOL))
            raise ProtocolViolation(str(exc)) from exc
        self.connect = connect
        settings = self.host.settings
        if self.over_limit:
            self.hub.counters.connections_refused += 1
            self._refuse(c.REFUSED_UNAVAILABLE, "connection limit reached", delay=LIMIT_REFUSAL_DELAY_S)
            return
        if not connect.client_id and not connect.clean_session:
            self._refuse(c.REFUSED_IDENTIFIER, "empty client id needs clean session (MQTT-3.1.3-8)")
            return
        if len(connect.client_id) > settings.max_client_id_chars:
            self._refuse(c.REFUSED_IDENTIFIER, "client id too long")
            return
        if (
            connect.will_topic is not None
            and not valid_publish_topic(connect.will_topic)
            # A Mosquitto bridge's will is its `$SYS/broker/connection/{name}/state` notice.
            and bridge_notice_name(connect.will_topic) is None
        ):
            raise ProtocolViolation(f"invalid will topic {connect.will_topic!r} (MQTT-3.1.3-10)")
        self.keepalive = connect.keepalive * settings.keepalive_factor
        self.state = State.AUTHENTICATING
        if isinstance(self.transport, asyncio.ReadTransport):
            self.transport.pause_reading()
        self.host.spawn(self._authenticate(connect), name=f"mqtt-connect:{connect.client_id or self.peer}")

    def _refuse(self, code: int, reason: str, *, delay: float = 0.0) -> None:
        _refusals.note(host_of(self.peer), reason, "refusing CONNECT from %s: %s", self.peer, reason)
        global _delayed_refusals
        if delay > 0 and _delayed_refusals < MAX_DELAYED_REFUSALS:
            _delayed_refusals += 1
            self.state = State.AUTHENTICATING  # nothing more is handled (MQTT-3.1.4-5)
            if isinstance(self.transport, asyncio.ReadTransport):
                self.transport.pause_reading()
            self.host.loop.call_later(delay, self._refuse_now, code, reason)
            return
        self._refuse_now(code, reason, delayed=False)

    def _refuse_now(self, code: int, reason: str, *, delayed: bool = True) -> None:
        if delayed:
            global _delayed_refusals
            _delayed_refusals -= 1
        # MQTT-3.2.2-5: after a CONNACK with a non-zero return code, close.
        self.write(c.encode_connack(session_present=False, return_code=code))
        self.close(reason)
        if delayed and isinstance(self.transport, asyncio.ReadTransport):
            # A delayed refusal paused reading: a WebSocket reader waits for it to resume before
            # it notices the close. Only then: resuming a socket transport refused during
            # authentication (a cluster claim that failed) kept its peer's reconnects from being
            # served (tests/cluster/test_failover.py).
            self.transport.resume_reading()

    async def _authenticate(self: Self, connect: c.Connect) -> None:
        try:
            identity = await self.host.authenticate(self, connect)
        except AuthenticationBusy:
            if self.state is State.AUTHENTICATING:
                self._refuse(c.REFUSED_UNAVAILABLE, "password checks busy")
            return
        except Exception:
            log.exception("authentication failed with an error for %s", self.peer)
            identity = None
            if self.state is State.AUTHENTICATING:
                self._refuse(c.REFUSED_UNAVAILABLE, "authentication backend error")
            return
        if self.state is not State.AUTHENTICATING:
            return  # the socket went away meanwhile
        if identity is None:
            self._refuse(c.REFUSED_BAD_CREDENTIALS, f"bad credentials for user {connect.username!r}")
            return
        if (
            connect.will_topic is not None
            and not (identity.kind == "bridge" and bridge_notice_name(connect.will_topic) is not None)
            and not self.hub.acl.allowed(identity, Action.PUBLISH, connect.will_topic)
        ):
            self._refuse(c.REFUSED_NOT_AUTHORIZED, f"will topic {connect.will_topic!r} not allowed")
            return
        refusal = self.host.admit_connection(self, identity)  # disabled meanwhile, per-user limit
        if refusal is not None:
            self._refuse(*refusal)
            return
        if connect.client_id:
            # Cluster mode: the client id may live on another node (takeover, session handover);
            # without a cluster the hub answers True at once.
            claimed = await self.hub.claim_session(connect.client_id, connect.clean_session)
            if self.state is not State.AUTHENTICATING:
                return
            if not claimed:
                self._refuse(c.REFUSED_UNAVAILABLE, "cluster state unavailable")
                return
        self._start_session(connect, identity)

    def _start_session(self: Self, connect: c.Connect, identity: Identity) -> None:
        host = self.host
        hub = self.hub
        # The credentials have done their job: do not keep the password for the connection's life.
        connect.password = None
        client_id = connect.client_id or f"auto-{id(self):x}-{int(time.time() * 1000)}"
        existing = hub.sessions.get(client_id)
        if existing is not None and existing.user != identity.user:
            # A client id is bound to the user that created its session: another user may
            # neither take over the connection nor read its queue.
            self._refuse(c.REFUSED_IDENTIFIER, f"client id {client_id!r} belongs to another user")
            return
        if existing is not None and existing.conn is not None:
            old = existing.conn
            if isinstance(old, type(self)):
                log.info("client id %r taken over by %s", client_id, self.peer)
                host.publish_will(old)
                old.session = None  # its connection_lost must not detach the new owner
                hub.disconnected(existing) if not connect.clean_session else None
                old.state = State.CLOSED
                old.close("session taken over", abort=True)
        session, present = hub.open_session(
            client_id=client_id, identity=identity, clean=connect.clean_session
        )
        # A bridge account is a bridge even when its CONNECT lacks the 0x80 level bit (try_private false).
        session.is_bridge = connect.bridge or identity.kind == "bridge"
        self.session = session
        self.identity = identity
        self.write(c.encode_connack(session_present=present, return_code=c.ACCEPTED))
        self.state = State.CONNECTED
        self.host.connection_established(self)
        hub.auto_subscribe(session)
        hub.connected(session, self)
        if isinstance(self.transport, asyncio.ReadTransport):
            self.transport.resume_reading()
        self._run_backlog()
