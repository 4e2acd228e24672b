"""MQTT wire errors.

Hierarchy::

    MqttError                   any failure to speak MQTT 3.1.1
    └── ProtocolViolation       the peer broke MQTT 3.1.1; its connection is closed
        └── MalformedPacket     bytes that do not decode as a valid packet
            └── UnsupportedProtocol  a CONNECT for a protocol level not spoken (CONNACK 1)
"""

from __future__ import annotations


class MqttError(Exception):
    """Any failure to speak MQTT."""


class ProtocolViolation(MqttError):
    """The peer broke MQTT 3.1.1; the connection must be closed."""


class MalformedPacket(ProtocolViolation):
    """Bytes that do not decode as a valid MQTT packet."""


class UnsupportedProtocol(MalformedPacket):
    """A CONNECT for a protocol level the broker does not speak (answered with CONNACK 1)."""
