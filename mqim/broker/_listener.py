"""`Listener`: one socket the broker listens on, as configured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


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
