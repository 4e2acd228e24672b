"""A plain paho client sends a 1 MiB message, then normal ones: `too_large` for the first, the rest
delivered, the connection never closed (a client that stores its QoS 1 messages would otherwise
send the big one again after every reconnect, for ever).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import pytest

from mqim.server import EmbeddedServer
from tests.conftest import Users


@pytest.fixture
async def users(server: EmbeddedServer, uid: Callable[[str], str]) -> AsyncIterator[Users]:
    made = Users(server, uid)
    try:
        yield made
    finally:
        made.close_all()


async def test_a_1_mib_publish_is_refused_and_the_connection_keeps_working(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    bob_c = await users.connected(bob, client_id=f"{bob}-phone", clean_session=False)
    alice_c = await users.connected(alice, client_id=f"{alice}-phone", clean_session=False)
    big = {"v": 1, "id": "big-1", "to": bob, "text": "x" * (1 << 20)}
    await alice_c.publish(f"im/v1/up/{alice}/msg", json.dumps(big))  # acknowledged, not stored
    error = (await alice_c.receive_on("/error")).json()
    assert (error["ref"], error["code"]) == ("big-1", "too_large")
    for n in range(10):
        await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": f"m-{n}", "to": bob, "text": str(n)})
    got = [(await bob_c.receive_on("/msg")).json()["id"] for _ in range(10)]
    assert got == [f"m-{n}" for n in range(10)]
    assert not alice_c.disconnected.is_set()  # the connection was never closed
