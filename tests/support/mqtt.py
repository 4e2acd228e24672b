"""Test clients: paho-mqtt wrapped for asyncio tests, and a raw-socket MQTT speaker for edge cases."""

from __future__ import annotations

import asyncio
import json
import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

_V5_TO_311 = {0: 0, 132: 1, 133: 2, 136: 3, 134: 4, 135: 5}


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Paho:
    """A paho-mqtt client on its own network thread; awaitable helpers poll with timeouts."""

    def __init__(
        self,
        *,
        port: int,
        user: str | None,
        password: str | None = None,
        client_id: str = "",
        clean_session: bool = True,
        keepalive: int = 30,
        will: tuple[str, bytes, int, bool] | None = None,
        auto_ack: bool = True,
    ) -> None:
        self.port = port
        self.messages: queue.Queue[Received] = queue.Queue()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=paho.MQTTv311,
        )
        self.client.manual_ack_set(not auto_ack)
        if user is not None:
            self.client.username_pw_set(user, password)
        if will is not None:
            self.client.will_set(will[0], will[1], will[2], will[3])
        self.keepalive = keepalive
        self.connack: tuple[bool, int] | None = None
        self.disconnected = threading.Event()
        self._connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        # paho reports a 3.1.1 return code as its MQTT 5 reason code; map it back.
        code = _V5_TO_311.get(int(reason.value), int(reason.value))
        self.connack = (bool(flags.session_present), code)
        self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.disconnected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.messages.put(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), bool(msg.dup)))

    async def connect(self, *, expect_rc: int = 0) -> tuple[bool, int]:
        self.client.connect("127.0.0.1", self.port, keepalive=self.keepalive)
        self.client.loop_start()
        ok = await asyncio.to_thread(self._connected.wait, 10)
        assert ok, "no CONNACK"
        assert self.connack is not None
        if expect_rc is not None:
            assert self.connack[1] == expect_rc, f"CONNACK {self.connack}"
        return self.connack

    async def subscribe(self, topic: str, qos: int = 1) -> int:
        done = threading.Event()
        granted: list[int] = []

        def on_sub(client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
            granted.extend(int(r.value) for r in reasons)
            done.set()

        self.client.on_subscribe = on_sub
        self.client.subscribe(topic, qos)
        assert await asyncio.to_thread(done.wait, 10), "no SUBACK"
        return granted[0]

    async def publish(
        self, topic: str, payload: bytes | str | dict[str, Any], qos: int = 1, retain: bool = False
    ) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            await asyncio.to_thread(info.wait_for_publish, 10)
            assert info.is_published(), "publish not acknowledged"

    async def receive(self, timeout: float = 10.0) -> Received:
        try:
            return await asyncio.to_thread(self.messages.get, True, timeout)
        except queue.Empty:
            raise AssertionError(f"nothing received within {timeout}s") from None

    async def receive_on(self, suffix: str, timeout: float = 10.0) -> Received:
        """Next message whose topic ends with `suffix` (others are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"nothing on *{suffix} within {timeout}s")
            msg = await self.receive(left)
            if msg.topic.endswith(suffix):
                return msg

    async def nothing(self, wait: float = 0.5, suffix: str = "") -> None:
        """Assert that nothing (on topics ending with `suffix`) arrives within `wait` seconds."""
        await asyncio.sleep(wait)
        extra = []
        while not self.messages.empty():
            msg = self.messages.get_nowait()
            if msg.topic.endswith(suffix):
                extra.append(msg)
        assert not extra, f"unexpected: {extra}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def drop(self) -> None:
        """Close the socket without DISCONNECT (an abrupt loss: the will fires)."""
        sock = self.client.socket()
        self.client.loop_stop()
        if sock is not None:
            sock.close()


def _str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _frame(first: int, body: bytes) -> bytes:
    out = bytearray((first,))
    n = len(body)
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + body


class Raw:
    """Speaks MQTT bytes directly, for what client libraries refuse to send."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    @staticmethod
    def connect_packet(
        *,
        client_id: str,
        user: str | None = None,
        password: str | None = None,
        clean: bool = True,
        keepalive: int = 60,
        level: int = 4,
        will: tuple[str, bytes, int, bool] | None = None,
    ) -> bytes:
        flags = 0x02 if clean else 0
        payload = _str(client_id)
        if will is not None:
            flags |= 0x04 | (will[2] << 3) | (0x20 if will[3] else 0)
            payload += _str(will[0]) + struct.pack("!H", len(will[1])) + will[1]
        if user is not None:
            flags |= 0x80
            payload += _str(user)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
        body = _str("MQTT") + bytes((level, flags)) + struct.pack("!H", keepalive) + payload
        return _frame(0x10, body)

    @staticmethod
    def publish_packet(
        topic: str, payload: bytes, qos: int = 0, pid: int = 1, retain: bool = False, dup: bool = False
    ) -> bytes:
        first = 0x30 | (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
        body = _str(topic) + (struct.pack("!H", pid) if qos else b"") + payload
        return _frame(first, body)

    @staticmethod
    def subscribe_packet(topic: str, qos: int = 1, pid: int = 1) -> bytes:
        return _frame(0x82, struct.pack("!H", pid) + _str(topic) + bytes((qos,)))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_packet(self, timeout: float = 5.0) -> tuple[int, int, bytes] | None:
        """(type, flags, body) of the next packet, or None when the server closed the socket."""
        self.sock.settimeout(timeout)
        first = self._read_exact(1)
        if not first:
            return None
        mult, length = 1, 0
        while True:
            b = self._read_exact(1)
            if not b:
                return None
            length += (b[0] & 0x7F) * mult
            if not b[0] & 0x80:
                break
            mult *= 128
        body = self._read_exact(length) if length else b""
        if body is None or len(body) < length:
            return None
        return first[0] >> 4, first[0] & 0x0F, body

    def _read_exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            try:
                chunk = self.sock.recv(n - len(out))
            except (ConnectionResetError, OSError):
                return out
            if not chunk:
                return out
            out += chunk
        return out

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True if the server closes the socket within `timeout` (packets before that are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pkt = self.read_packet(timeout=max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                return False
            if pkt is None:
                return True
        return False

    def close(self) -> None:
        self.sock.close()
