"""One MQTT 3.1.1 client connection for the logic service's bus: an `asyncio.Protocol`, no task per packet.

The logic worker's MQTT traffic is four packets per message (the request in, three replies
out) plus their acknowledgements; a general-purpose client library spent more than the whole
service on them. This link decodes with `mqim.mqtt`, coalesces everything written in one loop
tick into one send, and resolves publish futures from PUBACKs by packet id.

Synchronous callbacks: `on_publish(publish)` for each PUBLISH received, `on_lost(exc)` once when
the connection ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mqim import mqtt

_log = logging.getLogger(__name__)


class LinkClosed(Exception):
    """The connection ended before the answer came."""


class MqttLink(asyncio.Protocol):
    """The client side of one MQTT connection.

    Args:
        on_publish: Called with each PUBLISH received (synchronously, in order).
        on_lost: Called once when the connection ends, with the error if any.
        max_packet_bytes: Largest packet accepted from the broker.
    """

    def __init__(
        self,
        *,
        on_publish: Callable[[mqtt.Publish], None],
        on_lost: Callable[[Exception | None], None],
        max_packet_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._on_publish = on_publish
        self._on_lost = on_lost
        self._decoder = mqtt.PacketDecoder(max_packet_bytes=max_packet_bytes)
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] | None = None
        self._connack: asyncio.Future[tuple[bool, int]] = asyncio.get_running_loop().create_future()
        self._waiting: dict[int, asyncio.Future[list[int]]] = {}  # SUBACK by packet id
        self.acks: dict[int, asyncio.Future[None]] = {}  # PUBACK by packet id
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed = False
        self.last_rx = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self.last_rx = asyncio.get_running_loop().time()
        try:
            for packet_type, flags, body in self._decoder.feed(data):
                if not isinstance(body, bytes):
                    raise mqtt.MalformedPacket("oversize packet from the broker")
                self._dispatch(packet_type, flags, body)
        except mqtt.ProtocolViolation as exc:
            _log.warning("closing the bus connection: the broker broke MQTT: %s", exc)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()  # wake writers: they see `closed`
        error = LinkClosed(f"connection lost: {exc}" if exc else "connection closed")
        if not self._connack.done():
            self._connack.set_exception(error)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()
        self._on_lost(exc)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # -- output --------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue bytes; everything written in one loop tick leaves in one send."""
        if self.closed or self._transport is None:
            return
        if self._out is None:
            self._out = [data]
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._out.append(data)

    def _flush(self) -> None:
        out, self._out = self._out, None
        transport = self._transport
        if out and transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def close(self) -> None:
        self._flush()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    # -- requests ------------------------------------------------------------------------------
    async def connack(self) -> tuple[bool, int]:
        """Wait for the CONNACK: `(session_present, return_code)`."""
        return await self._connack

    async def subscribe(self, packet_id: int, filters: list[tuple[str, int]]) -> list[int]:
        """SUBSCRIBE and wait for the SUBACK's return codes."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._waiting[packet_id] = future
        self.write(mqtt.encode_subscribe(packet_id, filters))
        return await future

    # -- input ---------------------------------------------------------------------------------
    def _dispatch(self, packet_type: int, flags: int, body: bytes) -> None:
        if packet_type == mqtt.PUBLISH:
            self._on_publish(mqtt.decode_publish(flags, body))
        elif packet_type == mqtt.PUBACK:
            future = self.acks.pop(mqtt.decode_ack(packet_type, flags, body), None)
            if future is not None and not future.done():
                future.set_result(None)
        elif packet_type == mqtt.PUBREL:
            # A QoS 2 request (the worker subscribes at QoS 1, so only from a broker that
            # grants more): complete the flow; the request itself was handed over at PUBLISH.
            self.write(mqtt.encode_ack(mqtt.PUBCOMP, mqtt.decode_ack(packet_type, flags, body)))
        elif packet_type == mqtt.CONNACK:
            if not self._connack.done():
                self._connack.set_result(mqtt.decode_connack(flags, body))
        elif packet_type == mqtt.SUBACK:
            pid, codes = mqtt.decode_suback(flags, body)
            waiter = self._waiting.pop(pid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(codes)
        elif packet_type in (mqtt.PINGRESP, mqtt.UNSUBACK):
            return
        else:
            raise mqtt.MalformedPacket(f"packet type {packet_type} not expected from a broker")
