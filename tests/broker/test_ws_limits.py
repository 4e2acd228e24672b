"""MQTT over WebSocket: packet limits hold as over TCP; what `websockets` may buffer is bounded."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Self

import websockets
from websockets.asyncio.client import ClientConnection, connect

from mqim import mqtt as c
from mqim.broker import BrokerSettings, Listener
from mqim.broker._ws import ws_limits
from tests.broker.conftest import ServerFactory
from tests.support.mqtt import Raw

MAX_PACKET = 1024
DISCARD = 64 * 1024
READ_TIMEOUT_S = 5.0  # a bound on waiting for an expected packet, not an assertion


class WsMqtt:
    """A raw MQTT client over WebSocket: sends bytes as given, decodes what the broker sends."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._decoder = c.PacketDecoder(max_packet_bytes=1 << 20)
        self._frames: deque[c.Frame] = deque()

    @classmethod
    async def open(cls, port: int, client_id: str) -> Self:
        ws = await connect(
            f"ws://127.0.0.1:{port}/", subprotocols=[websockets.Subprotocol("mqtt")], max_size=None
        )
        client = cls(ws)
        await client.send(Raw.connect_packet(client_id=client_id))
        assert await client.read() == (c.CONNACK, 0, b"\x00\x00")
        return client

    async def send(self, *messages: bytes) -> None:
        for message in messages:
            await self.ws.send(message)

    async def read(self) -> c.Frame | None:
        """The next packet from the broker, or None once the connection is closed."""
        while not self._frames:
            try:
                message = await asyncio.wait_for(self.ws.recv(), READ_TIMEOUT_S)
            except websockets.ConnectionClosed:
                return None
            assert isinstance(message, bytes)
            self._frames.extend(self._decoder.feed(message))
        return self._frames.popleft()

    async def publish(self, topic: str, payload: bytes, pid: int) -> None:
        await self.send(Raw.publish_packet(topic, payload, qos=1, pid=pid))
        assert await self.read() == (c.PUBACK, 0, pid.to_bytes(2, "big"))

    async def close(self) -> None:
        await self.ws.close()


async def _ws_server(make_server: ServerFactory) -> int:
    server = await make_server(
        max_packet_bytes=MAX_PACKET,
        max_publish_discard_bytes=DISCARD,
        listeners=[Listener(name="default", port=0), Listener(name="ws", kind="ws", port=0)],
    )
    return server.port("ws")


def test_websocket_limits_fit_the_discard_bound_and_keep_the_queue_small() -> None:
    default = ws_limits(BrokerSettings())
    assert default.max_size == 16 * 1024 * 1024 + 5  # one PUBLISH of the hard bound
    assert default.max_queue == 1
    # Without a discard band the limits are what they were: 16 messages of max_packet_bytes.
    plain = ws_limits(BrokerSettings(max_packet_bytes=256 * 1024, max_publish_discard_bytes=0))
    assert (plain.max_size, plain.max_queue) == (256 * 1024 + 5, 16)


async def test_publish_over_websocket_is_routed(make_server: ServerFactory, topic: str) -> None:
    port = await _ws_server(make_server)
    sub = await WsMqtt.open(port, "ws-sub")
    await sub.send(Raw.subscribe_packet(f"{topic}/#", 1, pid=1))
    assert await sub.read() == (c.SUBACK, 0, b"\x00\x01\x01")
    pub = await WsMqtt.open(port, "ws-pub")
    await pub.publish(f"{topic}/a", b"hello", pid=3)
    frame = await sub.read()
    assert frame is not None
    assert frame[0] == c.PUBLISH
    assert isinstance(frame[2], bytes)
    assert c.decode_publish(frame[1], frame[2]).payload == b"hello"
    await pub.close()
    await sub.close()


async def test_websocket_message_over_the_hard_bound_closes_the_connection(
    make_server: ServerFactory, topic: str
) -> None:
    port = await _ws_server(make_server)
    pub = await WsMqtt.open(port, "ws-huge")
    await pub.send(Raw.publish_packet(f"{topic}/a", bytes(DISCARD + 1), qos=1, pid=4))
    assert await pub.read() is None


async def _oversize_is_acknowledged(make_server: ServerFactory, topic: str, *, split: int | None) -> None:
    port = await _ws_server(make_server)
    sub = await WsMqtt.open(port, "ws-sub")
    await sub.send(Raw.subscribe_packet(f"{topic}/#", 1, pid=1))
    assert await sub.read() == (c.SUBACK, 0, b"\x00\x01\x01")
    pub = await WsMqtt.open(port, "ws-big")
    big = Raw.publish_packet(f"{topic}/big", bytes(DISCARD - 100), qos=1, pid=5)
    pieces = [big] if split is None else [big[i : i + split] for i in range(0, len(big), split)]
    await pub.send(*pieces)
    # Discarded, yet acknowledged: a client persisting its QoS 1 messages does not resend it.
    assert await pub.read() == (c.PUBACK, 0, b"\x00\x05")
    await pub.publish(f"{topic}/small", b"after", pid=6)
    frame = await sub.read()
    assert frame is not None
    assert isinstance(frame[2], bytes)
    assert c.decode_publish(frame[1], frame[2]).topic == f"{topic}/small"
    await pub.close()
    await sub.close()


async def test_oversize_publish_in_one_websocket_message_is_acknowledged(
    make_server: ServerFactory, topic: str
) -> None:
    await _oversize_is_acknowledged(make_server, topic, split=None)


async def test_oversize_publish_over_many_websocket_messages_is_acknowledged(
    make_server: ServerFactory, topic: str
) -> None:
    await _oversize_is_acknowledged(make_server, topic, split=4096)
