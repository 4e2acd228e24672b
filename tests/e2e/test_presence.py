"""Presence through the real server: retained, epochs, multi-device, races, keepalive, permissions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mqim.acl import parse_rule
from mqim.broker import BrokerSettings, Listener
from mqim.server import EmbeddedServer
from mqim.server._presence import supersedes
from mqim.storage import RetainedRecord, SqliteSessionStore
from tests.conftest import PASSWORD, Users
from tests.e2e._im import cmd_ok
from tests.support.mqtt import Paho, Raw


def _retained(users: Users, user: str) -> dict[str, Any] | None:
    assert users.server.broker is not None
    entry = users.server.broker.hub.retained.get(f"im/v1/presence/{user}")
    return None if entry is None else dict(json.loads(entry[0]))


async def _contacts(users: Users) -> tuple[str, str, Paho]:
    """alice and bob share a conversation; alice is connected and watches bob's presence."""
    alice, bob = await users.add("alice"), await users.add("bob")
    alice_c = await users.connected(alice)
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "c-1", "to": bob, "text": "hi"})
    await alice_c.receive_on("/ack")
    assert await alice_c.subscribe(f"im/v1/presence/{bob}") == 1
    return alice, bob, alice_c


async def _presence(client: Paho, user: str) -> dict[str, Any]:
    return dict((await client.receive_on(f"presence/{user}")).json())


async def test_online_then_offline_with_growing_epochs(users: Users) -> None:
    _, bob, alice_c = await _contacts(users)
    bob_c = await users.connected(bob)
    online = await _presence(alice_c, bob)
    assert (online["v"], online["user"], online["state"]) == (1, bob, "online")
    bob_c.close()
    offline = await _presence(alice_c, bob)
    assert offline["state"] == "offline"
    assert offline["epoch"] == online["epoch"]
    await users.connected(bob)
    again = await _presence(alice_c, bob)
    assert again["state"] == "online"
    assert again["epoch"] > online["epoch"]


async def test_presence_is_retained_for_late_subscribers(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    await users.connected(bob)
    alice_c = await users.connected(alice)
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "c-1", "to": bob, "text": "hi"})
    await alice_c.receive_on("/ack")
    await alice_c.subscribe(f"im/v1/presence/{bob}")
    msg = await alice_c.receive_on(f"presence/{bob}")
    assert msg.retain
    assert msg.json()["state"] == "online"


async def test_only_users_sharing_a_conversation_may_watch(users: Users, uid: Callable[[str], str]) -> None:
    alice, bob, carol = await users.add("alice"), await users.add("bob"), await users.add("carol")
    carol_c = await users.connected(carol)
    assert await carol_c.subscribe(f"im/v1/presence/{bob}") == 0x80
    # Sharing a group is enough.
    alice_c = await users.connected(alice)
    await cmd_ok(alice_c, alice, "group.create", group=uid("team"), members=[bob, carol])
    assert await carol_c.subscribe(f"im/v1/presence/{bob}") == 1
    assert await carol_c.subscribe(f"im/v1/presence/{carol}") == 1  # one's own presence


async def test_offline_only_when_the_last_device_goes(users: Users) -> None:
    _, bob, alice_c = await _contacts(users)
    phone, laptop = await users.connected(bob), await users.connected(bob)
    assert (await _presence(alice_c, bob))["state"] == "online"
    assert (await _presence(alice_c, bob))["state"] == "online"  # the second device: a new epoch
    phone.close()
    await alice_c.nothing(0.5, suffix=f"presence/{bob}")
    laptop.drop()  # an abrupt loss is noticed as well
    assert (await _presence(alice_c, bob))["state"] == "offline"


async def test_fast_reconnect_race_stays_online(users: Users) -> None:
    _, bob, alice_c = await _contacts(users)
    old = await users.connected(bob, client_id=f"{bob}-a")
    await _presence(alice_c, bob)
    new = await users.connected(bob, client_id=f"{bob}-b")  # B connects...
    latest = await _presence(alice_c, bob)
    old.drop()  # ...then the late disconnect of A
    await alice_c.nothing(0.5, suffix=f"presence/{bob}")
    retained = _retained(users, bob)
    assert retained is not None
    assert (retained["state"], retained["epoch"]) == ("online", latest["epoch"])
    new.close()
    assert (await _presence(alice_c, bob))["state"] == "offline"


async def test_takeover_of_the_same_client_id_ends_online(users: Users) -> None:
    _, bob, alice_c = await _contacts(users)
    first = users.client(bob, client_id=f"{bob}-phone", clean_session=False)
    await first.connect()
    await _presence(alice_c, bob)
    second = users.client(bob, client_id=f"{bob}-phone", clean_session=False)
    await second.connect()  # takes the session over: the old socket is closed by the server
    retained = _retained(users, bob)
    assert retained is not None
    assert retained["state"] == "online"
    while (p := await _presence(alice_c, bob))["epoch"] < retained["epoch"]:
        pass  # the old connection's end may show first, with an older epoch
    assert p["state"] == "online"
    first.client.loop_stop()


async def test_keepalive_expiry_publishes_offline(users: Users) -> None:
    _, bob, alice_c = await _contacts(users)
    raw = Raw(users.server.port())
    try:
        raw.send(Raw.connect_packet(client_id=f"{bob}-raw", user=bob, password=PASSWORD, keepalive=1))
        packet = await asyncio.to_thread(raw.read_packet)
        assert packet is not None
        assert packet[0] == 2  # CONNACK
        assert (await _presence(alice_c, bob))["state"] == "online"
        # The client goes silent: after 1.5 x keepalive the broker drops it.
        assert (await _presence(alice_c, bob))["state"] == "offline"
    finally:
        raw.close()


def test_a_late_offline_never_replaces_a_newer_online() -> None:
    assert supersedes("online", 5, ("offline", 4))
    assert supersedes("offline", 5, ("online", 5))
    assert not supersedes("offline", 4, ("online", 5))
    assert not supersedes("online", 4, ("online", 5))
    assert not supersedes("online", 5, ("offline", 5))
    assert supersedes("online", 1, None)


async def test_restart_turns_stale_online_offline(tmp_path: Path) -> None:
    # What a crash leaves behind: bob's retained presence still says online.
    data = tmp_path / "data"
    data.mkdir()
    store = SqliteSessionStore(path=data / "sessions.db")
    await store.open()
    stale = b'{"v":1,"user":"bob","state":"online","ts":1,"epoch":1764200000123}'
    store.set_retained(RetainedRecord(topic="im/v1/presence/bob", payload=stale, qos=1))
    await store.flush()
    await store.close()
    async with EmbeddedServer(
        data_dir=data, listeners=[Listener(name="default", port=0)], settings=BrokerSettings()
    ) as server:
        assert server.broker is not None
        payload, _ = server.broker.hub.retained["im/v1/presence/bob"]
        assert json.loads(payload)["state"] == "offline"
        assert json.loads(payload)["epoch"] == 1764200000123


async def test_every_user_has_presence_beyond_the_retained_limit(
    tmp_path: Path, uid: Callable[[str], str]
) -> None:
    # Presence is the server's: it does not count against what clients may retain.
    async with EmbeddedServer(
        data_dir=tmp_path / "data",
        listeners=[Listener(name="default", port=0)],
        settings=BrokerSettings(connect_timeout_s=3.0, max_retained=5, max_retained_per_account=2),
    ) as server:
        users = Users(server, uid)
        try:
            names = [await users.add(f"crowd{n}") for n in range(12)]  # more users than max_retained
            for name in names:
                await users.connected(name)
            alice, bob = await users.add("alice"), await users.add("bob")
            alice_c = await users.connected(alice)
            await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "c-1", "to": bob, "text": "hi"})
            await alice_c.receive_on("/ack")
            await users.connected(bob)
            await alice_c.subscribe(f"im/v1/presence/{bob}")
            assert (await _presence(alice_c, bob))["state"] == "online"
            for name in [*names, alice, bob]:
                assert (_retained(users, name) or {}).get("state") == "online", name
            assert server.broker is not None
            assert server.broker.hub.quota.server >= 14
            assert server.broker.hub.counters.retained_refused == 0
        finally:
            users.close_all()


async def test_a_device_cannot_fill_the_retained_store(tmp_path: Path, uid: Callable[[str], str]) -> None:
    async with EmbeddedServer(
        data_dir=tmp_path / "data",
        listeners=[Listener(name="default", port=0)],
        settings=BrokerSettings(connect_timeout_s=3.0, max_retained=4, max_retained_per_account=2),
        rules=[parse_rule("allow all publish,subscribe,receive dev/#")],
    ) as server:
        users = Users(server, uid)
        try:
            one, two = await users.add("one"), await users.add("two")
            one_c, two_c = await users.connected(one), await users.connected(two)
            for n in range(3):  # one account: two topics, the third refused (not stored)
                await one_c.publish(f"dev/{one}/{n}", b"up", qos=1, retain=True)
            for n in range(2):
                await two_c.publish(f"dev/{two}/{n}", b"up", qos=1, retain=True)
            watcher = await users.connected(two)
            assert await watcher.subscribe("dev/#") == 1
            got = {(await watcher.receive(timeout=5)).topic for _ in range(4)}
            assert got == {f"dev/{one}/0", f"dev/{one}/1", f"dev/{two}/0", f"dev/{two}/1"}
            await watcher.nothing(0.5)
            assert server.broker is not None
            assert server.broker.hub.counters.retained_refused == 1
        finally:
            users.close_all()
