"""Several devices (client ids) of one user: same messages, same order, same unread counts."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import Users
from tests.e2e._im import cmd_ok, dm, sync_all


async def test_three_devices_see_the_same_messages_and_unread_counts(
    users: Users, uid: Callable[[str], str]
) -> None:
    alice, bob, carol = await users.add("alice"), await users.add("bob"), await users.add("carol")
    group = uid("team")
    devices = [await users.connected(bob, client_id=f"{bob}-{name}") for name in ("phone", "laptop", "tab")]
    alice_c, carol_c = await users.connected(alice), await users.connected(carol)
    await cmd_ok(alice_c, alice, "group.create", group=group, members=[bob, carol])
    for n in range(1, 6):
        await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": f"a-{n}", "to": bob, "text": f"d{n}"})
        await carol_c.publish(
            f"im/v1/up/{carol}/msg", {"v": 1, "id": f"c-{n}", "group": group, "text": f"g{n}"}
        )

    seen = []
    for device in devices:
        got = [
            (m.json()["conv"], m.json()["seq"]) for m in [await device.receive_on("/msg") for _ in range(10)]
        ]
        assert [seq for conv, seq in got if conv == dm(alice, bob)] == [1, 2, 3, 4, 5]
        assert [seq for conv, seq in got if conv == f"g:{group}"] == [1, 2, 3, 4, 5]
        seen.append(got)

    # One device reads; the others follow through the event, and all agree with sync.
    phone = devices[0]
    await phone.publish(f"im/v1/up/{bob}/read", {"v": 1, "conv": dm(alice, bob), "seq": 3})
    for device in devices:
        event = (await device.receive_on("/event")).json()
        assert (event["type"], event["conv"], event["seq"], event["unread"]) == ("read", dm(alice, bob), 3, 2)
    unread = []
    for device in devices:
        states, _ = await sync_all(device, bob, {dm(alice, bob): 5, f"g:{group}": 5})
        unread.append({conv: state["unread"] for conv, state in states.items()})
    assert unread == [{dm(alice, bob): 2, f"g:{group}": 5}] * 3

    # A message from one device reaches the others (and receipts reach every device of the sender).
    await devices[1].publish(f"im/v1/up/{bob}/msg", {"v": 1, "id": "b-1", "to": alice, "text": "from laptop"})
    for device in (devices[0], devices[2]):
        assert (await device.receive_on("/msg")).json()["text"] == "from laptop"
    while (await alice_c.receive_on("/msg")).json()["from"] != bob:
        pass  # alice's own messages, copied to her inbox
    for device in devices:
        receipt = (await device.receive_on("/receipt")).json()
        assert (receipt["kind"], receipt["user"], receipt["seq"]) == ("delivered", alice, 6)


async def test_a_new_device_syncs_the_full_state(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    alice_c = await users.connected(alice)
    old = await users.connected(bob)
    for n in range(1, 8):
        await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": f"a-{n}", "to": bob, "text": f"{n}"})
    for _ in range(7):
        await old.receive_on("/msg")
    await old.publish(f"im/v1/up/{bob}/read", {"v": 1, "conv": dm(alice, bob), "seq": 4})
    await old.receive_on("/event")

    new = await users.connected(bob, client_id=f"{bob}-new-phone")
    states, messages = await sync_all(new, bob)
    state = states[dm(alice, bob)]
    assert (state["last_seq"], state["read_seq"], state["unread"]) == (7, 4, 3)
    assert [m["seq"] for m in messages] == list(range(1, 8))
    assert [m["text"] for m in messages] == [str(n) for n in range(1, 8)]
