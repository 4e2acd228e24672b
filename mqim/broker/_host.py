"""`ConnectionHost`: what a client connection needs from the broker that accepted it.

`MqttConnection` (and its CONNECT path, `ConnectHandshake`) reach their broker only through
this contract, so none of the connection's modules imports `_broker.py`; `MqimBroker` is a
`ConnectionHost[MqttConnection]`. The connection type is the contract's parameter: the host is
asked about connections of that type and keeps some of them (per-user tables, kicks, the
keepalive sweep), so it works with the concrete class while the contract never names it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

from mqim.acl import Identity
from mqim.broker._hub import Hub
from mqim.broker._settings import BrokerSettings
from mqim.mqtt import Connect, Publish
from mqim.protocol import ErrorCode

ConnT_contra = TypeVar("ConnT_contra", contravariant=True)


class ConnectionHost(Protocol[ConnT_contra]):
    """The broker as its connections see it: routing, limits, authentication, admission, wills."""

    @property
    def hub(self) -> Hub:
        """Sessions, routing, durability and counters."""
        ...

    @property
    def settings(self) -> BrokerSettings:
        """The limits."""
        ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the connections run on."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run a task owned by the host (closed with it)."""
        ...

    def connection_opened(self, conn: ConnT_contra) -> bool:
        """Count a new socket; False when a limit is reached (its CONNECT gets CONNACK 3)."""
        ...

    def connection_established(self, conn: ConnT_contra) -> None:
        """The CONNECT was accepted: from now on its keepalive (MQTT-3.1.2-24) is watched."""
        ...

    def connection_closed(self, conn: ConnT_contra) -> None:
        """Release the slot of a socket; called exactly once per `connection_opened`."""
        ...

    async def authenticate(self, conn: ConnT_contra, connect: Connect) -> Identity | None:
        """Who the client of `conn` is, or None to refuse it (CONNACK 4)."""
        ...

    def admit_connection(self, conn: ConnT_contra, identity: Identity) -> tuple[int, str] | None:
        """Called once authentication succeeded: None admits, else (CONNACK code, reason)."""
        ...

    def admit_publish(self, conn: ConnT_contra, pub: Publish) -> str | None:
        """None to route `pub`, or the reason it is refused (the client is told)."""
        ...

    def accept_special_publish(self, conn: ConnT_contra, pub: Publish) -> bool:
        """Whether a PUBLISH to a `$SYS` topic is a notice the host takes (a bridge's state)."""
        ...

    def dropped_sys_publish(self, conn: ConnT_contra, topic: str) -> None:
        """Note a client PUBLISH to `$SYS/...` that was acknowledged and dropped."""
        ...

    def no_consumer(self, conn: ConnT_contra, topic: str) -> None:
        """Note an IM request that no logic service could take (the connection closes)."""
        ...

    def publish_will(self, conn: ConnT_contra) -> None:
        """Publish the will of `conn`'s client once (abnormal close, keepalive expiry, takeover)."""
        ...

    def tell_error(self, identity: Identity, payload: bytes, code: ErrorCode, message: str) -> None:
        """Send an `error` payload to a user's inbox, echoing the request id when it has one."""
        ...
