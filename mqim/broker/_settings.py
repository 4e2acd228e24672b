"""Broker limits and behaviour switches. Every limit is named here and enforced by the broker."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerSettings:
    """Named, enforced limits of the broker.

    Attributes:
        max_connections: Connections open at once, all listeners together; beyond it a CONNECT
            is answered with CONNACK 3 (server unavailable).
        max_packet_bytes: Largest MQTT packet accepted; a bigger one closes the connection.
        max_inflight: Unacknowledged QoS 1/2 deliveries per session (the send window).
        max_queue_messages: Undelivered QoS 1/2 messages kept per session; the oldest leave first.
        max_queue_bytes: Payload bytes kept per session queue.
        session_expiry_s: A disconnected persistent session is forgotten after this long.
        max_subscriptions_per_session: Topic filters one session may hold.
        max_client_id_chars: Longest accepted client id (CONNACK 2 beyond it).
        connect_timeout_s: Time a new socket has to send its CONNECT.
        keepalive_factor: A client silent for keepalive x this factor is dropped (MQTT-3.1.2-24).
        max_retained: Retained topics kept; new retained topics beyond it are refused and logged.
        max_qos: Highest QoS granted to a subscription.
        auto_subscribe: Subscribe each user's session to its own inbox (DESIGN.md section 4).
    """

    max_connections: int = 10_000
    max_packet_bytes: int = 256 * 1024
    max_inflight: int = 100
    max_queue_messages: int = 10_000
    max_queue_bytes: int = 16 * 1024 * 1024
    session_expiry_s: float = 7 * 24 * 3600
    max_subscriptions_per_session: int = 100
    max_client_id_chars: int = 128
    connect_timeout_s: float = 10.0
    keepalive_factor: float = 1.5
    max_retained: int = 100_000
    max_qos: int = 2
    auto_subscribe: bool = True
