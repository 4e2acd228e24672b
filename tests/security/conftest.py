"""Fixtures of the security tests: the real server with a fast policy poll, and helpers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mqim.broker import BrokerSettings, Listener
from mqim.server import EmbeddedServer
from mqim.storage import AccountKind
from tests.conftest import Users
from tests.support.mqtt import Paho

POLL_S = 0.1
"""Policy poll interval of the test servers: changes made in storage apply within it."""


def settings(**overrides: Any) -> BrokerSettings:
    values: dict[str, Any] = {"connect_timeout_s": 3.0, "policy_poll_interval_s": POLL_S}
    values.update(overrides)
    return BrokerSettings(**values)


@contextlib.asynccontextmanager
async def started(data_dir: Path, **kwargs: Any) -> AsyncIterator[EmbeddedServer]:
    """A real server on a free loopback port; `settings=` etc. as for `EmbeddedServer`."""
    kwargs.setdefault("listeners", [Listener(name="default", port=0)])
    kwargs.setdefault("settings", settings())
    async with EmbeddedServer(data_dir=data_dir, **kwargs) as srv:
        yield srv


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    """Overrides the suite's `server`: same server, policy polled every `POLL_S` seconds."""
    async with started(tmp_path / "data") as srv:
        yield srv


@contextlib.asynccontextmanager
async def users_of(server: EmbeddedServer, uid: Callable[[str], str]) -> AsyncIterator[Users]:
    """`Users` for a server a test started itself (the `users` fixture covers `server`)."""
    u = Users(server, uid)
    try:
        yield u
    finally:
        u.close_all()


async def service_client(users: Users) -> Paho:
    """A connected logic-service account: it may publish into inboxes and groups."""
    svc = await users.add("logic", kind=AccountKind.SERVICE)
    return await users.connected(svc)


async def eventually(check: Callable[[], bool], *, timeout: float = 5.0, what: str = "condition") -> None:
    """Wait (bounded) until `check()` is true."""
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout}s")
