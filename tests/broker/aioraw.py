"""An asyncio raw-socket MQTT 3.1.1 client for conformance tests.

It sends exactly the bytes a test asks for and reports exactly what the server sends back, so
tests can check flags (DUP, RETAIN, QoS), packet ids and the server closing the socket. Packets
are built with `tests.support.mqtt.Raw`'s builders; replies are parsed here, independently of the
broker's codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import deque
from dataclasses import dataclass

from tests.support.mqtt import Raw

CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP = 2, 3, 4, 5, 6, 7, 9, 11, 13


@dataclass(frozen=True)
class Packet:
    type: int
    flags: int
    body: bytes

    @property
    def pid(self) -> int:
        """Packet id of an acknowledgement, SUBACK or UNSUBACK."""
        return int(struct.unpack_from("!H", self.body, 0)[0])


@dataclass(frozen=True)
class Pub:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    pid: int | None


def parse_publish(packet: Packet) -> Pub:
    assert packet.type == PUBLISH, f"expected PUBLISH, got type {packet.type}"
    (size,) = struct.unpack_from("!H", packet.body, 0)
    topic = packet.body[2 : 2 + size].decode()
    pos = 2 + size
    qos = (packet.flags >> 1) & 3
    pid = None
    if qos:
        (pid,) = struct.unpack_from("!H", packet.body, pos)
        pos += 2
    return Pub(topic, packet.body[pos:], qos, bool(packet.flags & 1), bool(packet.flags & 8), pid)


def ack(packet_type: int, pid: int) -> bytes:
    return bytes(((packet_type << 4) | (2 if packet_type == PUBREL else 0), 2)) + struct.pack("!H", pid)


def unsubscribe_packet(topic_filter: str, pid: int) -> bytes:
    raw = topic_filter.encode()
    body = struct.pack("!H", pid) + struct.pack("!H", len(raw)) + raw
    return bytes((0xA2, len(body))) + body


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


class AioRaw:
    """One raw MQTT connection on the running event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        # PUBLISHes that arrived while `expect` waited for something else (a client may get its
        # own message before the PUBACK of the publish); `read` returns them first.
        self._stash: deque[Packet] = deque()

    @classmethod
    async def open(cls, port: int) -> AioRaw:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read(self, timeout: float = 5.0) -> Packet | None:
        """The next packet; None when the server closed the connection. TimeoutError if silent."""
        if self._stash:
            return self._stash.popleft()
        async with asyncio.timeout(timeout):
            try:
                first = await self.reader.readexactly(1)
                length, mult = 0, 1
                for _ in range(4):
                    byte = (await self.reader.readexactly(1))[0]
                    length += (byte & 0x7F) * mult
                    if not byte & 0x80:
                        break
                    mult *= 128
                body = await self.reader.readexactly(length) if length else b""
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
        return Packet(first[0] >> 4, first[0] & 0x0F, body)

    async def expect(self, packet_type: int, timeout: float = 5.0) -> Packet:
        """The next packet, which must be of `packet_type`; PUBLISHes met meanwhile are kept."""
        if packet_type == PUBLISH:
            packet = await self.read(timeout)
        else:
            packet = await self._read_skipping_publish(timeout)
        assert packet is not None, f"connection closed while waiting for packet type {packet_type}"
        assert packet.type == packet_type, f"expected packet type {packet_type}, got {packet}"
        return packet

    async def _read_skipping_publish(self, timeout: float) -> Packet | None:
        stash, self._stash = self._stash, deque()
        try:
            packet = await self.read(timeout)
            while packet is not None and packet.type == PUBLISH:
                stash.append(packet)
                packet = await self.read(timeout)
        finally:
            self._stash = stash
        return packet

    async def receive(self, timeout: float = 5.0) -> Pub:
        return parse_publish(await self.expect(PUBLISH, timeout))

    async def connect(
        self,
        client_id: str,
        *,
        user: str | None = None,
        password: str | None = None,
        clean: bool = True,
        keepalive: int = 60,
        will: tuple[str, bytes, int, bool] | None = None,
    ) -> tuple[bool, int]:
        """Send CONNECT; return (session present, return code) of the CONNACK."""
        self.send(
            Raw.connect_packet(
                client_id=client_id, user=user, password=password, clean=clean, keepalive=keepalive, will=will
            )
        )
        packet = await self.expect(CONNACK, timeout=10)
        return bool(packet.body[0] & 1), packet.body[1]

    async def subscribe(self, topic_filter: str, qos: int = 1, pid: int = 1) -> int:
        """SUBSCRIBE one filter; return the SUBACK return code."""
        self.send(Raw.subscribe_packet(topic_filter, qos, pid))
        packet = await self.expect(SUBACK)
        assert packet.pid == pid
        return packet.body[2]

    async def unsubscribe(self, topic_filter: str, pid: int = 1) -> None:
        self.send(unsubscribe_packet(topic_filter, pid))
        assert (await self.expect(UNSUBACK)).pid == pid

    async def publish(
        self, topic: str, payload: bytes, qos: int = 0, pid: int = 1, retain: bool = False
    ) -> None:
        """PUBLISH and complete its QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP)."""
        self.send(Raw.publish_packet(topic, payload, qos=qos, pid=pid, retain=retain))
        if qos == 1:
            assert (await self.expect(PUBACK)).pid == pid
        elif qos == 2:
            assert (await self.expect(PUBREC)).pid == pid
            self.send(ack(PUBREL, pid))
            assert (await self.expect(PUBCOMP)).pid == pid

    async def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True if the server closes the socket within `timeout`; packets before that are skipped."""
        try:
            async with asyncio.timeout(timeout):
                while await self.read(timeout) is not None:
                    pass
        except TimeoutError:
            return False
        return True

    async def nothing(self, wait: float = 0.5) -> None:
        """Assert the server sends nothing (and keeps the socket open) for `wait` seconds."""
        try:
            packet = await self.read(wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected {packet}")

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0), as a crashed client or a middlebox would."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
