"""`$SYS/broker/...`: the broker's own statistics, under Mosquitto's topic names.

Every `interval_s` the publisher reads the hub's counters (`Hub.counters`, `Hub.traffic`), the
sessions and the connection count, and publishes each value as a retained QoS 0 message. The
values are this node's only: they are never forwarded to other cluster nodes, and never
written to the session store (a restart starts them again). Who may read them is the ACL's
business: no built-in rule grants `$SYS/...` (`allow user ops subscribe,receive $SYS/#`).

`SysStats` is the pure part (values and moving averages); `SysPublisher` the owned task.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mqim.broker import Hub

log = logging.getLogger("mqim.broker.sys")

SYS_ROOT = "$SYS/broker/"
"""The prefix of every topic published here."""

_WINDOWS = (("1min", 60.0), ("5min", 300.0), ("15min", 900.0))


@dataclass(frozen=True, slots=True, kw_only=True)
class SysSample:
    """Cumulative values at one moment (what the `$SYS` values are computed from)."""

    at: float
    connected: int
    disconnected: int
    subscriptions: int
    retained: int
    messages_received: int
    messages_sent: int
    bytes_received: int
    bytes_sent: int


@dataclass(slots=True)
class SysStats:
    """Moving averages and maxima across samples; `values` gives the topic -> text map.

    Loads are per-minute rates averaged exponentially over 1, 5 and 15 minutes, as
    Mosquitto's `load/...` topics.
    """

    version: str
    started: float
    clients_maximum: int = 0
    _last: SysSample | None = None
    _loads: dict[str, float] = field(default_factory=dict)

    def update(self, sample: SysSample) -> dict[str, str]:
        """Fold `sample` in; returns every `$SYS/broker/` subtopic with its value."""
        self.clients_maximum = max(self.clients_maximum, sample.connected)
        last, self._last = self._last, sample
        if last is not None and sample.at > last.at:
            elapsed = sample.at - last.at
            rates = {
                "messages/received": sample.messages_received - last.messages_received,
                "messages/sent": sample.messages_sent - last.messages_sent,
                "bytes/received": sample.bytes_received - last.bytes_received,
                "bytes/sent": sample.bytes_sent - last.bytes_sent,
            }
            for what, delta in rates.items():
                per_minute = delta * 60.0 / elapsed
                for name, window in _WINDOWS:
                    key = f"load/{what}/{name}"
                    decay = math.exp(-elapsed / window)
                    previous = self._loads.get(key, per_minute)
                    self._loads[key] = previous * decay + per_minute * (1.0 - decay)
        values = {
            "version": self.version,
            "uptime": f"{int(sample.at - self.started)} seconds",
            "clients/connected": str(sample.connected),
            "clients/active": str(sample.connected),
            "clients/disconnected": str(sample.disconnected),
            "clients/inactive": str(sample.disconnected),
            "clients/total": str(sample.connected + sample.disconnected),
            "clients/maximum": str(self.clients_maximum),
            "messages/received": str(sample.messages_received),
            "messages/sent": str(sample.messages_sent),
            "publish/messages/received": str(sample.messages_received),
            "publish/messages/sent": str(sample.messages_sent),
            "bytes/received": str(sample.bytes_received),
            "bytes/sent": str(sample.bytes_sent),
            "retained messages/count": str(sample.retained),
            "subscriptions/count": str(sample.subscriptions),
        }
        values.update({key: f"{value:.2f}" for key, value in sorted(self._loads.items())})
        return values


class SysPublisher:
    """Publishes `$SYS/broker/...` through `hub` every `interval_s` seconds until cancelled.

    Args:
        hub: The node's routing core.
        version: The server's version, published as `mqim version {version}`.
        interval_s: Seconds between publications (> 0).
        clock: Wall-clock seconds (uptime).
    """

    def __init__(
        self,
        *,
        hub: Hub,
        version: str,
        interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._hub = hub
        self._interval_s = interval_s
        self._clock = clock
        self.stats = SysStats(version=f"mqim version {version}", started=clock())
        # What this publisher itself routed: left out of the values it publishes.
        self._own_in = 0
        self._own_out = 0

    async def run(self) -> None:
        """Publish now, then every interval; runs until cancelled."""
        while True:
            self.publish_once()
            await asyncio.sleep(self._interval_s)

    def sample(self) -> SysSample:
        """The node's cumulative values now."""
        hub = self._hub
        connected = disconnected = subscriptions = 0
        for session in hub.sessions.values():
            subscriptions += len(session.subscriptions)
            if session.conn is not None:
                connected += 1
            elif session.persistent:
                disconnected += 1
        traffic = hub.traffic
        return SysSample(
            at=self._clock(),
            connected=connected,
            disconnected=disconnected,
            subscriptions=subscriptions,
            retained=len(hub.retained),
            messages_received=hub.counters.published - self._own_in,
            messages_sent=hub.counters.delivered - self._own_out,
            bytes_received=traffic.bytes_received,
            bytes_sent=traffic.bytes_sent,
        )

    def publish_once(self) -> None:
        """Publish every value once (retained, QoS 0, this node only)."""
        hub = self._hub
        values = self.stats.update(self.sample())
        before_in, before_out = hub.counters.published, hub.counters.delivered
        for name, text in values.items():
            topic = SYS_ROOT + name
            payload = text.encode()
            # Kept for late subscribers but not in the session store: these are live values.
            hub.retained[topic] = (payload, 0)
            hub.route(topic, payload, 0, forwarded=True)
        self._own_in += hub.counters.published - before_in
        self._own_out += hub.counters.delivered - before_out
