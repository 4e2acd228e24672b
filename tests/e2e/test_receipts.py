"""Delivery and read receipts, cursors and unread counts through the real server."""

from __future__ import annotations

from collections.abc import Callable

from mqim.storage import ConvState
from tests.conftest import Users
from tests.e2e._im import cmd_ok, dm


async def _state(users: Users, user: str, conv: str) -> ConvState:
    return (await users.server.storage.conv_states(user, [conv]))[0]


async def _flushed_state(users: Users, user: str, conv: str) -> ConvState:
    """The state once the broker wrote its pending delivered cursors."""
    assert users.server.receipts is not None
    await users.server.receipts.flush()
    return await _state(users, user, conv)


async def test_puback_of_the_recipient_sends_one_delivered_receipt(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    alice_c = await users.connected(alice)
    bob_1, bob_2 = await users.connected(bob), await users.connected(bob)  # two devices, one receipt
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "c-1", "to": bob, "text": "hi"})
    for device in (bob_1, bob_2):
        await device.receive_on("/msg")
    receipt = (await alice_c.receive_on("/receipt")).json()
    assert receipt == {"v": 1, "conv": dm(alice, bob), "seq": 1, "user": bob, "kind": "delivered"}
    await alice_c.nothing(0.5, suffix="/receipt")
    # The recipient's delivered cursor follows (written in batches).
    state = await _flushed_state(users, bob, dm(alice, bob))
    assert (state.delivered_seq, state.read_seq) == (1, 0)


async def test_no_delivered_receipt_until_an_offline_recipient_acknowledges(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    alice_c = await users.connected(alice)
    bob_away = users.client(bob, client_id=f"{bob}-phone", clean_session=False)
    await bob_away.connect()
    bob_away.close()
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "c-1", "to": bob, "text": "while away"})
    await alice_c.receive_on("/ack")
    await alice_c.nothing(0.5, suffix="/receipt")
    bob_back = users.client(bob, client_id=f"{bob}-phone", clean_session=False)
    await bob_back.connect()
    assert (await bob_back.receive_on("/msg")).json()["text"] == "while away"
    receipt = (await alice_c.receive_on("/receipt")).json()
    assert (receipt["kind"], receipt["seq"], receipt["user"]) == ("delivered", 1, bob)


async def test_read_moves_forward_only_and_tells_peer_and_own_devices(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    alice_c = await users.connected(alice)
    bob_1, bob_2 = await users.connected(bob), await users.connected(bob)
    conv = dm(alice, bob)
    for n in range(1, 4):
        await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": f"c-{n}", "to": bob, "text": f"{n}"})
    for device in (bob_1, bob_2):
        assert [m.json()["seq"] for m in [await device.receive_on("/msg") for _ in range(3)]] == [1, 2, 3]

    await bob_1.publish(f"im/v1/up/{bob}/read", {"v": 1, "conv": conv, "seq": 2})
    read = None
    while read is None or read["kind"] != "read":
        read = (await alice_c.receive_on("/receipt")).json()
    assert read == {"v": 1, "conv": conv, "seq": 2, "user": bob, "kind": "read"}
    for device in (bob_1, bob_2):
        event = (await device.receive_on("/event")).json()
        assert event == {"v": 1, "type": "read", "conv": conv, "seq": 2, "unread": 1}
    state = await _state(users, bob, conv)
    assert (state.read_seq, state.unread) == (2, 1)

    # Backwards (and beyond the last seq) never moves it back or past the end.
    await bob_2.publish(f"im/v1/up/{bob}/read", {"v": 1, "conv": conv, "seq": 1})
    await bob_2.publish(f"im/v1/up/{bob}/read", {"v": 1, "conv": conv, "seq": 99})
    event = (await bob_1.receive_on("/event")).json()
    assert (event["seq"], event["unread"]) == (3, 0)
    assert (await _state(users, bob, conv)).read_seq == 3
    await bob_1.nothing(0.3, suffix="/event")


async def test_read_of_a_conversation_one_is_not_in_is_refused(users: Users) -> None:
    alice, bob, mallory = await users.add("alice"), await users.add("bob"), await users.add("mallory")
    mallory_c = await users.connected(mallory)
    request = {"v": 1, "id": "r-1", "conv": dm(alice, bob), "seq": 1}
    await mallory_c.publish(f"im/v1/up/{mallory}/read", request)
    error = (await mallory_c.receive_on("/error")).json()
    assert (error["ref"], error["code"]) == ("r-1", "forbidden")
    await mallory_c.publish(f"im/v1/up/{mallory}/read", {"v": 1, "conv": "nonsense", "seq": 1})
    assert (await mallory_c.receive_on("/error")).json()["code"] == "bad_request"


async def test_group_receipts_are_aggregated_with_a_count(users: Users, uid: Callable[[str], str]) -> None:
    alice = await users.add("alice")
    members = [await users.add(f"m{i}") for i in range(4)]
    group = uid("team")
    alice_c = await users.connected(alice)
    clients = [await users.connected(m) for m in members]
    await cmd_ok(alice_c, alice, "group.create", group=group, members=members)
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "g-1", "group": group, "text": "all"})
    for client in clients:
        await client.receive_on("/msg")
    counts: list[int] = []
    while not counts or counts[-1] < len(members):
        receipt = (await alice_c.receive_on("/receipt")).json()
        assert (receipt["conv"], receipt["seq"], receipt["kind"]) == (f"g:{group}", 1, "delivered")
        assert receipt["user"] in members
        counts.append(receipt["count"])
    assert counts == sorted(counts)
    assert len(counts) <= len(members)

    # A member's read goes to the whole group, and to that member's own devices as an event.
    await clients[0].publish(f"im/v1/up/{members[0]}/read", {"v": 1, "conv": f"g:{group}", "seq": 1})
    for client in (alice_c, clients[1]):
        read = (await client.receive_on(f"{group}/receipt")).json()
        assert (read["kind"], read["user"], read["seq"]) == ("read", members[0], 1)
    assert (await clients[0].receive_on("/event")).json()["unread"] == 0


async def test_sender_own_messages_are_never_unread(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    alice_c = await users.connected(alice)
    bob_c = await users.connected(bob)
    conv = dm(alice, bob)
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "a-1", "to": bob, "text": "one"})
    await bob_c.receive_on("/msg")
    await bob_c.publish(f"im/v1/up/{bob}/msg", {"v": 1, "id": "b-1", "to": alice, "text": "two"})
    await bob_c.receive_on("/ack")
    bob_state, alice_state = await _state(users, bob, conv), await _state(users, alice, conv)
    assert (bob_state.last_seq, bob_state.unread) == (2, 0)  # replying reads what came before
    assert (alice_state.read_seq, alice_state.unread) == (1, 1)
