"""Broker limits and behaviour switches. Every limit is named here and enforced by the broker."""

from __future__ import annotations

from dataclasses import dataclass

from mqim.acl import DEFAULT_MAX_WIDE_SUBSCRIPTIONS_PER_SESSION


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerSettings:
    """Named, enforced limits of the broker.

    Attributes:
        max_connections: Connections open at once, all listeners together; beyond it a CONNECT
            is answered with CONNACK 3 (server unavailable).
        max_packet_bytes: Largest MQTT packet accepted; a bigger one closes the connection,
            except a PUBLISH within `max_publish_discard_bytes`.
        max_publish_discard_bytes: Hard safety bound: a PUBLISH longer than this closes the
            connection; between `max_packet_bytes` and this it is discarded as it streams in
            (only its first bytes are kept) and answered `too_large`, so a client that resends
            it after every reconnect does not loop. Over WebSocket a whole message is buffered,
            so this is also the largest WebSocket message accepted. Not above `max_packet_bytes`:
            every packet over `max_packet_bytes` closes the connection.
        max_inflight: Unacknowledged QoS 1/2 deliveries per session (the send window).
        max_inflight_service: The send window of a logic worker's session (a service account):
            the requests a worker may hold unacknowledged while it processes a batch.
        max_held_uplinks: Client publishes whose PUBACK waits for a consumer (the logic service,
            a worker, a bridge outbox) across the broker; at this bound the broker stops reading
            from every publisher until a tenth of them are settled (back-pressure, not refusal).
        max_unacked_publishes: PUBACKs one connection may be owed at once; beyond it the broker
            stops reading from that connection until they are sent (a client ignoring its own
            in-flight window cannot make the broker hold more).
        max_queue_messages: Undelivered QoS 1/2 messages kept per session; the oldest leave first.
        max_queue_bytes: Payload bytes kept per session queue.
        session_expiry_s: A disconnected persistent session is forgotten after this long.
        max_subscriptions_per_session: Topic filters one session may hold.
        max_wide_subscriptions_per_session: Subscriptions one session may hold whose receive
            scope is narrower than their filter (`#` for an ordinary user, say): each costs a
            look at the scope on every delivery to that session; one more gets SUBACK 0x80.
        max_client_id_chars: Longest accepted client id (CONNACK 2 beyond it).
        connect_timeout_s: Time a new socket has to send its CONNECT.
        keepalive_factor: A client silent for keepalive x this factor is dropped (MQTT-3.1.2-24).
        max_retained: Retained topics all clients together may keep; a new one beyond it is
            refused (not stored, still delivered) and logged.
        max_retained_per_account: Retained topics one account (user, bridge) may keep, so one
            of a fleet cannot fill `max_retained` for the others.
        max_server_retained: Retained topics the server itself keeps (one presence topic per
            account, `$SYS`), counted apart from the clients' so presence works for every user.
        max_qos: Highest QoS granted to a subscription.
        auto_subscribe: Subscribe each user's session to its own inbox (docs/architecture.md, "IM features").
        max_payload_bytes: Largest PUBLISH payload accepted from a limited account; a bigger one
            is dropped and answered with a `too_large` error.
        publish_rate: Publishes per second per limited user, all its connections together
            (token bucket refill); beyond it a publish is dropped with `rate_limited`. 0 turns
            the publish rate limit off.
        publish_burst: Publishes a limited user may send at once (token bucket size).
        max_connections_per_user: Connections one limited user may hold at once; one more gets
            CONNACK 5 (not authorized). 0 turns the limit off.
        connect_rate_per_address: CONNECTs per second from one source address (IPv4 address or
            IPv6 /64), before authentication; beyond it CONNACK 3. 0 turns the limit off.
        connect_burst_per_address: CONNECTs one address may send at once.
        max_tracked_addresses: Source addresses (and users) whose buckets are kept; the least
            recently seen leave first.
        max_violations: Refused publishes (rate, size, ACL) within `violation_window_s` that
            make a connection abusive: it is closed.
        violation_window_s: The window of `max_violations`, seconds.
        limit_exempt_kinds: Account kinds the per-user limits (rate, payload, connections per
            user) do not apply to: trusted services and administrators by default.
        policy_poll_interval_s: How often the broker reads storage for ACL rule, role and
            account changes (a disabled account's connections are closed within it).
    """

    max_connections: int = 10_000
    max_packet_bytes: int = 256 * 1024
    max_publish_discard_bytes: int = 16 * 1024 * 1024
    max_inflight: int = 100
    max_inflight_service: int = 1_000
    max_held_uplinks: int = 20_000
    max_unacked_publishes: int = 1_000
    max_queue_messages: int = 10_000
    max_queue_bytes: int = 16 * 1024 * 1024
    session_expiry_s: float = 7 * 24 * 3600
    max_subscriptions_per_session: int = 100
    max_wide_subscriptions_per_session: int = DEFAULT_MAX_WIDE_SUBSCRIPTIONS_PER_SESSION
    max_client_id_chars: int = 128
    connect_timeout_s: float = 10.0
    keepalive_factor: float = 1.5
    max_retained: int = 100_000
    max_retained_per_account: int = 1_000
    max_server_retained: int = 2_000_000
    max_qos: int = 2
    auto_subscribe: bool = True
    max_payload_bytes: int = 65_536
    publish_rate: float = 100.0
    publish_burst: int = 200
    max_connections_per_user: int = 16
    connect_rate_per_address: float = 50.0
    connect_burst_per_address: int = 500
    max_tracked_addresses: int = 10_000
    max_violations: int = 20
    violation_window_s: float = 10.0
    limit_exempt_kinds: frozenset[str] = frozenset({"service", "admin"})
    policy_poll_interval_s: float = 2.0
