"""A 1,000-member group: one message reaches every online member.

1,000 real MQTT connections from one process: a minimal asyncio client speaking raw MQTT bytes
(the packet builders of `tests.support.mqtt.Raw`), one socket per member, no thread per client.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from mqim.broker import BrokerSettings, Listener
from mqim.server import EmbeddedServer
from mqim.storage import _passwords
from tests.conftest import PASSWORD, Users
from tests.e2e._im import cmd_ok
from tests.support.mqtt import Raw

MEMBERS = 1_000

CONNACK, PUBLISH, PUBACK = 2, 3, 4


class AsyncRawClient:
    """One MQTT 3.1.1 connection on asyncio streams: CONNECT, then receive QoS 0/1 PUBLISHes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, *, user: str, client_id: str) -> AsyncRawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        writer.write(Raw.connect_packet(client_id=client_id, user=user, password=PASSWORD, keepalive=120))
        kind, _, body = await client.read_packet()
        assert (kind, body[1]) == (CONNACK, 0), f"CONNACK {body!r} for {user}"
        return client

    async def read_packet(self) -> tuple[int, int, bytes]:
        first = (await self.reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await self.reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return first >> 4, first & 0x0F, await self.reader.readexactly(length)

    async def next_publish(self, suffix: str) -> tuple[str, bytes]:
        """The next PUBLISH whose topic ends with `suffix` (acknowledged if QoS 1)."""
        while True:
            kind, flags, body = await self.read_packet()
            if kind != PUBLISH:
                continue
            (size,) = struct.unpack("!H", body[:2])
            topic = body[2 : 2 + size].decode()
            rest = body[2 + size :]
            if (flags >> 1) & 0x03:
                self.writer.write(bytes((PUBACK << 4, 2)) + rest[:2])
                rest = rest[2:]
            if topic.endswith(suffix):
                return topic, rest

    def close(self) -> None:
        self.writer.close()


@pytest.mark.slow
async def test_one_message_reaches_all_1000_online_members(
    tmp_path: Path, uid: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Test accounts with a cheap scrypt cost: 1,000 logins at full cost would take a minute.
    monkeypatch.setattr(_passwords, "SCRYPT_N", 2**4)
    settings = BrokerSettings(connect_timeout_s=30.0, connect_rate_per_address=0, max_connections=3_000)
    async with EmbeddedServer(
        data_dir=tmp_path / "data", listeners=[Listener(name="default", port=0)], settings=settings
    ) as server:
        users = Users(server, uid)
        clients: list[AsyncRawClient] = []
        try:
            async with asyncio.timeout(60):
                owner = await users.add("owner")
                members = [uid(f"m{i}") for i in range(MEMBERS - 1)]
                await asyncio.gather(*(server.storage.add_user(m, password=PASSWORD) for m in members))
                owner_c = await users.connected(owner)
                group = uid("big")
                created = await cmd_ok(owner_c, owner, "group.create", group=group, members=members)
                assert created["count"] == MEMBERS

                port = server.port()
                gate = asyncio.Semaphore(100)

                async def join(user: str) -> AsyncRawClient:
                    async with gate:
                        return await AsyncRawClient.connect(port, user=user, client_id=f"{user}-raw")

                clients.extend(await asyncio.gather(*(join(m) for m in members)))
                await owner_c.publish(
                    f"im/v1/up/{owner}/msg", {"v": 1, "id": "big-1", "group": group, "text": "hello, all"}
                )
                received = await asyncio.gather(*(c.next_publish("/msg") for c in clients))
            assert {topic for topic, _ in received} == {f"im/v1/g/{group}/msg"}
            assert len({payload for _, payload in received}) == 1  # the same message, once each
            assert b'"seq":1' in received[0][1]
            assert b"hello, all" in received[0][1]
            assert len(received) == MEMBERS - 1
        finally:
            for client in clients:
                client.close()
            users.close_all()
