"""Webhooks through a real server and a real HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mqim.broker import BrokerSettings, Listener
from mqim.hooks import DELIVERY_HEADER, EVENT_HEADER, HookEndpoint, HooksConfig
from mqim.server import EmbeddedServer
from tests.conftest import Users
from tests.e2e._im import cmd_ok, dm
from tests.hooks.receiver import Receiver, Request
from tests.support.mqtt import Paho

SECRET = "s3cret-for-tests"
_ids = itertools.count(1)


def hooks(*endpoints: tuple[str, str, dict[str, Any]], **bounds: Any) -> HooksConfig:
    return HooksConfig(
        endpoints=tuple(
            HookEndpoint.model_validate({"name": name, "url": url, "secret": SECRET, **extra})
            for name, url, extra in endpoints
        ),
        retry_initial_s=bounds.pop("retry_initial_s", 0.1),
        retry_max_s=bounds.pop("retry_max_s", 0.5),
        **bounds,
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = await Receiver().start()
    yield rx
    await rx.stop()


@pytest.fixture
async def server(tmp_path: Path, receiver: Receiver) -> AsyncIterator[EmbeddedServer]:
    config = hooks(
        ("push", receiver.url, {"events": ["message.offline", "user.online", "user.offline"]}),
        ("quiet", receiver.url.replace("/hook", "/quiet"), {"include_preview": False}),
    )
    async with EmbeddedServer(
        data_dir=tmp_path / "data",
        listeners=[Listener(name="default", port=0)],
        settings=BrokerSettings(connect_timeout_s=3.0),
        hooks=config,
    ) as srv:
        yield srv


async def send(client: Paho, me: str, **fields: Any) -> dict[str, Any]:
    """Send a message and wait for its ack."""
    ref = f"m-{next(_ids)}"
    await client.publish(f"im/v1/up/{me}/msg", {"v": 1, "id": ref, **fields})
    for _ in range(100):
        ack = (await client.receive_on("/ack")).json()
        if ack.get("id") == ref:
            return dict(ack)
    raise AssertionError(f"no ack for {ref}")


def on(requests: list[Request], path: str, event: str = "message.offline") -> list[Request]:
    return [r for r in requests if r.path == path and r.headers[EVENT_HEADER.lower()] == event]


async def test_offline_recipient_gets_one_signed_post_per_message(
    users: Users, receiver: Receiver, server: EmbeddedServer
) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    alice_c = await users.connected(alice)
    acks = [await send(alice_c, alice, to=bob, text=f"hello {n}") for n in range(5)]
    # 5 messages x 2 endpoints, plus alice's own user.online on "push".
    got = await receiver.wait_for(11)
    await asyncio.sleep(0.3)  # let anything extra arrive, then count exactly
    pushed, quiet = on(receiver.requests, "/hook"), on(receiver.requests, "/quiet")
    assert len(pushed) == 5, got
    assert len(quiet) == 5, got
    for n, (request, ack) in enumerate(zip(pushed, acks, strict=True)):
        assert request.signed_by(SECRET)
        body = request.json()
        assert body["type"] == "message.offline"
        assert (body["conv"], body["seq"]) == (dm(alice, bob), ack["seq"])
        assert (body["sender"], body["recipient"], body["group"]) == (alice, bob, None)
        assert body["preview"] == f"hello {n}"
        assert request.headers[DELIVERY_HEADER.lower()] == f"{dm(alice, bob)}:{ack['seq']}:{bob}"
    assert all("preview" not in r.json() and r.signed_by(SECRET) for r in quiet)
    assert not any(r.signed_by("another secret") for r in pushed)


async def test_online_recipient_and_the_sender_trigger_nothing(
    users: Users, receiver: Receiver, server: EmbeddedServer
) -> None:
    alice, bob, carol = await users.add("alice"), await users.add("bob"), await users.add("carol")
    alice_c, _bob_c = await users.connected(alice), await users.connected(bob)
    await send(alice_c, alice, to=bob, text="you are online")
    # A marker for carol (offline): everything routed before it was handled before it.
    marker = await send(alice_c, alice, to=carol, text="marker")
    await receiver.wait_for(1 + 2 + 1)  # marker on two endpoints + two user.online on "push"
    pushed = on(receiver.requests, "/hook")
    assert [(r.json()["recipient"], r.json()["seq"]) for r in pushed] == [(carol, marker["seq"])]


async def test_group_message_posts_once_per_offline_member_never_for_the_sender(
    users: Users, receiver: Receiver, server: EmbeddedServer, uid: Callable[[str], str]
) -> None:
    alice, bob, carol, dave = [await users.add(n) for n in ("alice", "bob", "carol", "dave")]
    group = uid("team")
    alice_c, _carol_c = await users.connected(alice), await users.connected(carol)
    await cmd_ok(alice_c, alice, "group.create", group=group, members=[bob, carol, dave])
    ack = await send(alice_c, alice, group=group, text="hi all")
    await receiver.wait_for(2 * 2 + 2)  # bob and dave on two endpoints, 2 user.online
    await asyncio.sleep(0.3)
    pushed = on(receiver.requests, "/hook")
    assert sorted(r.json()["recipient"] for r in pushed) == sorted([bob, dave])
    assert all(r.json()["group"] == group and r.json()["seq"] == ack["seq"] for r in pushed)
    assert len(on(receiver.requests, "/quiet")) == 2


async def test_online_and_offline_events(users: Users, receiver: Receiver, server: EmbeddedServer) -> None:
    bob = await users.add("bob")
    bob_c = await users.connected(bob)
    await receiver.wait_for(1)
    bob_c.close()
    requests = await receiver.wait_for(2)
    events = [(r.json()["type"], r.json()["user"]) for r in requests if r.path == "/hook"]
    assert events == [("user.online", bob), ("user.offline", bob)]
    assert all(r.signed_by(SECRET) for r in requests)
    assert not on(requests, "/quiet", "user.online")  # "quiet" did not ask for presence


async def test_receiver_down_for_30_s_gets_everything_afterwards_in_order(
    tmp_path: Path, users: Users, uid: Callable[[str], str]
) -> None:
    rx = await Receiver().start()
    port = rx.port
    config = hooks(("push", rx.url, {}), retry_initial_s=0.2, retry_max_s=2.0)
    async with EmbeddedServer(
        data_dir=tmp_path / "down", listeners=[Listener(name="default", port=0)], hooks=config
    ) as srv:
        local = Users(srv, uid)
        try:
            alice, bob, carol = [await local.add(n) for n in ("alice", "bob", "carol")]
            alice_c = await local.connected(alice)
            await send(alice_c, alice, to=bob, text="before")
            await rx.wait_for(1)
            await rx.stop()
            sent: dict[str, list[int]] = {bob: [], carol: []}
            for round_ in range(3):  # messages during the outage, spread over its 30 s
                for n in range(10):
                    peer = bob if n % 2 else carol
                    sent[peer].append((await send(alice_c, alice, to=peer, text=f"{round_}-{n}"))["seq"])
                await asyncio.sleep(10)
            assert srv.hooks is not None
            assert srv.hooks.senders[0].stats.failed_attempts > 0
            assert srv.hooks.outbox.rows == 30
            back = await Receiver(port=port).start()
            try:
                got = await back.wait_for(30, timeout=30)
                await asyncio.sleep(0.3)
                bodies = [r.json() for r in back.requests]
                assert len(bodies) == 30, "nothing lost, nothing twice"
                for peer, seqs in sent.items():
                    assert [b["seq"] for b in bodies if b["recipient"] == peer] == seqs
                assert all(r.signed_by(SECRET) for r in got)
            finally:
                await back.stop()
        finally:
            local.close_all()
