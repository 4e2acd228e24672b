"""Which topic names a client may PUBLISH to, and which filters it may SUBSCRIBE to."""

from __future__ import annotations

from mqim.acl import is_valid_filter
from mqim.broker._exceptions import ProtocolViolation


def valid_publish_topic(topic: str) -> bool:
    """Whether a client may PUBLISH to `topic` (or name it as its will topic).

    MQTT-3.3.2-2 / 4.7.1-1: no wildcards; MQTT-4.7.3-1: not empty. A `$` topic is a valid name:
    it is ACL-checked like any other and only filters naming its first level match it.
    """
    return bool(topic) and "+" not in topic and "#" not in topic


def is_sys_topic(topic: str) -> bool:
    """Whether `topic` is one of the server's own `$SYS` topics, which clients cannot publish to."""
    return topic == "$SYS" or topic.startswith("$SYS/")


def check_filter(topic_filter: str, packet: str) -> None:
    """A SUBSCRIBE or UNSUBSCRIBE filter that is not a valid filter is a protocol violation.

    MQTT-4.7.3-1 (at least one character), MQTT-4.7.1-2 (`#` alone, last), MQTT-4.7.1-3 (`+`
    a whole level), MQTT-4.8.0-1: the connection closes; no SUBACK 0x80 / UNSUBACK for it.
    """
    if not is_valid_filter(topic_filter):
        rule = "MQTT-4.7.3-1" if topic_filter == "" else "MQTT-4.7.1-2, 4.7.1-3"
        raise ProtocolViolation(f"invalid {packet} filter {topic_filter!r} ({rule}, 4.8.0-1)")
