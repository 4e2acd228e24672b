"""Issue 2: alice -> bob through the real embedded server, with real paho and aiomqtt clients."""

from __future__ import annotations

import json

import aiomqtt
import pytest

from tests.conftest import PASSWORD, Users


async def test_direct_messages_arrive_in_order_with_seq(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    bob_c = await users.connected(bob)
    alice_c = await users.connected(alice)
    await bob_c.subscribe(f"im/v1/u/{bob}/#")
    for n in range(1, 4):
        await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": f"c-{n}", "to": bob, "text": f"hi {n}"})
    got = [(await bob_c.receive_on("/msg")).json() for _ in range(3)]
    assert [m["seq"] for m in got] == [1, 2, 3]
    assert [m["text"] for m in got] == ["hi 1", "hi 2", "hi 3"]
    conv = f"d:{min(alice, bob)}:{max(alice, bob)}"
    assert all(m["conv"] == conv and m["from"] == alice for m in got)


async def test_ack_matches_the_stored_message(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    alice_c = await users.connected(alice)
    await alice_c.subscribe(f"im/v1/u/{alice}/#")
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "c-1", "to": bob, "text": "hello"})
    ack = (await alice_c.receive_on("/ack")).json()
    stored = await users.server.storage.get_messages(ack["conv"])
    assert len(stored) == 1
    assert (ack["id"], ack["seq"], ack["server_id"], ack["ts"]) == (
        stored[0].client_id,
        stored[0].seq,
        stored[0].server_id,
        stored[0].ts,
    )
    assert stored[0].body["text"] == "hello"


async def test_retried_id_gets_same_ack_and_no_second_delivery(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    bob_c = await users.connected(bob)
    alice_c = await users.connected(alice)
    await alice_c.subscribe(f"im/v1/u/{alice}/ack")
    request = {"v": 1, "id": "same-1", "to": bob, "text": "once"}
    await alice_c.publish(f"im/v1/up/{alice}/msg", request)
    first = (await alice_c.receive_on("/ack")).json()
    await alice_c.publish(f"im/v1/up/{alice}/msg", request)
    second = (await alice_c.receive_on("/ack")).json()
    assert first == second
    assert (await bob_c.receive_on("/msg")).json()["seq"] == 1
    await bob_c.nothing(0.5, suffix="/msg")


@pytest.mark.parametrize(("user", "password"), [("nobody-x", PASSWORD), ("alice", "wrong")])
async def test_unknown_user_and_wrong_password_are_refused(users: Users, user: str, password: str) -> None:
    if user == "alice":
        user = await users.add("alice")
    client = users.client(user, password=password)
    _, rc = await client.connect(expect_rc=None)  # type: ignore[arg-type]
    assert rc == 4  # bad user name or password


async def test_alice_cannot_publish_as_bob_nor_read_bobs_inbox(users: Users) -> None:
    alice, bob, carol = await users.add("alice"), await users.add("bob"), await users.add("carol")
    carol_c = await users.connected(carol)
    alice_c = await users.connected(alice)
    assert await alice_c.subscribe(f"im/v1/u/{bob}/#") == 0x80
    assert await alice_c.subscribe(f"im/v1/u/{bob}/msg") == 0x80
    await alice_c.subscribe(f"im/v1/u/{alice}/error")
    await alice_c.publish(f"im/v1/up/{bob}/msg", {"v": 1, "id": "forged", "to": carol, "text": "from bob"})
    error = (await alice_c.receive_on("/error")).json()
    assert error["code"] == "forbidden"
    assert error["ref"] == "forged"
    await carol_c.nothing(0.5, suffix="/msg")


@pytest.mark.parametrize(
    ("payload", "code", "ref"),
    [
        (b"{not json", "bad_request", None),
        (json.dumps({"v": 1, "id": "m-1", "text": "no target"}).encode(), "bad_request", "m-1"),
        (json.dumps({"v": 1, "id": "bad id!", "to": "x", "text": "t"}).encode(), "bad_request", None),
        (json.dumps({"v": 1, "id": "big-1", "to": "x", "text": "x" * 70_000}).encode(), "too_large", "big-1"),
    ],
    ids=["malformed-json", "missing-field", "bad-id", "oversize"],
)
async def test_bad_input_gets_an_error_and_the_next_message_goes_through(
    users: Users, payload: bytes, code: str, ref: str | None
) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    bob_c = await users.connected(bob)
    alice_c = await users.connected(alice)
    await alice_c.subscribe(f"im/v1/u/{alice}/#")
    await alice_c.publish(f"im/v1/up/{alice}/msg", payload)
    error = (await alice_c.receive_on("/error")).json()
    assert error["code"] == code
    assert error["ref"] == ref
    assert error["message"]
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "good-1", "to": bob, "text": "still here"})
    assert (await alice_c.receive_on("/ack")).json()["id"] == "good-1"
    assert (await bob_c.receive_on("/msg")).json()["text"] == "still here"


async def test_aiomqtt_client_round_trip(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    port = users.server.port()
    async with (
        aiomqtt.Client("127.0.0.1", port, username=bob, password=PASSWORD, identifier=f"{bob}-aio") as bob_c,
        aiomqtt.Client(
            "127.0.0.1", port, username=alice, password=PASSWORD, identifier=f"{alice}-aio"
        ) as alice_c,
    ):
        await bob_c.subscribe(f"im/v1/u/{bob}/msg", qos=1)
        await alice_c.publish(
            f"im/v1/up/{alice}/msg", json.dumps({"v": 1, "id": "a-1", "to": bob, "text": "yo"}), qos=1
        )
        async for message in bob_c.messages:
            body = json.loads(message.payload)
            assert body["text"] == "yo"
            assert body["seq"] == 1
            break
