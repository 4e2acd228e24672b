"""What the admin endpoints read from a running node: small views of its components.

Each is a Protocol (or a plain counter dataclass the component already keeps) so that the
collector, the checks and `/status` depend on what they read, not on the whole broker. Nothing
here is called on the hot path: everything is read when a scrape or a probe asks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sized
from dataclasses import dataclass
from typing import Any, Protocol

from mqim.auth import PasswordCheckStats
from mqim.broker import Counters, Traffic
from mqim.logic import LogicCounters
from mqim.stats import LatencyHistogram


class SessionView(Protocol):
    """One MQTT session as the hub keeps it."""

    @property
    def persistent(self) -> bool: ...
    @property
    def conn(self) -> object | None: ...
    @property
    def queue(self) -> Sized: ...
    @property
    def queued_bytes(self) -> int: ...
    @property
    def subscriptions(self) -> Sized: ...


class CommitterView(Protocol):
    """The session store's batch committer."""

    @property
    def committed(self) -> int: ...
    @property
    def failures(self) -> int: ...


class HubView(Protocol):
    """The routing core of a node."""

    @property
    def sessions(self) -> Mapping[str, SessionView]: ...
    @property
    def counters(self) -> Counters: ...
    @property
    def traffic(self) -> Traffic: ...
    @property
    def retained(self) -> Sized: ...
    @property
    def held(self) -> int: ...
    @property
    def committer(self) -> CommitterView: ...


class BrokerView(Protocol):
    """The node's broker: connections and listeners."""

    @property
    def hub(self) -> HubView: ...
    @property
    def connection_count(self) -> int: ...
    def connection_stats(self) -> dict[tuple[str, str], int]: ...
    def listener_ports(self) -> dict[str, tuple[str, str, int]]: ...


class StorageProbe(Protocol):
    """The cheap calls the readiness probe makes on storage (a write and a read)."""

    async def revoke_token(self, token_id: str, *, expires_ts: int | None) -> None: ...
    async def is_token_revoked(self, token_id: str) -> bool: ...


class BridgesView(Protocol):
    """Outbound bridges, IM mappings and inbound bridge states (`BridgeService.status`)."""

    def status(self) -> dict[str, Any]: ...


class RedisPing(Protocol):
    """The link's Redis client (redis-py's asyncio `Redis`)."""

    def ping(self, **kwargs: Any) -> Any: ...


class FenceView(Protocol):
    @property
    def fenced(self) -> bool: ...


class ClusterView(Protocol):
    """The node's cluster link."""

    @property
    def node_id(self) -> str: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def counters(self) -> dict[str, int]: ...
    @property
    def info(self) -> dict[str, Any]: ...
    @property
    def redis(self) -> RedisPing: ...
    @property
    def fence(self) -> FenceView: ...


class LogicView(Protocol):
    """An embedded logic service."""

    @property
    def counters(self) -> LogicCounters: ...
    @property
    def held(self) -> int: ...
    @property
    def delivery_latency(self) -> LatencyHistogram: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeParts:
    """Everything the admin endpoints read from one node.

    Attributes:
        broker: The broker (listeners, connections, hub).
        storage: Where messages and accounts live (the readiness probe writes and reads it).
        storage_kind: `sqlite` or `mongodb` (for `/status`).
        password_stats: The "password" method's counters, when it is configured.
        logic: The embedded logic service, if any.
        bridges: The bridge service, if any.
        cluster: The cluster link in cluster mode.
        version: The server's version.
        data_dir: The node's data directory (for `/status`).
    """

    broker: BrokerView
    storage: StorageProbe
    storage_kind: str
    password_stats: PasswordCheckStats | None = None
    logic: LogicView | None = None
    bridges: BridgesView | None = None
    cluster: ClusterView | None = None
    version: str = ""
    data_dir: str = ""
