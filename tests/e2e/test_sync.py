"""Sync, history, edit/recall/delete-for-me, and catching up after a long absence."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mqim.broker import BrokerSettings, Listener
from mqim.logic import LogicLimits
from mqim.server import EmbeddedServer
from tests.conftest import Users
from tests.e2e._im import cmd_ok, dm, request, sync_all
from tests.support.mqtt import Paho


def up(user: str) -> str:
    return f"im/v1/up/{user}/msg"


async def _send(client: Paho, me: str, n: int, *, to: str | None = None, group: str | None = None) -> None:
    target = {"to": to} if to is not None else {"group": group}
    for i in range(1, n + 1):
        await client.publish(f"im/v1/up/{me}/msg", {"v": 1, "id": f"{me}-{i}", **target, "text": f"m{i}"})


async def _settled(client: Paho, count: int) -> None:
    """Wait for `count` acks: everything sent before is stored."""
    for _ in range(count):
        await client.receive_on("/ack")


async def test_sync_without_since_returns_every_conversation_in_order(
    users: Users, uid: Callable[[str], str]
) -> None:
    alice, bob, carol = await users.add("alice"), await users.add("bob"), await users.add("carol")
    group = uid("team")
    alice_c, carol_c = await users.connected(alice), await users.connected(carol)
    await cmd_ok(alice_c, alice, "group.create", group=group, members=[bob, carol])
    await _send(alice_c, alice, 3, to=bob)
    await _send(carol_c, carol, 2, group=group)
    await _settled(alice_c, 3)
    await _settled(carol_c, 2)

    bob_c = await users.connected(bob)
    states, messages = await sync_all(bob_c, bob)
    assert set(states) == {dm(alice, bob), f"g:{group}"}
    direct = states[dm(alice, bob)]
    assert (direct["last_seq"], direct["read_seq"], direct["unread"]) == (3, 0, 3)
    assert [m["seq"] for m in direct["messages"]] == [1, 2, 3]
    assert [m["text"] for m in direct["messages"]] == ["m1", "m2", "m3"]
    assert states[f"g:{group}"]["unread"] == 2
    assert len(messages) == 5

    # With since: only what came after.
    states, messages = await sync_all(bob_c, bob, {dm(alice, bob): 2, f"g:{group}": 2})
    assert [m["seq"] for m in messages] == [3]
    assert states[f"g:{group}"]["messages"] == []


async def test_sync_pages_are_bounded_and_complete(tmp_path: Path, uid: Callable[[str], str]) -> None:
    limits = LogicLimits(sync_page_messages=25, sync_conv_messages=10, sync_page_convs=2)
    async with EmbeddedServer(
        data_dir=tmp_path / "data",
        listeners=[Listener(name="default", port=0)],
        settings=BrokerSettings(connect_timeout_s=3.0),
        logic_limits=limits,
    ) as server:
        users = Users(server, uid)
        try:
            bob = await users.add("bob")
            senders = [await users.add(f"s{i}") for i in range(3)]
            for sender in senders:
                client = await users.connected(sender)
                await _send(client, sender, 30, to=bob)
                await _settled(client, 30)
            bob_c = await users.connected(bob)
            first = await request(bob_c, bob, "sync", {}, reply="sync")
            assert first["more"]
            assert sum(len(c["messages"]) for c in first["convs"]) <= 25
            assert all(len(c["messages"]) <= 10 for c in first["convs"])
            states, messages = await sync_all(bob_c, bob)
            assert len(states) == 3
            for sender in senders:
                seqs = [m["seq"] for m in messages if m["from"] == sender]
                assert seqs == list(range(1, 31))
        finally:
            users.close_all()


async def test_history_pages_backwards_for_members_only(users: Users, uid: Callable[[str], str]) -> None:
    alice, bob, mallory = await users.add("alice"), await users.add("bob"), await users.add("mallory")
    alice_c = await users.connected(alice)
    await _send(alice_c, alice, 12, to=bob)
    await _settled(alice_c, 12)
    conv = dm(alice, bob)
    newest = await request(alice_c, alice, "history", {"conv": conv, "limit": 5}, reply="history")
    assert [m["seq"] for m in newest["messages"]] == [8, 9, 10, 11, 12]
    assert (newest["conv"], newest["more"]) == (conv, True)
    older = await request(alice_c, alice, "history", {"conv": conv, "before": 8, "limit": 5}, reply="history")
    assert [m["seq"] for m in older["messages"]] == [3, 4, 5, 6, 7]
    oldest = await request(alice_c, alice, "history", {"conv": conv, "before": 3}, reply="history")
    assert ([m["seq"] for m in oldest["messages"]], oldest["more"]) == ([1, 2], False)

    mallory_c = await users.connected(mallory)
    await mallory_c.publish(f"im/v1/up/{mallory}/history", {"v": 1, "id": "h-1", "conv": conv})
    error = (await mallory_c.receive_on("/error")).json()
    assert (error["ref"], error["code"]) == ("h-1", "forbidden")
    group = uid("team")
    await cmd_ok(alice_c, alice, "group.create", group=group, members=[bob])
    await mallory_c.publish(f"im/v1/up/{mallory}/history", {"v": 1, "id": "h-2", "conv": f"g:{group}"})
    assert (await mallory_c.receive_on("/error")).json()["code"] == "forbidden"


async def test_edit_recall_and_delete_for_me_are_events_in_order(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    alice_c, bob_c = await users.connected(alice), await users.connected(bob)
    conv = dm(alice, bob)
    await _send(alice_c, alice, 2, to=bob)
    await _settled(alice_c, 2)
    await alice_c.publish(
        up(alice), {"v": 1, "id": "e-1", "to": bob, "op": "edit", "ref_seq": 1, "text": "m1!"}
    )
    await alice_c.publish(up(alice), {"v": 1, "id": "r-1", "to": bob, "op": "recall", "ref_seq": 2})
    live = [(await bob_c.receive_on("/msg")).json() for _ in range(4)]
    assert [(m["seq"], m.get("op"), m.get("ref_seq")) for m in live] == [
        (1, None, None),
        (2, None, None),
        (3, "edit", 1),
        (4, "recall", 2),
    ]
    assert live[2]["text"] == "m1!"
    assert "text" not in live[3]

    # Only the sender may edit, only a plain message, only one that exists.
    await bob_c.publish(up(bob), {"v": 1, "id": "x-1", "to": alice, "op": "edit", "ref_seq": 1, "text": "no"})
    assert (await bob_c.receive_on("/error")).json()["code"] == "forbidden"
    await alice_c.publish(up(alice), {"v": 1, "id": "x-2", "to": bob, "op": "recall", "ref_seq": 3})
    assert (await alice_c.receive_on("/error")).json()["code"] == "bad_request"
    await alice_c.publish(up(alice), {"v": 1, "id": "x-3", "to": bob, "op": "recall", "ref_seq": 99})
    assert (await alice_c.receive_on("/error")).json()["code"] == "not_found"

    # Bob deletes message 1 for himself: private, no new seq in the conversation.
    await bob_c.publish(up(bob), {"v": 1, "id": "d-1", "to": alice, "op": "delete", "ref_seq": 1})
    mine = (await bob_c.receive_on(f"u/{bob}/msg")).json()  # all of bob's devices learn it
    assert (mine["conv"], mine["op"], mine["ref_conv"], mine["ref_seq"]) == (dm(bob, bob), "delete", conv, 1)
    assert (await bob_c.receive_on("/ack")).json()["conv"] == dm(bob, bob)
    await alice_c.nothing(0.3, suffix="/msg")
    assert await users.server.storage.last_seq(conv) == 4

    bob_states, _ = await sync_all(bob_c, bob)
    bob_view = {m["seq"]: m for m in bob_states[conv]["messages"]}
    assert bob_view[1] == {k: v for k, v in bob_view[1].items() if k != "text"}
    assert bob_view[1]["deleted"] is True
    assert [m.get("op") for m in bob_states[conv]["messages"]] == [None, None, "edit", "recall"]
    assert bob_states[dm(bob, bob)]["messages"][0]["op"] == "delete"
    history = await request(bob_c, bob, "history", {"conv": conv}, reply="history")
    assert history["messages"][0]["deleted"] is True
    alice_states, _ = await sync_all(alice_c, alice)
    assert alice_states[conv]["messages"][0]["text"] == "m1"
    assert alice_states[conv]["unread"] == 0


async def test_500_messages_while_away_arrive_complete_in_order(
    tmp_path: Path, uid: Callable[[str], str]
) -> None:
    # One sender at full speed: the per-user publish rate limit is lifted for this server.
    async with EmbeddedServer(
        data_dir=tmp_path / "data",
        listeners=[Listener(name="default", port=0)],
        settings=BrokerSettings(connect_timeout_s=3.0, publish_rate=0),
    ) as server:
        users = Users(server, uid)
        try:
            await _away_and_back(users)
        finally:
            users.close_all()


async def _away_and_back(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    alice_c = await users.connected(alice)
    bob_away = users.client(bob, client_id=f"{bob}-phone", clean_session=False)
    await bob_away.connect()
    bob_away.close()
    await _send(alice_c, alice, 500, to=bob)
    await _settled(alice_c, 500)

    bob_back = users.client(bob, client_id=f"{bob}-phone", clean_session=False)
    await bob_back.connect()
    queued: list[dict[str, Any]] = []
    while len(queued) < 500:
        queued.append((await bob_back.receive_on("/msg")).json())
    assert [m["seq"] for m in queued] == list(range(1, 501))  # the session queue, in order
    _, synced = await sync_all(bob_back, bob, {dm(alice, bob): 0})
    by_id: dict[str, dict[str, Any]] = {}
    for message in queued + synced:
        by_id.setdefault(message["server_id"], message)
    assert sorted(m["seq"] for m in by_id.values()) == list(range(1, 501))  # none missing
    assert len(by_id) == 500  # none twice after id dedup
    await bob_back.nothing(0.3, suffix="/msg")
