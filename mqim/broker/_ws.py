"""MQTT over WebSocket: adapts a `websockets` connection to an asyncio transport for a protocol.

Each binary WebSocket message is handed to the connection's decoder as it is; a message may hold
several MQTT packets or part of one (MQTT 3.1.1 section 6), so the decoder's limits apply
unchanged. `websockets` buffers every message whole, so `ws_limits` bounds what one connection
can make it hold. The protocol (the broker's `MqttConnection`) comes from a factory, as for
`loop.create_server`, so this module knows only `asyncio.Protocol`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import websockets
from websockets.asyncio.server import ServerConnection

if TYPE_CHECKING:
    from mqim.broker._settings import BrokerSettings

log = logging.getLogger("mqim.broker.ws")

_HIGH_WATER = 256  # queued frames before the connection is told to stop writing
_FIXED_HEADER_MAX: Final = 5  # packet type byte and a four-byte remaining length (MQTT-2.2.3)
_QUEUE_FRAMES: Final = 16  # websockets' default frame queue, sized for max_packet_bytes messages


@dataclass(frozen=True, slots=True, kw_only=True)
class WsLimits:
    """What one MQTT-over-WebSocket connection may make `websockets` buffer.

    Pass both to `websockets.serve(max_size=..., max_queue=...)`.

    Attributes:
        max_size: Largest WebSocket message accepted; a bigger one closes the connection (close
            code 1009). It fits one PUBLISH of `max_publish_discard_bytes`, so a PUBLISH the
            decoder would discard and acknowledge is not refused by the WebSocket layer first.
        max_queue: Received messages `websockets` queues while the broker is not reading
            (back-pressure) before it stops reading the socket.
    """

    max_size: int
    max_queue: int


def ws_limits(settings: BrokerSettings) -> WsLimits:
    """The `websockets.serve` limits for `settings`.

    A connection then holds at most about `(max_queue + 3) * max_size` bytes: the queued
    messages, one frame being read, the message being decoded and the decoder's transient copy
    of it (released before `feed` returns when the message is a discarded PUBLISH).
    """
    largest = max(settings.max_packet_bytes, settings.max_publish_discard_bytes)
    max_size = largest + _FIXED_HEADER_MAX
    # Keep the queue's worst case near the one of 16 messages of max_packet_bytes: with the
    # default 16 MiB discard bound a single message is queued.
    budget = _QUEUE_FRAMES * (settings.max_packet_bytes + _FIXED_HEADER_MAX)
    return WsLimits(max_size=max_size, max_queue=max(1, budget // max_size))


class WsTransport(asyncio.Transport):
    """Minimal transport over a WebSocket: binary frames out through an owned sender task."""

    def __init__(self, *, websocket: ServerConnection, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._ws = websocket
        self._protocol = protocol
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closing = False
        self._paused_writing = False
        self.reading = asyncio.Event()
        self.reading.set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._ws.remote_address
        if name in ("peercert", "ssl_object"):
            return self._ws.transport.get_extra_info(name, default)
        return default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        self._outbox.put_nowait(bytes(data))
        if not self._paused_writing and self._outbox.qsize() > _HIGH_WATER:
            self._paused_writing = True
            self._protocol.pause_writing()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._outbox.put_nowait(None)

    def abort(self) -> None:
        self.close()
        self._ws.transport.abort()

    def pause_reading(self) -> None:
        self.reading.clear()

    def resume_reading(self) -> None:
        self.reading.set()

    def is_reading(self) -> bool:
        return self.reading.is_set()

    async def send_loop(self) -> None:
        """Send queued frames in order until closed."""
        while True:
            data = await self._outbox.get()
            if data is None:
                await self._ws.close()
                return
            try:
                await self._ws.send(data)
            except websockets.ConnectionClosed:
                self._closing = True
                return
            if self._paused_writing and self._outbox.qsize() < _HIGH_WATER // 4:
                self._paused_writing = False
                self._protocol.resume_writing()


async def serve_websocket(
    websocket: ServerConnection, *, protocol_factory: Callable[[], asyncio.Protocol]
) -> None:
    """Run one MQTT-over-WebSocket connection until it closes.

    Args:
        websocket: The accepted WebSocket connection (`websockets.serve` passes it).
        protocol_factory: Makes the protocol that reads and writes MQTT over it.
    """
    protocol = protocol_factory()
    transport = WsTransport(websocket=websocket, protocol=protocol)
    protocol.connection_made(transport)
    error: Exception | None = None
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(transport.send_loop(), name="mqim-ws-send")
            try:
                async for message in websocket:
                    if isinstance(message, str):
                        log.warning(
                            "text frame on an MQTT WebSocket from %s; closing", websocket.remote_address
                        )
                        break
                    protocol.data_received(message)
                    if transport.is_closing():
                        break
                    await transport.reading.wait()
            except websockets.ConnectionClosed as exc:
                error = exc
            finally:
                transport.close()
    finally:
        protocol.connection_lost(error)
