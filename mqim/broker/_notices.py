"""Bridge connection notices: the `$SYS/broker/connection/{name}/state` topic a Mosquitto bridge uses.

With `notifications true` (Mosquitto's default) a bridge sets its CONNECT will to that topic with
payload `0` and publishes `1` there once connected. Clients may not publish under `$` (MQTT-4.7.2-1),
so the broker recognises exactly this shape and records it as bridge status instead of routing it.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

log = logging.getLogger("mqim.broker")

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


MAX_BRIDGE_STATUS = 1000
"""Bridges whose `$SYS/broker/connection/{name}/state` notices are kept in `BridgeStatus`."""


class BridgeStatus:
    """The latest connection notice of each bridge, for status pages.

    Attributes:
        status: By bridge name: `state` (the notice's payload: "1" connected, "0" gone), `ts`
            (when it came, seconds since the epoch) and the bridge's `client_id`.
    """

    def __init__(self) -> None:
        self.status: dict[str, dict[str, Any]] = {}

    def record(self, name: str, payload: bytes, client_id: str) -> None:
        """Keep the `payload` of bridge `name`'s latest notice (at most `MAX_BRIDGE_STATUS` bridges)."""
        if name not in self.status and len(self.status) >= MAX_BRIDGE_STATUS:
            log.warning("bridge status of %r ignored: %d bridges already tracked", name, MAX_BRIDGE_STATUS)
            return
        self.status[name] = {
            "state": payload[:64].decode("utf-8", "replace"),
            "ts": time.time(),
            "client_id": client_id,
        }
