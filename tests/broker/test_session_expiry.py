"""Persistent sessions expire by deadline: only those whose expiry has come are looked at."""

from __future__ import annotations

import asyncio
import time
import uuid

from mqim.server import EmbeddedServer
from tests.broker.conftest import RawFactory, broker_of


async def _gone(server: EmbeddedServer, client_id: str) -> None:
    hub = broker_of(server).hub
    for _ in range(200):
        session = hub.sessions.get(client_id)
        if session is not None and session.conn is None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{client_id} still connected")


async def test_a_session_expires_after_its_expiry_and_not_before(
    tserver: EmbeddedServer, raw: RawFactory
) -> None:
    hub = broker_of(tserver).hub
    expiry = hub.settings.session_expiry_s
    client_id = f"p-{uuid.uuid4().hex[:8]}"
    conn = await raw(client_id, clean=False)
    await conn.close()
    await _gone(tserver, client_id)
    assert hub.expire_sessions(time.time()) == 0
    assert client_id in hub.sessions
    assert hub.expire_sessions(time.time() + expiry + 1) == 1
    assert client_id not in hub.sessions


async def test_a_session_that_came_back_keeps_living(tserver: EmbeddedServer, raw: RawFactory) -> None:
    hub = broker_of(tserver).hub
    expiry = hub.settings.session_expiry_s
    client_id = f"p-{uuid.uuid4().hex[:8]}"
    first = await raw(client_id, clean=False)
    await first.close()
    await _gone(tserver, client_id)
    await raw(client_id, clean=False)  # back, and connected: its old deadline means nothing
    assert hub.expire_sessions(time.time() + expiry + 1) == 0
    assert hub.sessions[client_id].conn is not None
