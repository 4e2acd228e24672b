"""Shared fixtures: a real mqim server on a free loopback port, unique users per test."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mqim.broker import BrokerSettings, Listener
from mqim.server import EmbeddedServer
from mqim.storage import AccountKind
from tests.support.mqtt import Paho

PASSWORD = "pw-123456"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def uid() -> Callable[[str], str]:
    """Unique ids per test: uid("alice") -> "alice-1a2b3c"."""
    token = uuid.uuid4().hex[:6]
    return lambda name: f"{name}-{token}"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    async with EmbeddedServer(
        data_dir=tmp_path / "data",
        listeners=[Listener(name="default", port=0)],
        settings=BrokerSettings(connect_timeout_s=3.0),
    ) as srv:
        yield srv


class Users:
    """Creates accounts on a running server and connects clients for them."""

    def __init__(self, server: EmbeddedServer, uid: Callable[[str], str]) -> None:
        self.server = server
        self.uid = uid
        self._clients: list[Paho] = []
        self._ids = itertools.count(1)

    async def add(self, name: str, *, kind: AccountKind = AccountKind.USER) -> str:
        user = self.uid(name)
        await self.server.storage.add_user(user, password=PASSWORD, kind=kind)
        return user

    def client(
        self,
        user: str | None,
        *,
        password: str | None = PASSWORD,
        client_id: str | None = None,
        clean_session: bool = True,
        **kwargs: Any,
    ) -> Paho:
        cid = client_id if client_id is not None else f"{user}-c{next(self._ids)}"
        client = Paho(
            port=self.server.port(),
            user=user,
            password=password,
            client_id=cid,
            clean_session=clean_session,
            **kwargs,
        )
        self._clients.append(client)
        return client

    async def connected(self, user: str, **kwargs: Any) -> Paho:
        client = self.client(user, **kwargs)
        await client.connect()
        return client

    def close_all(self) -> None:
        for client in self._clients:
            with contextlib.suppress(Exception):  # best-effort cleanup of test clients
                client.close()


@pytest.fixture
def users(server: EmbeddedServer, uid: Callable[[str], str]) -> Iterator[Users]:
    u = Users(server, uid)
    yield u
    u.close_all()


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Loopback only: make sure no proxy variable redirects a test client.
    for key in list(os.environ):
        if key.lower().endswith("_proxy"):
            monkeypatch.delenv(key, raising=False)
