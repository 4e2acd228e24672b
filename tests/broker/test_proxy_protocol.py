"""PROXY protocol v1/v2 on a listener: a hand-written load balancer on loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from mqim.broker import Listener
from mqim.broker._exceptions import ProxyHeaderError
from mqim.broker._proxy import (
    MAX_V2_PAYLOAD_BYTES,
    V1_MAX_BYTES,
    V2_SIGNATURE,
    ProxyHeaderParser,
    encode_v1,
    encode_v2,
)
from mqim.server import EmbeddedServer
from tests.broker.aioraw import AioRaw
from tests.broker.conftest import ServerFactory
from tests.support.mqtt import Raw

PROXIED = [Listener(name="default", port=0, proxy_protocol=True, proxy_from=("127.0.0.1",))]
DEST = ("10.0.0.1", 1883)

Opener = Callable[..., Awaitable[AioRaw]]


@pytest.fixture
async def open_conn() -> AsyncIterator[Opener]:
    """Raw sockets to a port, optionally from another loopback address; closed at teardown."""
    opened: list[AioRaw] = []

    async def open_(port: int, *, header: bytes = b"", source: str = "127.0.0.1") -> AioRaw:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 10
        )
        conn = AioRaw(reader, writer)
        opened.append(conn)
        if header:
            conn.send(header)
        return conn

    yield open_
    for conn in opened:
        await conn.close()


async def connack(conn: AioRaw, client_id: str) -> int:
    return (await conn.connect(client_id))[1]


async def proxied_server(make_server: ServerFactory, **limits: Any) -> EmbeddedServer:
    return await make_server(listeners=PROXIED, **limits)


async def test_each_clients_own_address_meets_the_per_address_limit(
    make_server: ServerFactory, open_conn: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    server = await proxied_server(make_server, connect_rate_per_address=0.01, connect_burst_per_address=3)
    port = server.port()
    caplog.set_level(logging.INFO, logger="mqim.broker")
    # Every socket comes from 127.0.0.1 (the "load balancer"); the headers name the clients.
    for i in range(3):
        conn = await open_conn(port, header=encode_v1(("203.0.113.5", 40000 + i), DEST))
        assert await connack(conn, f"a{i}") == 0
    over = await open_conn(port, header=encode_v1(("203.0.113.5", 40009), DEST))
    assert await connack(over, "a3") == 3  # that client's own burst is spent
    # Other clients behind the same balancer are not affected: v2, IPv4 and IPv6.
    for i, source in enumerate([("203.0.113.6", 41000), ("2001:db8::7", 42000), ("203.0.113.6", 41001)]):
        dest = ("2001:db8::1", 1883) if ":" in source[0] else DEST
        conn = await open_conn(port, header=encode_v2(source, dest, tlv=b"\x04\x00\x01x"))
        assert await connack(conn, f"b{i}") == 0
    assert "connect rate of 203.0.113.5 exceeded" in caplog.text
    assert "127.0.0.1" not in caplog.text.split("connect rate of")[1].splitlines()[0]


async def test_the_logs_name_the_proxied_client(
    make_server: ServerFactory, open_conn: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    server = await proxied_server(make_server)
    caplog.set_level(logging.INFO, logger="mqim.broker.connection")
    conn = await open_conn(server.port(), header=encode_v1(("198.51.100.23", 55123), DEST))
    # An empty client id with clean_session=0 is refused (CONNACK 2), and the refusal is logged.
    conn.send(Raw.connect_packet(client_id="", clean=False))
    assert (await conn.expect(2)).body[1] == 2
    assert "refusing CONNECT from 198.51.100.23:55123" in caplog.text
    # The header may arrive in pieces, with the CONNECT in the same segment as its end.
    conn = await open_conn(server.port())
    header = encode_v2(("198.51.100.24", 55124), DEST)
    for byte in header[:-1]:
        conn.send(bytes([byte]))
        await asyncio.sleep(0)
    conn.send(header[-1:] + Raw.connect_packet(client_id="c-split"))
    packet = await conn.expect(2)
    assert packet.body[1] == 0


async def test_a_header_from_an_untrusted_address_is_refused(
    make_server: ServerFactory, open_conn: Opener
) -> None:
    server = await proxied_server(make_server)
    port = server.port()
    # 127.0.0.2 is loopback too, but not a configured proxy: it may not claim an address.
    for header in (encode_v1(("203.0.113.9", 1), DEST), encode_v2(("203.0.113.9", 1), DEST)):
        conn = await open_conn(port, header=header, source="127.0.0.2")
        assert await conn.closed_by_server()
    # It may still speak MQTT directly, with its own address.
    direct = await open_conn(port, source="127.0.0.2")
    assert await connack(direct, "direct") == 0


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"", id="no-header"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", id="v1-malformed"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", id="v1-bad-port"),
        pytest.param(b"PROXY TCP4 " + b"1" * 120, id="v1-too-long"),
        pytest.param(
            V2_SIGNATURE + b"\x21\x11" + (MAX_V2_PAYLOAD_BYTES + 1).to_bytes(2, "big"), id="v2-too-long"
        ),
        pytest.param(V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12), id="v2-version-3"),
    ],
)
async def test_a_trusted_proxy_without_a_valid_header_is_closed(
    make_server: ServerFactory, open_conn: Opener, header: bytes
) -> None:
    server = await proxied_server(make_server)
    conn = await open_conn(server.port(), header=header)
    if not header:
        conn.send(Raw.connect_packet(client_id="no-header"))
    assert await conn.closed_by_server()


async def test_with_the_feature_off_a_proxy_header_is_a_protocol_violation(
    tserver: EmbeddedServer, open_conn: Opener
) -> None:
    for header in (encode_v1(("203.0.113.9", 1), DEST), encode_v2(("203.0.113.9", 1), DEST)):
        conn = await open_conn(tserver.port(), header=header)
        assert await conn.closed_by_server()


async def test_local_and_unknown_keep_the_proxys_address(
    make_server: ServerFactory, open_conn: Opener
) -> None:
    server = await proxied_server(make_server)
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"  # LOCAL: a balancer's health check
    for i, header in enumerate((local, b"PROXY UNKNOWN\r\n")):
        conn = await open_conn(server.port(), header=header)
        assert await connack(conn, f"hc{i}") == 0


# -- the parser ----------------------------------------------------------------------------------
def test_parser_is_incremental_and_returns_what_follows() -> None:
    for header in (encode_v1(("192.0.2.1", 1234), DEST), encode_v2(("2001:db8::2", 4321), ("::1", 1))):
        parser = ProxyHeaderParser()
        for byte in header[:-1]:
            assert parser.feed(bytes([byte])) is None
        done = parser.feed(header[-1:] + b"\x10rest")
        assert done is not None
        parsed, rest = done
        assert rest == b"\x10rest"
        assert parsed.length == len(header)
        assert parsed.source in (("192.0.2.1", 1234), ("2001:db8::2", 4321))


def test_parser_bounds() -> None:
    # The specification's worst case: UNKNOWN with two full IPv6 addresses and ports.
    longest = b"PROXY UNKNOWN " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 7 + b"ffff 65535 65535\r\n"
    assert len(longest) == V1_MAX_BYTES
    assert ProxyHeaderParser().feed(longest) is not None
    with pytest.raises(ProxyHeaderError):
        ProxyHeaderParser().feed(b"PROXY TCP6 " + b"f" * (V1_MAX_BYTES - 11))
    with pytest.raises(ProxyHeaderError):
        ProxyHeaderParser().feed(b"\x10\x0c\x00\x04MQTT")  # plain CONNECT is not a header
    with pytest.raises(ProxyHeaderError):
        ProxyHeaderParser().feed(b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n")  # family mismatch
