"""`Listener`: one socket the broker listens on, as configured, and opening it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import websockets
from amqtt.contexts import ListenerType

from mqim.broker._exceptions import ConfigError
from mqim.broker._proxy_gate import proxy_gate
from mqim.broker._settings import BrokerSettings
from mqim.broker._ws import serve_websocket, ws_limits


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    """A listening socket.

    Attributes:
        name: Unique name; the first listener is amqtt's "default".
        kind: "tcp" (MQTT, optionally TLS) or "ws" (MQTT over WebSocket, optionally TLS).
        host: Address to bind.
        port: Port to bind; 0 picks a free one (see `MqimBroker.port`).
        certfile: PEM certificate chain; with `keyfile`, turns on TLS.
        keyfile: PEM private key.
        cafile: CA bundle to verify client certificates (optional client auth).
        max_connections: Connections on this listener; 0 leaves only the global limit.
        proxy_protocol: Read a PROXY protocol header (v1 or v2) from sockets of `proxy_from`
            first and use the client address it names (plain TCP listeners only).
        proxy_from: Addresses or networks of the load balancers allowed to send that header.
    """

    name: str
    kind: Literal["tcp", "ws"] = "tcp"
    host: str = "127.0.0.1"
    port: int = 1883
    certfile: Path | None = None
    keyfile: Path | None = None
    cafile: Path | None = None
    max_connections: int = 0
    proxy_protocol: bool = False
    proxy_from: tuple[str, ...] = ()


async def open_server(
    factory: Callable[[], asyncio.Protocol],
    *,
    listener_type: ListenerType,
    address: str | None,
    port: int,
    ssl_context: ssl.SSLContext | None,
    spec: Listener | None,
    settings: BrokerSettings,
) -> Any:
    """Open one listening socket whose connections `factory` makes: TCP (behind the PROXY
    protocol gate when `spec` asks for it) or WebSocket."""
    if listener_type == ListenerType.TCP:
        loop = asyncio.get_running_loop()
        if spec is not None and spec.proxy_protocol:
            if ssl_context is not None:
                raise ConfigError(
                    f"listener {spec.name!r}: PROXY protocol on a TLS listener is not supported"
                )
            # The connection sees the client's address from the header (limits, logs, auth).
            factory = proxy_gate(factory, proxy_from=spec.proxy_from, timeout_s=settings.connect_timeout_s)
        return await loop.create_server(
            factory,
            address,
            port,
            ssl=ssl_context,
            reuse_address=True,
            backlog=4096,
        )
    if listener_type == ListenerType.WS:
        limits = ws_limits(settings)
        return await websockets.serve(
            partial(serve_websocket, protocol_factory=factory),
            address,
            port,
            ssl=ssl_context,
            subprotocols=[websockets.Subprotocol("mqtt")],
            max_size=limits.max_size,
            max_queue=limits.max_queue,
        )
    raise ConfigError(f"unsupported listener type {listener_type}")
