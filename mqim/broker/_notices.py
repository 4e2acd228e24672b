"""Bridge connection notices: the `$SYS/broker/connection/{name}/state` topic a Mosquitto bridge uses.

With `notifications true` (Mosquitto's default) a bridge sets its CONNECT will to that topic with
payload `0` and publishes `1` there once connected. Clients may not publish under `$` (MQTT-4.7.2-1),
so the broker recognises exactly this shape and records it as bridge status instead of routing it.
"""

from __future__ import annotations

from typing import Final

NOTICE_PREFIX: Final = ("$SYS", "broker", "connection")
"""Levels before the bridge name in a notification topic."""

MAX_NOTICE_NAME: Final = 256
"""Longest bridge name accepted in a notification topic (the status map is keyed by it)."""


def bridge_notice_name(topic: str) -> str | None:
    """Return the bridge name of a `$SYS/broker/connection/{name}/state` topic, else None."""
    parts = topic.split("/")
    if len(parts) != 5 or tuple(parts[:3]) != NOTICE_PREFIX or parts[4] != "state":
        return None
    name = parts[3]
    if not name or len(name) > MAX_NOTICE_NAME or "+" in name or "#" in name:
        return None
    return name
