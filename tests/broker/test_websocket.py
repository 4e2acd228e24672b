"""The WebSocket listener with real clients: paho over websockets (and raw `websockets` for bytes
no client library sends). Connect, QoS 0/1/2, keepalive, wills, garbage, TLS, limits."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from mqim.broker import Listener
from mqim.protocol import InboxKind, inbox_topic
from mqim.server import EmbeddedServer
from tests.broker.conftest import ServerFactory
from tests.conftest import PASSWORD, Users
from tests.support.mqtt import Paho, Raw

WAIT_S = 10.0  # a bound on waiting for what must happen, not a timing assertion


def ws_listeners(**ws: Any) -> list[Listener]:
    return [Listener(name="default", port=0), Listener(name="ws", kind="ws", port=0, **ws)]


def ws_paho(port: int, client_id: str, **kwargs: Any) -> Paho:
    """A `Paho` test client (anonymous unless `user=`) whose transport is WebSocket."""
    kwargs.setdefault("user", None)
    client = Paho(port=port, client_id=client_id, **kwargs)
    client.client.transport = "websockets"
    return client


async def connect_ws(client: Paho, *, bind: str = "") -> int:
    """Connect in a thread (a TLS handshake needs the server's loop running) and return the CONNACK code."""
    await asyncio.to_thread(client.client.connect, "127.0.0.1", client.port, client.keepalive, bind)
    client.client.loop_start()
    assert await asyncio.to_thread(client._connected.wait, WAIT_S), "no CONNACK"
    assert client.connack is not None
    return client.connack[1]


async def drain(conn: ClientConnection) -> None:
    """Read until the server closes (raises `ConnectionClosed`); bounded."""
    for _ in range(10):
        await asyncio.wait_for(conn.recv(), WAIT_S)


@pytest.fixture
def topic() -> str:
    return f"t/{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def wserver(make_server: ServerFactory) -> EmbeddedServer:
    """`t/#` open to everyone, anonymous allowed, a TCP and a WebSocket listener."""
    return await make_server(listeners=ws_listeners())


@pytest.fixture
def clients() -> Iterator[list[Paho]]:
    made: list[Paho] = []
    yield made
    for client in made:
        with contextlib.suppress(Exception):  # best-effort cleanup of test clients
            client.close()


@pytest.fixture
def ws(wserver: EmbeddedServer, clients: list[Paho]) -> Callable[..., Paho]:
    def make(client_id: str, **kwargs: Any) -> Paho:
        client = ws_paho(wserver.port("ws"), client_id, **kwargs)
        clients.append(client)
        return client

    return make


async def test_connect_and_round_trips_at_every_qos(ws: Callable[..., Paho], topic: str) -> None:
    sub, pub = ws("ws-sub"), ws("ws-pub")
    assert await connect_ws(sub) == 0
    assert await connect_ws(pub) == 0
    assert await sub.subscribe(f"{topic}/#", qos=2) == 2
    for qos in (0, 1, 2):
        await pub.publish(f"{topic}/q{qos}", f"over ws at qos {qos}".encode(), qos=qos)
        got = await sub.receive(WAIT_S)
        assert (got.topic, got.payload, got.qos) == (f"{topic}/q{qos}", f"over ws at qos {qos}".encode(), qos)


async def test_ws_and_tcp_clients_talk_to_each_other(
    wserver: EmbeddedServer, ws: Callable[..., Paho], clients: list[Paho], topic: str
) -> None:
    tcp = Paho(port=wserver.port(), user=None, client_id="tcp-1")
    clients.append(tcp)
    await tcp.connect()
    web = ws("ws-1")
    assert await connect_ws(web) == 0
    await web.subscribe(f"{topic}/#", qos=1)
    await tcp.subscribe(f"{topic}/#", qos=1)
    await tcp.publish(f"{topic}/a", b"tcp to ws", qos=1)
    assert (await web.receive(WAIT_S)).payload == b"tcp to ws"
    await web.publish(f"{topic}/b", b"ws to tcp", qos=1)
    assert (await tcp.receive_on("/b", WAIT_S)).payload == b"ws to tcp"


async def test_keepalive_expiry_drops_a_silent_client_and_publishes_its_will(
    ws: Callable[..., Paho], topic: str
) -> None:
    watcher = ws("watcher")
    assert await connect_ws(watcher) == 0
    await watcher.subscribe(f"{topic}/will", qos=1)
    silent = ws("silent", keepalive=1, will=(f"{topic}/will", b"gone quiet", 1, False))
    assert await connect_ws(silent) == 0
    silent.client.loop_stop()  # the socket stays open but nothing is sent: no PINGREQ
    got = await watcher.receive(WAIT_S)  # the broker gives up after 1 s x keepalive_factor
    assert (got.topic, got.payload) == (f"{topic}/will", b"gone quiet")


async def test_will_is_published_when_the_socket_drops(ws: Callable[..., Paho], topic: str) -> None:
    watcher = ws("watcher")
    assert await connect_ws(watcher) == 0
    await watcher.subscribe(f"{topic}/will", qos=1)
    doomed = ws("doomed", will=(f"{topic}/will", b"lost", 1, False))
    assert await connect_ws(doomed) == 0
    doomed.drop()  # no DISCONNECT, no WebSocket close frame
    got = await watcher.receive(WAIT_S)
    assert got.payload == b"lost"


async def test_clean_disconnect_discards_the_will(ws: Callable[..., Paho], topic: str) -> None:
    watcher = ws("watcher")
    assert await connect_ws(watcher) == 0
    await watcher.subscribe(f"{topic}/#", qos=1)
    polite = ws("polite", will=(f"{topic}/will", b"must not appear", 1, False))
    assert await connect_ws(polite) == 0
    polite.close()  # DISCONNECT (MQTT-3.14.4-3)
    await watcher.publish(f"{topic}/marker", b"after", qos=1)
    assert (await watcher.receive(WAIT_S)).payload == b"after"  # nothing came before it


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\xff\xff\xff\xff\xff", id="bad-length"),
        pytest.param(b"\xf0\x00", id="reserved-type"),
        pytest.param(Raw.connect_packet(client_id="again"), id="second-connect"),
        pytest.param("a text frame", id="text-frame"),
    ],
)
async def test_garbage_in_a_ws_message_closes_only_that_connection(
    wserver: EmbeddedServer, ws: Callable[..., Paho], topic: str, garbage: bytes | str
) -> None:
    bystander = ws("bystander")
    assert await connect_ws(bystander) == 0
    await bystander.subscribe(f"{topic}/#", qos=1)
    async with ws_connect(
        f"ws://127.0.0.1:{wserver.port('ws')}/mqtt", subprotocols=[websockets.Subprotocol("mqtt")]
    ) as bad:
        await bad.send(Raw.connect_packet(client_id="vandal"))
        connack = await asyncio.wait_for(bad.recv(), WAIT_S)
        assert connack == b"\x20\x02\x00\x00"
        await bad.send(garbage)
        with pytest.raises(websockets.ConnectionClosed):
            await drain(bad)
    await bystander.publish(f"{topic}/still", b"fine", qos=1)
    assert (await bystander.receive(WAIT_S)).payload == b"fine"


async def test_first_message_that_is_not_connect_closes(wserver: EmbeddedServer) -> None:
    async with ws_connect(
        f"ws://127.0.0.1:{wserver.port('ws')}/mqtt", subprotocols=[websockets.Subprotocol("mqtt")]
    ) as bad:
        await bad.send(Raw.publish_packet("t/x", b"no connect first"))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(bad.recv(), WAIT_S)


async def test_ws_listener_connection_limit_answers_connack_3(
    make_server: ServerFactory, clients: list[Paho]
) -> None:
    server = await make_server(listeners=ws_listeners(max_connections=1))
    first = ws_paho(server.port("ws"), "first")
    second = ws_paho(server.port("ws"), "second")
    clients.extend([first, second])
    assert await connect_ws(first) == 0
    assert await connect_ws(second) == 3
    tcp = Paho(port=server.port(), user=None, client_id="tcp")  # the TCP listener is not full
    clients.append(tcp)
    await tcp.connect()


async def test_oversize_payload_over_ws_is_dropped_and_the_user_told(
    make_server: ServerFactory, clients: list[Paho], uid: Callable[[str], str], topic: str
) -> None:
    server = await make_server(listeners=ws_listeners(), max_payload_bytes=1000)
    users = Users(server, uid)
    alice = await users.add("alice")
    sender = ws_paho(server.port("ws"), "alice-ws", user=alice, password=PASSWORD)
    watcher = ws_paho(server.port("ws"), "watcher")
    clients.extend([sender, watcher])
    assert await connect_ws(watcher) == 0
    await watcher.subscribe(f"{topic}/#", qos=1)
    assert await connect_ws(sender) == 0
    await sender.publish(f"{topic}/big", b"x" * 2000, qos=1)  # acknowledged (3.1.1 has no NACK)
    error = await sender.receive_on(inbox_topic(alice, InboxKind.ERROR), WAIT_S)
    assert error.json()["code"] == "too_large"
    await sender.publish(f"{topic}/small", b"ok", qos=1)  # the connection is still open
    assert (await watcher.receive(WAIT_S)).payload == b"ok"  # and the big one never came


# -- TLS over WebSocket ------------------------------------------------------------------------

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.security.test_tls import CLIENT_EXT, _ca, _leaf

    d = tmp_path_factory.mktemp("ws-pki")
    _ca(d, "ca")
    _leaf(
        d, "server", ca="ca", subject="/CN=localhost",
        extensions="basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )  # fmt: skip
    _leaf(d, "alice", ca="ca", subject="/CN=wss-alice", extensions=CLIENT_EXT)
    return d


@pytest.fixture
async def wss_server(make_server: ServerFactory, pki: Path) -> EmbeddedServer:
    tls = {"certfile": pki / "server.pem", "keyfile": pki / "server.key", "cafile": pki / "ca.pem"}
    server = await make_server(listeners=ws_listeners(**tls))
    await server.storage.add_user("wss-alice", password=PASSWORD)
    return server


@needs_openssl
async def test_tls_over_websocket(
    wss_server: EmbeddedServer, pki: Path, clients: list[Paho], topic: str
) -> None:
    anon = ws_paho(wss_server.port("ws"), "wss-anon")
    anon.client.tls_set(ca_certs=str(pki / "ca.pem"))
    clients.append(anon)
    assert await connect_ws(anon) == 0
    await anon.subscribe(f"{topic}/#", qos=2)
    await anon.publish(f"{topic}/secure", b"over wss", qos=2)
    assert (await anon.receive(WAIT_S)).payload == b"over wss"


@needs_openssl
async def test_client_certificate_over_wss_names_the_user(
    wss_server: EmbeddedServer, pki: Path, clients: list[Paho]
) -> None:
    client = ws_paho(wss_server.port("ws"), "wss-cert")
    client.client.tls_set(
        ca_certs=str(pki / "ca.pem"), certfile=str(pki / "alice.pem"), keyfile=str(pki / "alice.key")
    )
    clients.append(client)
    assert await connect_ws(client) == 0
    assert wss_server.broker is not None
    session = wss_server.broker.hub.sessions.get("wss-cert")
    assert session is not None
    assert session.user == "wss-alice"


@needs_openssl
async def test_plain_websocket_to_a_tls_listener_gets_nowhere(wss_server: EmbeddedServer) -> None:
    with pytest.raises((websockets.InvalidHandshake, websockets.ConnectionClosed, OSError, TimeoutError)):
        await exchange(f"ws://127.0.0.1:{wss_server.port('ws')}/mqtt")


async def exchange(url: str) -> None:
    async with (
        asyncio.timeout(WAIT_S),
        ws_connect(url, subprotocols=[websockets.Subprotocol("mqtt")]) as plain,
    ):
        await plain.send(Raw.connect_packet(client_id="plain"))
        await plain.recv()
