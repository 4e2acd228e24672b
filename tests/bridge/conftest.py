"""Fixtures of the bridge tests: Mosquitto processes and mqim servers on fixed free ports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from mqim.acl import Rule, parse_rule
from mqim.broker import BrokerSettings, Listener
from mqim.server import EmbeddedServer
from tests.bridge.mosquitto import Mosquitto, mosquitto_available
from tests.conftest import free_port

MosquittoFactory = Callable[..., Awaitable[Mosquitto]]


@pytest.fixture
async def mosquitto_factory(tmp_path: Path) -> AsyncIterator[MosquittoFactory]:
    """Start Mosquitto instances (each in its own directory); all are stopped after the test."""
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    started: list[Mosquitto] = []

    async def make(*, extra: str = "", persistence: bool = False, name: str = "mosquitto") -> Mosquitto:
        broker = Mosquitto(
            workdir=tmp_path / f"{name}-{len(started)}",
            port=free_port(),
            extra=extra,
            persistence=persistence,
        )
        started.append(broker)
        await broker.start()
        return broker

    yield make
    for broker in started:
        await broker.stop()


def mqim_server(
    data_dir: Path, port: int, *, rules: Sequence[str] = (), embedded_logic: bool = True
) -> EmbeddedServer:
    """An embedded mqim server on a fixed port (so a restart comes back where bridges expect it)."""
    parsed: list[Rule] = [parse_rule(text) for text in rules]
    return EmbeddedServer(
        data_dir=data_dir,
        listeners=[Listener(name="default", port=port)],
        settings=BrokerSettings(connect_timeout_s=3.0),
        rules=parsed,
        embedded_logic=embedded_logic,
    )


async def eventually(check: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def bridge_config(*, name: str, port: int, user: str, password: str, topic: str, extra: str = "") -> str:
    """A Mosquitto `connection` to mqim with default settings (try_private, notifications...)."""
    return (
        f"connection {name}\n"
        f"address 127.0.0.1:{port}\n"
        f"remote_username {user}\n"
        f"remote_password {password}\n"
        f"topic {topic}\n"
        f"{extra}"
    )


def bridge_session(server: EmbeddedServer, name: str) -> Any:
    """The session of Mosquitto's bridge `name` on mqim once it is connected and subscribed."""
    assert server.broker is not None
    for client_id, session in server.broker.hub.sessions.items():
        if client_id.endswith(f".{name}") and session.conn is not None and session.subscriptions:
            return session
    return None


def bridge_state(server: EmbeddedServer, name: str) -> str | None:
    """The last `$SYS/broker/connection/.../state` notice of Mosquitto's bridge `name`."""
    assert server.broker is not None
    for key, status in server.broker.bridge_status.items():
        if key.endswith(f".{name}"):
            return str(status["state"])
    return None
