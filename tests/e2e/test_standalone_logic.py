"""Groups, contacts and presence when the logic service is a separate MQTT client (`mqim logic`).

The broker does not share the service's memory: it follows the group events and first-message
acks the service publishes (`MembershipFollower`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from mqim.broker import BrokerSettings, Listener
from mqim.logic import LogicService, MqttBus
from mqim.server import EmbeddedServer
from mqim.storage import AccountKind
from tests.conftest import PASSWORD, Users
from tests.e2e._im import cmd_ok


@pytest.fixture
async def standalone(tmp_path: Path, uid: Callable[[str], str]) -> AsyncIterator[Users]:
    async with EmbeddedServer(
        data_dir=tmp_path / "data",
        listeners=[Listener(name="default", port=0)],
        settings=BrokerSettings(connect_timeout_s=3.0),
        embedded_logic=False,
    ) as server:
        users = Users(server, uid)
        service_user = await users.add("logic", kind=AccountKind.SERVICE)
        bus = MqttBus(
            host="127.0.0.1",
            port=server.port(),
            username=service_user,
            password=PASSWORD,
            client_id=f"{service_user}-1",
        )
        service = LogicService(storage=server.storage, bus=bus)  # no shared index
        bus.on_overflow = service.reject_overflow
        try:
            async with bus, asyncio.TaskGroup() as tasks:
                task = tasks.create_task(service.run(), name="standalone-logic")
                try:
                    yield users
                finally:
                    task.cancel()
        finally:
            users.close_all()


async def test_broker_follows_group_changes_of_a_standalone_service(
    standalone: Users, uid: Callable[[str], str]
) -> None:
    users = standalone
    alice, bob, carol = await users.add("alice"), await users.add("bob"), await users.add("carol")
    group = uid("team")
    alice_c, bob_c = await users.connected(alice), await users.connected(bob)
    carol_away = users.client(carol, client_id=f"{carol}-phone", clean_session=False)
    await carol_away.connect()
    carol_away.close()

    await cmd_ok(alice_c, alice, "group.create", group=group, members=[bob, carol])
    assert (await bob_c.receive_on("/event")).json()["type"] in ("group.added", "group.create")
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "g-1", "group": group, "text": "one"})
    assert (await bob_c.receive_on(f"{group}/msg")).json()["text"] == "one"

    await cmd_ok(alice_c, alice, "group.remove", group=group, members=[carol])
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "g-2", "group": group, "text": "two"})
    assert (await bob_c.receive_on(f"{group}/msg")).json()["text"] == "two"
    carol_back = users.client(carol, client_id=f"{carol}-phone", clean_session=False)
    await carol_back.connect()
    got = []
    while True:
        try:
            got.append(await carol_back.receive(timeout=0.7))
        except AssertionError:
            break
    assert not [m for m in got if m.topic.startswith(f"im/v1/g/{group}/")], got


async def test_first_message_makes_contacts_for_presence(standalone: Users) -> None:
    users = standalone
    alice, bob = await users.add("alice"), await users.add("bob")
    alice_c = await users.connected(alice)
    assert await alice_c.subscribe(f"im/v1/presence/{bob}") == 0x80
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "c-1", "to": bob, "text": "hi"})
    await alice_c.receive_on("/ack")
    assert await alice_c.subscribe(f"im/v1/presence/{bob}") == 1
