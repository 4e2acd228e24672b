"""Errors of the bridge package.

Hierarchy::

    BridgeError                 any failure raised by mqim.bridge
    ├── BridgeConfigError       an invalid topic rule, mapping or bridges file
    │   └── TopicRuleError      a `--topic` rule that does not parse (Mosquitto syntax)
    ├── BridgeUnavailable       the remote broker cannot be reached or refused us
    │                           (aiomqtt.MqttError is translated to it)
    └── BridgeStorageError      a bridge's outbox file cannot be opened, read or written
                                (sqlite3 and OS errors are translated to it)
"""

from __future__ import annotations


class BridgeError(Exception):
    """Any failure raised by the bridge package."""


class BridgeConfigError(BridgeError):
    """A bridge definition, mapping rule or the bridges file is invalid."""


class TopicRuleError(BridgeConfigError):
    """A topic rule in Mosquitto syntax (`pattern [in|out|both [qos [local remote]]]`) is invalid."""


class BridgeUnavailable(BridgeError):
    """The remote broker cannot be reached, refused the connection or a subscription."""


class BridgeStorageError(BridgeError):
    """A bridge's durable outbox cannot be opened, read or written (SQLite or the file system)."""
