"""Broker errors.

Hierarchy::

    BrokerError                 any failure of the mqim broker
    ├── ConfigError             invalid broker settings or listener configuration
    └── ProxyHeaderError        a malformed or oversized PROXY protocol header (connection closed)

Authentication errors are `mqim.auth`'s (`AuthError`). `ProtocolViolation` and `MalformedPacket`
(a client broke MQTT 3.1.1; its connection is closed) are the wire errors of `mqim.mqtt`,
re-exported here.
"""

from __future__ import annotations

from mqim.mqtt import MalformedPacket, ProtocolViolation

__all__ = [
    "BrokerError",
    "ConfigError",
    "MalformedPacket",
    "ProtocolViolation",
    "ProxyHeaderError",
]


class BrokerError(Exception):
    """Any failure of the mqim broker."""


class ConfigError(BrokerError):
    """Invalid broker settings."""


class ProxyHeaderError(BrokerError):
    """A PROXY protocol header (v1 or v2) is malformed, too long or not one: the socket is closed."""
