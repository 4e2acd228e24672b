"""Broker errors.

Hierarchy::

    BrokerError                 any failure of the mqim broker
    ├── ConfigError             invalid broker settings or listener configuration
    └── ProtocolViolation       a client broke MQTT 3.1.1; its connection is closed
        └── MalformedPacket     bytes that do not decode as a valid packet
"""

from __future__ import annotations


class BrokerError(Exception):
    """Any failure of the mqim broker."""


class ConfigError(BrokerError):
    """Invalid broker settings."""


class ProtocolViolation(BrokerError):
    """A client broke MQTT 3.1.1; the connection is closed (3.1.1 has no negative acks)."""


class MalformedPacket(ProtocolViolation):
    """Bytes that do not decode as a valid MQTT 3.1.1 packet."""
