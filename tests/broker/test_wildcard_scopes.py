"""Wildcard subscriptions deliver their receive scope: the filter intersected with what the
identity may receive (DESIGN.md section 8), with a named limit on wide ones per session."""

from __future__ import annotations

from collections.abc import Callable

from tests.broker.conftest import ServerFactory, broker_of
from tests.conftest import Users


async def test_wide_subscriptions_per_session_are_limited(
    make_server: ServerFactory, uid: Callable[[str], str]
) -> None:
    server = await make_server(
        rules=["allow all publish,subscribe,receive t/#", "deny all receive t/+/secret"],
        max_wide_subscriptions_per_session=2,
    )
    users = Users(server, uid)
    try:
        alice = await users.add("alice")
        client = await users.connected(alice)
        assert await client.subscribe("t/a/#") == 1  # wide: minus t/a/secret
        assert await client.subscribe("t/b/#") == 1
        assert await client.subscribe("t/c/#") == 0x80  # a third wide one
        assert await client.subscribe("t/c/x") == 1  # exact scopes do not count
        assert await client.subscribe("t/a/#", qos=0) == 0  # replacing one is not a new one
        refused = broker_of(server).hub.counters.acl_denied_subscribe
        assert refused >= 1
    finally:
        users.close_all()


async def test_group_wildcard_follows_membership(
    make_server: ServerFactory, uid: Callable[[str], str]
) -> None:
    server = await make_server(rules=[])
    users = Users(server, uid)
    try:
        alice, bob = await users.add("alice"), await users.add("bob")
        group = f"g-{alice}"
        server.membership.set_group(group, [alice, bob])
        client = await users.connected(alice)
        assert await client.subscribe("im/v1/g/+/note") == 1  # her groups only
        broker_of(server).publish_local(f"im/v1/g/{group}/note", b"member", qos=1)
        assert (await client.receive_on("/note")).payload == b"member"
        server.membership.remove_member(group, alice)  # the dynamic scope is recompiled at once
        broker_of(server).publish_local(f"im/v1/g/{group}/note", b"after-leaving", qos=1)
        await client.nothing(0.3, suffix="/note")
    finally:
        users.close_all()


async def test_shared_subscription_goes_only_to_members_whose_scope_allows(
    make_server: ServerFactory, uid: Callable[[str], str]
) -> None:
    server = await make_server(
        rules=["allow all publish,subscribe,receive t/#", "allow all subscribe,receive $share/+/t/#"]
    )
    users = Users(server, uid)
    try:
        alice, bob = await users.add("alice"), await users.add("bob")
        await server.storage.add_acl_rule(f"deny user:{bob} receive t/private/#")
        await server.reload_policy()
        a, b = await users.connected(alice), await users.connected(bob)
        assert await a.subscribe("$share/w/t/#") == 1
        assert await b.subscribe("$share/w/t/#") == 1  # wide for bob: minus t/private/#
        pub = await users.connected(alice)
        for n in range(6):
            await pub.publish(f"t/private/{n}", f"p{n}".encode())
        got = [(await a.receive()).payload for _ in range(6)]
        assert sorted(got) == [f"p{n}".encode() for n in range(6)]  # none lost to bob
        await b.nothing(0.3)
    finally:
        users.close_all()
