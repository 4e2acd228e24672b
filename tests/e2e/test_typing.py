"""Typing notices through the real server: QoS 0, never stored, members only, rate limited."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import Users
from tests.e2e._im import cmd_ok, dm


async def test_direct_typing_reaches_the_peer_at_qos0_and_is_not_stored(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    alice_c, bob_c = await users.connected(alice), await users.connected(bob)
    conv = dm(alice, bob)
    await alice_c.publish(f"im/v1/up/{alice}/typing", {"v": 1, "conv": conv}, qos=0)
    notice = await bob_c.receive_on("/typing")
    assert notice.topic == f"im/v1/u/{bob}/typing"
    assert notice.qos == 0
    assert notice.json() == {"v": 1, "conv": conv, "user": alice}
    await alice_c.nothing(0.3, suffix="/typing")  # not echoed to the typist
    assert await users.server.storage.last_seq(conv) == 0


async def test_group_typing_goes_to_members_only(users: Users, uid: Callable[[str], str]) -> None:
    alice, bob, mallory = await users.add("alice"), await users.add("bob"), await users.add("mallory")
    group = uid("team")
    alice_c, bob_c = await users.connected(alice), await users.connected(bob)
    mallory_c = await users.connected(mallory)
    await cmd_ok(alice_c, alice, "group.create", group=group, members=[bob])
    await alice_c.publish(f"im/v1/up/{alice}/typing", {"v": 1, "conv": f"g:{group}"}, qos=0)
    notice = await bob_c.receive_on("/typing")
    assert (notice.topic, notice.json()["user"]) == (f"im/v1/g/{group}/typing", alice)
    await mallory_c.publish(f"im/v1/up/{mallory}/typing", {"v": 1, "conv": f"g:{group}"})
    assert (await mallory_c.receive_on("/error")).json()["code"] == "forbidden"
    await bob_c.nothing(0.3, suffix="/typing")
    await mallory_c.publish(f"im/v1/up/{mallory}/typing", {"v": 1, "conv": dm(alice, bob)})
    assert (await mallory_c.receive_on("/error")).json()["code"] == "forbidden"


async def test_typing_floods_are_rate_limited(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    alice_c, bob_c = await users.connected(alice), await users.connected(bob)
    conv = dm(alice, bob)
    for _ in range(30):
        # QoS 1 so that each one is handled before the next (one per batch)
        await alice_c.publish(f"im/v1/up/{alice}/typing", {"v": 1, "conv": conv})
    error = (await alice_c.receive_on("/error")).json()
    assert error["code"] == "rate_limited"
    got = 0
    while True:
        try:
            await bob_c.receive_on("/typing", timeout=0.5)
        except AssertionError:
            break
        got += 1
    assert 1 <= got < 30
