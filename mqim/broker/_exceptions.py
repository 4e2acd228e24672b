"""Broker errors.

Hierarchy::

    BrokerError                 any failure of the mqim broker
    ├── AuthenticationBusy      no password check slot within the bounded wait (CONNACK 3)
    ├── ConfigError             invalid broker settings or listener configuration
    ├── InvalidToken            a signed token that must be refused (its `reason` says why)
    ├── KeyringError            the token key file cannot be read, parsed or written
    ├── ProxyHeaderError        a malformed or oversized PROXY protocol header (connection closed)

`ProtocolViolation` and `MalformedPacket` (a client broke MQTT 3.1.1; its connection is closed)
are the wire errors of `mqim.mqtt`, re-exported here.
"""

from __future__ import annotations

from mqim.mqtt import MalformedPacket, ProtocolViolation

__all__ = [
    "AuthenticationBusy",
    "BrokerError",
    "ConfigError",
    "InvalidToken",
    "KeyringError",
    "MalformedPacket",
    "ProtocolViolation",
    "ProxyHeaderError",
]


class BrokerError(Exception):
    """Any failure of the mqim broker."""


class AuthenticationBusy(BrokerError):
    """No password check slot within the bounded wait: the CONNECT gets CONNACK 3."""


class ConfigError(BrokerError):
    """Invalid broker settings."""


class InvalidToken(BrokerError):
    """A signed token that must be refused.

    Args:
        reason: A short machine-readable cause (`malformed`, `unsupported_alg`, `unknown_key`,
            `bad_signature`, `expired`, `not_yet_valid`, `wrong_audience`, `bad_claims`).
        message: What is wrong, for logs.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class KeyringError(BrokerError):
    """The token key file cannot be read, parsed or written."""


class ProxyHeaderError(BrokerError):
    """A PROXY protocol header (v1 or v2) is malformed, too long or not one: the socket is closed."""
