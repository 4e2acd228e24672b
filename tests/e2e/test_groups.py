"""Groups through the real server: commands and roles, server-managed subscriptions, fan-out once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mqim.broker import BrokerSettings, Listener
from mqim.logic import LogicLimits
from mqim.server import EmbeddedServer
from mqim.storage import Role, SqliteStorage
from tests.conftest import Users
from tests.e2e._im import cmd, cmd_ok


async def _team(users: Users, *names: str) -> list[str]:
    return [await users.add(name) for name in names]


async def test_create_then_message_reaches_every_member_once(users: Users, uid: Callable[[str], str]) -> None:
    alice, bob, carol, dave = await _team(users, "alice", "bob", "carol", "dave")
    group = uid("team")
    alice_c = await users.connected(alice)
    alice_2 = await users.connected(alice)  # another device of the sender
    bob_c, carol_c = await users.connected(bob), await users.connected(carol)
    dave_c = await users.connected(dave)
    published: list[bytes] = []
    assert users.server.broker is not None
    users.server.broker.attach_listener(f"im/v1/g/{group}/msg", lambda _t, p: published.append(p))

    result = await cmd_ok(alice_c, alice, "group.create", group=group, name="Team", members=[bob, carol])
    assert result == {"group": group, "name": "Team", "count": 3}
    added = (await bob_c.receive_on("/event")).json()
    assert added["type"] in ("group.added", "group.create")

    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "g-1", "group": group, "text": "hi all"})
    ack = (await alice_c.receive_on("/ack")).json()
    assert (ack["conv"], ack["seq"]) == (f"g:{group}", 1)
    for client in (bob_c, carol_c, alice_2):
        msg = await client.receive_on("/msg")
        assert msg.topic == f"im/v1/g/{group}/msg"
        assert msg.json()["text"] == "hi all"
        assert msg.json()["from"] == alice
    await bob_c.nothing(0.3, suffix="/msg")
    await dave_c.nothing(0.0, suffix="/msg")
    assert len(published) == 1  # published once on the group topic, not once per member
    stored = await users.server.storage.get_messages(f"g:{group}")
    assert [m.client_id for m in stored] == ["g-1"]


async def test_non_members_cannot_send_nor_subscribe(users: Users, uid: Callable[[str], str]) -> None:
    alice, bob, mallory = await _team(users, "alice", "bob", "mallory")
    group = uid("team")
    alice_c, mallory_c = await users.connected(alice), await users.connected(mallory)
    bob_c = await users.connected(bob)
    await cmd_ok(alice_c, alice, "group.create", group=group, members=[bob])
    await mallory_c.publish(f"im/v1/up/{mallory}/msg", {"v": 1, "id": "m-1", "group": group, "text": "hi"})
    error = (await mallory_c.receive_on("/error")).json()
    assert (error["ref"], error["code"]) == ("m-1", "forbidden")
    assert await mallory_c.subscribe(f"im/v1/g/{group}/#") == 0x80
    reply = await cmd(mallory_c, mallory, "group.info", group=group)
    assert not reply["ok"]
    assert reply["error"]["code"] == "forbidden"
    await bob_c.nothing(0.3, suffix="/msg")
    assert await users.server.storage.last_seq(f"g:{group}") == 0


async def test_roles_decide_who_may_administer(users: Users, uid: Callable[[str], str]) -> None:
    alice, bob, carol, dave = await _team(users, "alice", "bob", "carol", "dave")
    group = uid("team")
    alice_c, bob_c = await users.connected(alice), await users.connected(bob)
    await cmd_ok(alice_c, alice, "group.create", group=group, members=[bob, carol])

    denied = await cmd(bob_c, bob, "group.add", group=group, members=[dave])
    assert (denied["ok"], denied["error"]["code"]) == (False, "forbidden")
    await cmd_ok(alice_c, alice, "group.role", group=group, user=bob, role="admin")
    assert (await cmd_ok(bob_c, bob, "group.add", group=group, members=[dave]))["added"] == [dave]
    no_owner = await cmd(bob_c, bob, "group.remove", group=group, members=[alice])
    assert (no_owner["ok"], no_owner["error"]["code"]) == (False, "forbidden")
    assert (await cmd_ok(bob_c, bob, "group.rename", group=group, name="New name"))["name"] == "New name"
    assert (await cmd_ok(bob_c, bob, "group.remove", group=group, members=[carol]))["removed"] == [carol]

    info = await cmd_ok(bob_c, bob, "group.info", group=group)
    assert info["name"] == "New name"
    assert {m["user"]: m["role"] for m in info["members"]} == {alice: "owner", bob: "admin", dave: "member"}
    listed = await cmd_ok(bob_c, bob, "group.list")
    assert {"group": group, "name": "New name", "role": "admin", "count": 3} in listed["groups"]

    # Handing over ownership: the old owner becomes an admin.
    await cmd_ok(alice_c, alice, "group.role", group=group, user=bob, role="owner")
    roles = {m["user"]: m["role"] for m in (await cmd_ok(bob_c, bob, "group.info", group=group))["members"]}
    assert (roles[alice], roles[bob]) == ("admin", "owner")
    unknown = await cmd(bob_c, bob, "group.frobnicate", group=group)
    assert (unknown["ok"], unknown["error"]["code"]) == (False, "bad_request")


async def test_joining_subscribes_live_and_offline_sessions(users: Users, uid: Callable[[str], str]) -> None:
    alice, bob = await _team(users, "alice", "bob")
    group = uid("team")
    alice_c = await users.connected(alice)
    bob_live = await users.connected(bob)
    bob_away = users.client(bob, client_id=f"{bob}-phone", clean_session=False)
    await bob_away.connect()
    bob_away.close()  # a persistent session, now disconnected
    await cmd_ok(alice_c, alice, "group.create", group=group)
    await cmd_ok(alice_c, alice, "group.add", group=group, members=[bob])
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "g-1", "group": group, "text": "welcome"})
    assert (await bob_live.receive_on(f"{group}/msg")).json()["text"] == "welcome"
    bob_back = users.client(bob, client_id=f"{bob}-phone", clean_session=False)
    await bob_back.connect()
    assert (await bob_back.receive_on(f"{group}/msg")).json()["text"] == "welcome"


async def test_removed_member_receives_nothing_more_online_or_from_its_queue(
    users: Users, uid: Callable[[str], str]
) -> None:
    alice, bob, carol = await _team(users, "alice", "bob", "carol")
    group = uid("team")
    alice_c, bob_c = await users.connected(alice), await users.connected(bob)
    carol_live = await users.connected(carol)
    carol_away = users.client(carol, client_id=f"{carol}-phone", clean_session=False)
    await carol_away.connect()
    await cmd_ok(alice_c, alice, "group.create", group=group, members=[bob, carol])
    carol_away.close()

    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "g-1", "group": group, "text": "before"})
    assert (await carol_live.receive_on("/msg")).json()["text"] == "before"  # queued for carol-phone too
    assert (await bob_c.receive_on("/msg")).json()["text"] == "before"

    await cmd_ok(alice_c, alice, "group.remove", group=group, members=[carol])
    removed = (await carol_live.receive_on("/event")).json()
    while removed["type"] != "group.removed":
        removed = (await carol_live.receive_on("/event")).json()
    assert (removed["group"], removed["by"]) == (group, alice)
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "g-2", "group": group, "text": "after"})
    assert (await bob_c.receive_on("/msg")).json()["text"] == "after"
    await carol_live.nothing(0.3, suffix="/msg")

    carol_back = users.client(carol, client_id=f"{carol}-phone", clean_session=False)
    await carol_back.connect()
    got = []
    while True:
        try:
            got.append(await carol_back.receive(timeout=0.7))
        except AssertionError:
            break
    assert not [m for m in got if m.topic.startswith(f"im/v1/g/{group}/")], got
    assert any(m.topic.endswith("/event") and m.json()["type"] == "group.removed" for m in got)
    assert await carol_back.subscribe(f"im/v1/g/{group}/#") == 0x80
    await carol_back.publish(f"im/v1/up/{carol}/msg", {"v": 1, "id": "c-1", "group": group, "text": "x"})
    assert (await carol_back.receive_on("/error")).json()["code"] == "forbidden"


async def test_leave_and_owner_handover(users: Users, uid: Callable[[str], str]) -> None:
    alice, bob, carol = await _team(users, "alice", "bob", "carol")
    group = uid("team")
    alice_c, bob_c, carol_c = [await users.connected(u) for u in (alice, bob, carol)]
    await cmd_ok(alice_c, alice, "group.create", group=group, members=[bob, carol])
    await cmd_ok(alice_c, alice, "group.role", group=group, user=carol, role="admin")
    left = await cmd_ok(alice_c, alice, "group.leave", group=group)
    assert left == {"group": group, "deleted": False, "owner": carol}
    await bob_c.publish(f"im/v1/up/{bob}/msg", {"v": 1, "id": "b-1", "group": group, "text": "bye alice"})
    assert (await carol_c.receive_on("/msg")).json()["text"] == "bye alice"
    await alice_c.nothing(0.3, suffix="/msg")
    info = await cmd_ok(carol_c, carol, "group.info", group=group)
    assert {m["user"]: m["role"] for m in info["members"]} == {bob: "member", carol: "owner"}
    await cmd_ok(bob_c, bob, "group.leave", group=group)
    assert (await cmd_ok(carol_c, carol, "group.leave", group=group))["deleted"] is True
    assert await users.server.storage.get_group(group) is None


async def test_group_size_and_request_limits(tmp_path: Path, uid: Callable[[str], str]) -> None:
    async with EmbeddedServer(
        data_dir=tmp_path / "data",
        listeners=[Listener(name="default", port=0)],
        settings=BrokerSettings(connect_timeout_s=3.0),
        logic_limits=LogicLimits(max_group_members=3, max_group_name_chars=10),
    ) as server:
        users = Users(server, uid)
        try:
            alice, bob, carol, dave = await _team(users, "alice", "bob", "carol", "dave")
            alice_c = await users.connected(alice)
            group = uid("g")
            big = await cmd(alice_c, alice, "group.create", group=group, members=[bob, carol, dave])
            assert (big["ok"], big["error"]["code"]) == (False, "too_large")
            await cmd_ok(alice_c, alice, "group.create", group=group, members=[bob, carol])
            full = await cmd(alice_c, alice, "group.add", group=group, members=[dave])
            assert (full["ok"], full["error"]["code"]) == (False, "too_large")
            long_name = await cmd(alice_c, alice, "group.rename", group=group, name="x" * 11)
            assert long_name["error"]["code"] == "too_large"
            ghost = await cmd(alice_c, alice, "group.create", group=uid("h"), members=["nobody-xyz"])
            assert ghost["error"]["code"] == "not_found"
            taken = await cmd(alice_c, alice, "group.create", group=group)
            assert taken["error"]["code"] == "bad_request"
        finally:
            users.close_all()


async def test_a_group_written_to_storage_directly_heals_on_first_use(
    users: Users, uid: Callable[[str], str]
) -> None:
    alice, bob = await _team(users, "alice", "bob")
    group = uid("team")
    alice_c, bob_c = await users.connected(alice), await users.connected(bob)
    await users.server.storage.create_group(group, name="Direct", owner=alice, members=[bob])
    assert not users.server.membership.is_member(bob, group)  # nobody told the server
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "g-1", "group": group, "text": "healed"})
    assert (await alice_c.receive_on("/ack")).json()["conv"] == f"g:{group}"
    # The service read storage, repaired the index, and the broker subscribed bob before publishing.
    assert (await bob_c.receive_on(f"{group}/msg")).json()["text"] == "healed"

    await users.server.storage.set_members(group, {bob: None})
    await users.server.reload_membership()
    assert not users.server.membership.is_member(bob, group)
    assert await bob_c.subscribe(f"im/v1/g/{group}/#") == 0x80


async def test_changes_made_while_the_server_was_down_apply_to_stored_sessions(
    tmp_path: Path, uid: Callable[[str], str]
) -> None:
    data = tmp_path / "data"

    def server() -> EmbeddedServer:
        return EmbeddedServer(
            data_dir=data,
            listeners=[Listener(name="default", port=0)],
            settings=BrokerSettings(connect_timeout_s=3.0),
        )

    group = uid("team")
    async with server() as first:
        users = Users(first, uid)
        alice, carol, dave = await _team(users, "alice", "carol", "dave")
        alice_c = await users.connected(alice)
        await cmd_ok(alice_c, alice, "group.create", group=group, members=[carol])
        for user in (carol, dave):  # persistent sessions, then away
            away = users.client(user, client_id=f"{user}-phone", clean_session=False)
            await away.connect()
            away.close()
        users.close_all()
    # What `mqim group` does while no server runs.
    async with SqliteStorage(path=data / "mqim.db") as storage:
        await storage.set_members(group, {carol: None, dave: Role.MEMBER})
    async with server() as second:
        users = Users(second, uid)
        try:
            alice_c = await users.connected(alice)
            await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "g-1", "group": group, "text": "x"})
            await alice_c.receive_on("/ack")
            dave_back = users.client(dave, client_id=f"{dave}-phone", clean_session=False)
            await dave_back.connect()
            assert (await dave_back.receive_on(f"{group}/msg")).json()["text"] == "x"
            carol_back = users.client(carol, client_id=f"{carol}-phone", clean_session=False)
            await carol_back.connect()
            await carol_back.nothing(0.5, suffix="/msg")
        finally:
            users.close_all()
