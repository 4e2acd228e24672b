"""Broker fixtures: a server whose ACL opens `t/#` to everyone, raw clients, unique topics."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mqim.acl import AclEngine, parse_rule
from mqim.broker import BrokerSettings, Listener, MqimBroker
from mqim.server import EmbeddedServer
from tests.broker.aioraw import AioRaw
from tests.conftest import Users
from tests.support.mqtt import Paho

# Generic MQTT behaviour is tested on `t/...` topics; `t/<x>/secret/...` may be subscribed to
# (inside `t/#`) but never received, to test that retained messages are checked for RECEIVE.
GENERIC_RULES = (
    "deny all receive t/+/secret/#",
    "allow all publish,subscribe,receive t/#",
)

ServerFactory = Callable[..., Awaitable[EmbeddedServer]]
RawFactory = Callable[..., Awaitable[AioRaw]]


def build_server(
    data_dir: Path,
    *,
    rules: Sequence[str] = GENERIC_RULES,
    allow_anonymous: bool = True,
    builtin: bool = True,
    listeners: Sequence[Listener] = (),
    **limits: Any,
) -> EmbeddedServer:
    """An embedded server (not started) on a free loopback port with `rules` before the built-ins.

    `builtin=False` drops the built-in v1 rules (and their `im/v1/` lock), for tests that need
    filters such as `#`.
    """
    limits.setdefault("connect_timeout_s", 3.0)
    server = EmbeddedServer(
        data_dir=data_dir,
        listeners=list(listeners) or [Listener(name="default", port=0)],
        settings=BrokerSettings(**limits),
        allow_anonymous=allow_anonymous,
        rules=[parse_rule(text) for text in rules],
    )
    if not builtin:
        server.acl = AclEngine(
            rules=[parse_rule(text) for text in rules], membership=server.membership, builtin=False
        )
    return server


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Start servers (see `build_server`); each is stopped at the end of the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(*, data_dir: Path | None = None, **options: Any) -> EmbeddedServer:
            server = build_server(data_dir or tmp_path / "data", **options)
            await stack.enter_async_context(server)
            return server

        yield start


@pytest.fixture
async def tserver(make_server: ServerFactory) -> EmbeddedServer:
    """A server where anyone (anonymous included) may publish/subscribe/receive under `t/`."""
    return await make_server()


def broker_of(server: EmbeddedServer) -> MqimBroker:
    assert server.broker is not None
    return server.broker


@pytest.fixture
async def connect_raw() -> AsyncIterator[RawFactory]:
    """Open raw connections to a port (optionally CONNECTed); all closed at teardown."""
    opened: list[AioRaw] = []

    async def open_raw(port: int, client_id: str | None = None, **connect: Any) -> AioRaw:
        conn = await AioRaw.open(port)
        opened.append(conn)
        if client_id is not None:
            _, rc = await conn.connect(client_id, **connect)
            assert rc == 0, f"CONNACK {rc}"
        return conn

    yield open_raw
    for conn in opened:
        await conn.close()


@pytest.fixture
def raw(tserver: EmbeddedServer, connect_raw: RawFactory) -> RawFactory:
    """Like `connect_raw`, on `tserver`: `await raw("client-id", clean=False)`."""

    async def open_raw(client_id: str | None = None, **connect: Any) -> AioRaw:
        return await connect_raw(tserver.port(), client_id, **connect)

    return open_raw


@pytest.fixture
def topic() -> str:
    """A unique topic prefix under `t/`."""
    return f"t/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def tusers(tserver: EmbeddedServer, uid: Callable[[str], str]) -> Iterator[Users]:
    """Accounts and paho clients on `tserver`."""
    u = Users(tserver, uid)
    yield u
    u.close_all()


@pytest.fixture
def paho(tserver: EmbeddedServer) -> Iterator[Callable[..., Paho]]:
    """Anonymous paho clients on `tserver` (not yet connected); all closed at teardown."""
    clients: list[Paho] = []

    def make(client_id: str, **kwargs: Any) -> Paho:
        kwargs.setdefault("port", tserver.port())
        client = Paho(user=None, client_id=client_id, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        with contextlib.suppress(Exception):  # best-effort cleanup of test clients
            client.close()
