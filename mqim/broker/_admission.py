"""Who may connect and publish, beyond authentication: the broker's limits and blocked accounts.

`Admission` holds the per-address CONNECT rate, the accounts seen disabled or removed, the
connections of each user (their limit, kicks), the per-user publish rate and payload size, the
publish ACL check and the repeated refusals that close an abusive connection.
"""

from __future__ import annotations

import logging
import time

from mqim import mqtt as codec
from mqim._util import KeyedBuckets, SummaryLog, ViolationWindow, address_key
from mqim.acl import Action, Identity
from mqim.broker._connection import MqttConnection
from mqim.broker._counting import count_event
from mqim.broker._hub import Hub
from mqim.broker._settings import BrokerSettings
from mqim.broker._tell import tell_error
from mqim.mqtt import Publish
from mqim.protocol import ErrorCode

log = logging.getLogger("mqim.broker")
_rate_refusals = SummaryLog(logger=log, what="CONNECT over the per-address rate")


class Admission:
    """Admits connections and publishes of authenticated clients, within the limits.

    Args:
        settings: The limits.
        hub: Sessions (a take-over does not count twice), the ACL and the users' inboxes.
    """

    def __init__(self, *, settings: BrokerSettings, hub: Hub) -> None:
        self.settings = settings
        self.hub = hub
        # Accounts seen disabled or removed since start: refused even if their authentication
        # read storage just before the change. Bounded by the accounts in storage.
        self._blocked: set[str] = set()
        self._user_conns: dict[str, set[MqttConnection]] = {}
        self._conn_user: dict[MqttConnection, str] = {}
        self._violations: dict[MqttConnection, ViolationWindow] = {}
        tracked = max(settings.max_tracked_addresses, 1)
        self._publish_buckets: KeyedBuckets[str] | None = (
            # One bucket per publishing user: at least as many as there can be connections.
            KeyedBuckets(
                rate=settings.publish_rate,
                burst=max(settings.publish_burst, 1),
                max_keys=max(tracked, settings.max_connections),
            )
            if settings.publish_rate > 0
            else None
        )
        self._connect_buckets: KeyedBuckets[str] | None = (
            KeyedBuckets(
                rate=settings.connect_rate_per_address,
                burst=max(settings.connect_burst_per_address, 1),
                max_keys=tracked,
            )
            if settings.connect_rate_per_address > 0
            else None
        )

    def users(self) -> list[str]:
        """The users holding admitted connections."""
        return list(self._user_conns)

    def connect_rate_ok(self, conn: MqttConnection) -> bool:
        """Take a CONNECT from the bucket of `conn`'s address; False when it is over the rate."""
        buckets = self._connect_buckets
        if buckets is None or conn.transport is None:
            return True
        peer = conn.transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else conn.peer
        if buckets.take(address_key(host), time.monotonic()):
            return True
        count_event(self.hub.counters, "connect_rate_refused")
        _rate_refusals.note(host, "connect rate", "connect rate of %s exceeded: CONNACK 3", host)
        return False

    def admit_connection(self, conn: MqttConnection, identity: Identity) -> tuple[int, str] | None:
        """Called once authentication succeeded: None admits, else (CONNACK code, reason).

        Refuses an account disabled or removed meanwhile (CONNACK 5) and a user already holding
        `max_connections_per_user` connections (CONNACK 5); a connection that takes over the
        same client id does not count twice.
        """
        user = identity.user
        if not user:
            return None
        if user in self._blocked:
            return codec.REFUSED_NOT_AUTHORIZED, f"account {user!r} is disabled"
        limit = self.settings.max_connections_per_user
        conns = self._user_conns.get(user, set())
        if limit > 0 and identity.kind not in self.settings.limit_exempt_kinds:
            count = len(conns)
            client_id = conn.connect.client_id if conn.connect is not None else ""
            existing = self.hub.sessions.get(client_id) if client_id else None
            if existing is not None and existing.conn in conns:
                count -= 1  # a takeover replaces that connection
            if count >= limit:
                count_event(self.hub.counters, "connections_per_user_refused")
                return codec.REFUSED_NOT_AUTHORIZED, f"user {user!r} already has {count} connections"
        conns.add(conn)
        self._user_conns[user] = conns
        self._conn_user[conn] = user
        return None

    def released(self, conn: MqttConnection) -> None:
        """Forget a closed connection."""
        self._violations.pop(conn, None)
        user = self._conn_user.pop(conn, None)
        if user is not None:
            conns = self._user_conns.get(user)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self._user_conns[user]

    def kick_user(self, user: str, reason: str = "account disabled") -> int:
        """Close every connection of `user` now; returns how many were closed."""
        conns = list(self._user_conns.get(user, ()))
        for conn in conns:
            conn.close(reason, abort=True)
        if conns:
            count_event(self.hub.counters, "kicked", len(conns))
            log.info("closed %d connection(s) of %r: %s", len(conns), user, reason)
        return len(conns)

    def block_user(self, user: str, reason: str = "account disabled") -> int:
        """Refuse `user` from now on (until `unblock_user`) and close its connections."""
        self._blocked.add(user)
        return self.kick_user(user, reason)

    def unblock_user(self, user: str) -> None:
        """Stop refusing `user` (its account was enabled again)."""
        self._blocked.discard(user)

    def user_connections(self, user: str) -> int:
        """The number of admitted connections `user` holds."""
        return len(self._user_conns.get(user, ()))

    def admit_publish(self, conn: MqttConnection, pub: Publish) -> str | None:
        """Return None to route `pub`, or the reason it is refused (the client is told)."""
        identity = conn.identity
        assert identity is not None
        settings = self.settings
        if identity.kind not in settings.limit_exempt_kinds:
            buckets = self._publish_buckets
            if buckets is not None and not buckets.take(identity.user or conn.peer, time.monotonic()):
                count_event(self.hub.counters, "rate_limited")
                rate, burst = settings.publish_rate, settings.publish_burst
                message = f"publish rate limit reached ({rate:g}/s, burst {burst})"
                return self._refuse_publish(conn, identity, pub, ErrorCode.RATE_LIMITED, message)
            if len(pub.payload) > settings.max_payload_bytes:
                count_event(self.hub.counters, "too_large")
                message = f"payload of {len(pub.payload)} bytes exceeds {settings.max_payload_bytes}"
                return self._refuse_publish(conn, identity, pub, ErrorCode.TOO_LARGE, message)
        if self.hub.acl.allowed(identity, Action.PUBLISH, pub.topic):
            return None
        self.hub.counters.acl_denied_publish += 1
        log.info("%s may not publish on %r", identity.user or conn.peer, pub.topic)
        message = f"publishing on {pub.topic!r} is not allowed"
        return self._refuse_publish(conn, identity, pub, ErrorCode.FORBIDDEN, message)

    def _refuse_publish(
        self, conn: MqttConnection, identity: Identity, pub: Publish, code: ErrorCode, message: str
    ) -> str:
        tell_error(self.hub, identity, pub.payload, code, message)
        window = self._violations.get(conn)
        if window is None:
            window = self._violations[conn] = ViolationWindow(
                max_violations=max(self.settings.max_violations, 1),
                window_s=max(self.settings.violation_window_s, 0.001),
            )
        if window.record(time.monotonic()):
            count_event(self.hub.counters, "abuse_disconnects")
            log.warning(
                "closing %s of %r: %d refused publishes within %.0fs (last: %s)",
                conn.peer,
                identity.user,
                window.max_violations,
                window.window_s,
                code.value,
            )
            conn.close(f"sustained abuse ({code.value})")
        return code.value
