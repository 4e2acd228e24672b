"""Attacks against the real server, each its own test: reading others' inboxes, forging senders,
writing where only the server writes, group intrusion, placeholder injection, bad tokens,
disabled accounts, revoked roles, and flooding.

Every test talks MQTT over loopback to an `EmbeddedServer` (broker + logic + SQLite).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mqim.acl import AclEngine, Action, Identity, MembershipIndex, is_valid_filter, parse_rule
from mqim.auth import TOKEN_KEYS_FILENAME, Keyring, ensure_keyring, issue_token, save_keyring
from mqim.auth._b64url import b64url_encode
from mqim.server import EmbeddedServer
from mqim.storage import AccountKind
from tests.conftest import PASSWORD, Users
from tests.security.conftest import eventually, service_client, settings, started, users_of
from tests.support.mqtt import Paho, Raw

DENIED = 0x80

# -- helpers -------------------------------------------------------------------------------------


async def add_rules(server: EmbeddedServer, *rules: str) -> None:
    """Store rules as `mqim acl add` does, and apply them now."""
    for rule in rules:
        await server.storage.add_acl_rule(rule)
    await server.reload_policy()


def session_of(server: EmbeddedServer, client: Paho) -> set[str]:
    assert server.broker is not None
    client_id = client.client._client_id.decode()
    session = server.broker.hub.sessions.get(client_id)
    return set(session.subscriptions) if session is not None else set()


async def connack_code(client: Paho) -> int:
    """Connect, return the CONNACK code and close (paho would otherwise retry on its own)."""
    try:
        _, rc = await client.connect(expect_rc=None)  # type: ignore[arg-type]
    finally:
        client.close()
    return rc


async def none_containing(client: Paho, marker: bytes, wait: float = 0.3) -> None:
    """Assert that nothing whose payload contains `marker` arrives within `wait` seconds."""
    await asyncio.sleep(wait)
    leaked = []
    while not client.messages.empty():
        msg = client.messages.get_nowait()
        if marker in msg.payload:
            leaked.append(msg)
    assert not leaked, f"leaked: {leaked}"


async def error_of(client: Paho, user: str) -> dict[str, object]:
    msg = await client.receive_on(f"im/v1/u/{user}/error")
    body = msg.json()
    assert isinstance(body, dict)
    return body


# -- reading another user's inbox ---------------------------------------------------------------


async def test_direct_subscribe_to_another_inbox_is_refused(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    bob_c = await users.connected(bob)
    alice_c = await users.connected(alice)
    assert await alice_c.subscribe(f"im/v1/u/{bob}/#") == DENIED
    assert await alice_c.subscribe(f"im/v1/u/{bob}/msg") == DENIED
    svc = await service_client(users)
    await svc.publish(f"im/v1/u/{bob}/msg", {"v": 1, "text": "for bob only"})
    assert (await bob_c.receive_on("/msg")).json()["text"] == "for bob only"
    await alice_c.nothing(0.3)


@pytest.mark.parametrize(
    "pattern",
    [
        "im/v1/u/+/msg",
        "im/v1/u/+/#",
        "im/v1/u/#",
        "im/v1/+/{bob}/msg",
        "im/v1/+/+/+",
        "im/+/u/{bob}/#",
        "im/#",
        "#",
        "+/#",
        "+/+/+/+/+",
        "+/v1/u/{bob}/msg",
        "im/v1/u/{bob}/+",
        "$share/x/im/v1/u/{bob}/#",
        "$share/x/#",
    ],
)
async def test_wildcards_never_reach_another_inbox(users: Users, pattern: str) -> None:
    # A wildcard is granted as its receive scope (alice's own topics) or refused when that is
    # empty (a filter naming bob); either way bob's inbox never reaches her (issue 12).
    alice, bob = await users.add("alice"), await users.add("bob")
    alice_c = await users.connected(alice)
    code = await alice_c.subscribe(pattern.format(bob=bob))
    assert code == (DENIED if "{bob}" in pattern else 1), code
    svc = await service_client(users)
    await svc.publish(f"im/v1/u/{bob}/msg", {"v": 1, "text": "secret"})
    await none_containing(alice_c, b"secret")  # her own retained presence may arrive


async def test_retained_message_in_another_inbox_is_not_leaked(users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    svc = await service_client(users)
    await svc.publish(f"im/v1/u/{bob}/event", {"v": 1, "type": "secret"}, retain=True)
    alice_c = await users.connected(alice)
    for pattern in (f"im/v1/u/{bob}/#", f"im/v1/u/{bob}/event"):
        assert await alice_c.subscribe(pattern) == DENIED
    for pattern in ("#", "im/#", "im/v1/u/+/event", "+/#", "$share/x/#"):
        assert await alice_c.subscribe(pattern) == 1  # her own topics only
    await none_containing(alice_c, b"secret")
    bob_c = await users.connected(bob)
    await bob_c.subscribe(f"im/v1/u/{bob}/event")
    got = await bob_c.receive_on("/event")
    assert got.retain
    assert got.json()["type"] == "secret"


WIDE = ["#", "+/#", "im/+/#", "+/v1/u/+/msg", "$share/x/#"]
"""The wide filters of issue 12: granted to an ordinary user as exactly what it may receive."""


@pytest.mark.parametrize("pattern", WIDE)
async def test_wide_wildcards_of_an_ordinary_user_never_deliver_anything_foreign(
    server: EmbeddedServer, users: Users, pattern: str
) -> None:
    alice, bob, pub = await users.add("alice"), await users.add("bob"), await users.add("pub")
    storage = server.storage
    await storage.create_role("ops")
    await storage.assign_role(alice, "ops")
    await add_rules(server, "allow role:ops subscribe,receive ops/#", f"allow user:{pub} publish ops/#")
    svc = await service_client(users)
    pub_c = await users.connected(pub)
    await svc.publish(f"im/v1/u/{bob}/event", {"v": 1, "type": "foreign-retained"}, retain=True)
    alice_c = users.client(alice, client_id=f"{alice}-wide", clean_session=False)
    await alice_c.connect()
    assert await alice_c.subscribe(pattern) == 1
    await none_containing(alice_c, b"foreign")  # retained: bob's event stays his
    # Live: bob's inbox never; alice's own inbox and (through `#`-like filters) ops/ do.
    await svc.publish(f"im/v1/u/{bob}/msg", {"v": 1, "text": "foreign-live"})
    await svc.publish(f"im/v1/u/{alice}/msg", {"v": 1, "text": "own"})
    assert (await alice_c.receive_on("/msg")).json()["text"] == "own"
    await pub_c.publish("ops/alerts", b"ops-with-role")
    if pattern in ("#", "+/#", "$share/x/#"):
        assert (await alice_c.receive_on("ops/alerts")).payload == b"ops-with-role"
    await none_containing(alice_c, b"foreign")
    # Queued: while alice is away her persistent session keeps only what she may receive.
    alice_c.close()
    await eventually(lambda: _away(server, f"{alice}-wide"), what="alice away")
    await svc.publish(f"im/v1/u/{bob}/msg", {"v": 1, "text": "foreign-queued"}, qos=1)
    await svc.publish(f"im/v1/u/{alice}/msg", {"v": 1, "text": "own-queued"}, qos=1)
    alice_c = users.client(alice, client_id=f"{alice}-wide", clean_session=False)
    await alice_c.connect()
    assert (await alice_c.receive_on("/msg")).json()["text"] == "own-queued"
    await none_containing(alice_c, b"foreign")
    # After a role change the scope shrinks at once: ops/ no longer arrives.
    await storage.unassign_role(alice, "ops")
    await server.reload_policy()
    await pub_c.publish("ops/alerts", b"foreign-after-role-change")
    await svc.publish(f"im/v1/u/{bob}/msg", {"v": 1, "text": "foreign-after"})
    await none_containing(alice_c, b"foreign")


def _away(server: EmbeddedServer, client_id: str) -> bool:
    assert server.broker is not None
    session = server.broker.hub.sessions.get(client_id)
    return session is not None and session.conn is None


async def test_retained_messages_follow_receive_rules_inside_an_allowed_filter(
    server: EmbeddedServer, users: Users
) -> None:
    alice, pub = await users.add("alice"), await users.add("pub")
    await add_rules(
        server,
        "allow all subscribe,receive sensors/#",
        f"allow user:{pub} publish sensors/#",
        f"deny user:{alice} receive sensors/secret/#",
    )
    pub_c = await users.connected(pub)
    await pub_c.publish("sensors/secret/door", b"s3cr3t", retain=True)
    await pub_c.publish("sensors/public/temp", b"21C", retain=True)
    alice_c = await users.connected(alice)
    assert await alice_c.subscribe("sensors/#") == 1  # allowed filter...
    got = await alice_c.receive()
    assert (got.topic, got.payload) == ("sensors/public/temp", b"21C")
    await alice_c.nothing(0.3)  # ...but the denied retained topic never arrives
    await pub_c.publish("sensors/secret/door", b"live")
    await alice_c.nothing(0.3)


@pytest.mark.parametrize("change", ["unassign", "delete-role", "remove-rule"])
async def test_subscription_made_before_a_role_change_is_revoked_live(
    server: EmbeddedServer, users: Users, change: str
) -> None:
    alice, pub = await users.add("alice"), await users.add("pub")
    storage = server.storage
    await storage.create_role("ops")
    await storage.assign_role(alice, "ops")
    rule = await storage.add_acl_rule("allow role:ops subscribe,receive ops/#")
    await add_rules(server, f"allow user:{pub} publish ops/#")
    alice_c = await users.connected(alice)
    pub_c = await users.connected(pub)
    assert await alice_c.subscribe("ops/#") == 1
    await pub_c.publish("ops/alerts", b"before")
    assert (await alice_c.receive()).payload == b"before"
    # The change comes from storage, as `mqim role ...` / `mqim acl remove` in another process
    # would make it; the broker notices by polling (no reload call here).
    if change == "unassign":
        await storage.unassign_role(alice, "ops")
    elif change == "delete-role":
        await storage.delete_role("ops")
    else:
        await storage.remove_acl_rule(rule.rule_id)
    await eventually(lambda: "ops/#" not in session_of(server, alice_c), what="subscription removed")
    await pub_c.publish("ops/alerts", b"after")
    await alice_c.nothing(0.3)
    assert await alice_c.subscribe("ops/#") == DENIED
    assert server.broker is not None
    assert server.broker.hub.counters.extra.get("subscriptions_revoked", 0) >= 1


async def test_role_granted_later_applies_to_the_live_session(server: EmbeddedServer, users: Users) -> None:
    alice = await users.add("alice")
    await add_rules(server, "allow role:ops subscribe,receive ops/#")
    alice_c = await users.connected(alice)
    assert await alice_c.subscribe("ops/#") == DENIED
    await server.storage.create_role("ops")
    await server.storage.assign_role(alice, "ops")
    await server.reload_policy()
    assert await alice_c.subscribe("ops/#") == 1


async def test_persistent_session_loses_a_revoked_subscription_while_away(
    server: EmbeddedServer, users: Users
) -> None:
    alice, pub = await users.add("alice"), await users.add("pub")
    await server.storage.create_role("ops")
    await server.storage.assign_role(alice, "ops")
    await add_rules(server, "allow role:ops subscribe,receive ops/#", f"allow user:{pub} publish ops/#")
    first = await users.connected(alice, client_id=f"{alice}-phone", clean_session=False)
    assert await first.subscribe("ops/#") == 1
    first.close()
    await server.storage.unassign_role(alice, "ops")
    await server.reload_policy()
    pub_c = await users.connected(pub)
    await pub_c.publish("ops/alerts", b"while away")
    back = await users.connected(alice, client_id=f"{alice}-phone", clean_session=False)
    assert "ops/#" not in session_of(server, back)
    await back.nothing(0.3)


# -- writing where one may not ------------------------------------------------------------------


async def test_cannot_publish_as_another_user(users: Users) -> None:
    alice, bob, carol = await users.add("alice"), await users.add("bob"), await users.add("carol")
    carol_c = await users.connected(carol)
    bob_c = await users.connected(bob)
    alice_c = await users.connected(alice)
    await alice_c.publish(f"im/v1/up/{bob}/msg", {"v": 1, "id": "forged-1", "to": carol, "text": "I am bob"})
    error = await error_of(alice_c, alice)
    assert (error["code"], error["ref"]) == ("forbidden", "forged-1")
    await carol_c.nothing(0.3)
    await bob_c.nothing(0.1, suffix="/ack")  # bob was never made to send anything


@pytest.mark.parametrize(
    "topic",
    [
        "im/v1/u/{bob}/msg",  # a fake message straight into bob's inbox
        "im/v1/u/{bob}/ack",
        "im/v1/u/{alice}/msg",  # even one's own inbox is the server's to write
        "im/v1/g/team/msg",  # a group, even as a member
        "im/v1/g/team/event",
        "im/v1/presence/{bob}",
        "im/v1/up/{alice}",  # wrong shape of one's own topic
        "im/v1/up/{alice}/msg/extra",
        "im/v1/up/+/msg".replace("+", "{bob}"),
    ],
)
async def test_cannot_publish_on_server_topics(server: EmbeddedServer, users: Users, topic: str) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    server.membership.set_group("team", [alice, bob])
    bob_c = await users.connected(bob)
    await bob_c.subscribe("im/v1/g/team/#")
    await bob_c.subscribe(f"im/v1/presence/{bob}")
    alice_c = await users.connected(alice)
    target = topic.format(alice=alice, bob=bob)
    await alice_c.publish(target, {"v": 1, "id": "x-1", "text": "forged"})
    error = await error_of(alice_c, alice)
    assert error["code"] == "forbidden"
    assert target in str(error["message"])
    await none_containing(bob_c, b"forged")  # bob sees his own presence, never the forgery


async def test_forbidden_qos1_publish_is_acknowledged_dropped_and_reported(users: Users) -> None:
    """What the README promises: PUBACK (3.1.1 has no negative ack), dropped, `forbidden` error."""
    alice, bob = await users.add("alice"), await users.add("bob")
    bob_c = await users.connected(bob)
    alice_c = await users.connected(alice)
    await alice_c.publish(f"im/v1/u/{bob}/msg", b'{"id":"q-1"}', qos=1)  # asserts the PUBACK
    assert (await error_of(alice_c, alice))["ref"] == "q-1"
    await bob_c.nothing(0.3)
    await alice_c.publish(f"im/v1/u/{bob}/msg", b"x", qos=2)  # QoS 2: PUBREC/PUBCOMP, dropped
    assert (await error_of(alice_c, alice))["code"] == "forbidden"
    await bob_c.nothing(0.2)


# -- groups ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern", ["im/v1/g/team/#", "im/v1/g/team/msg", "im/v1/g/+/msg", "im/v1/g/#", "im/v1/g/+/+"]
)
async def test_non_member_cannot_subscribe_to_a_group(
    server: EmbeddedServer, users: Users, pattern: str
) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    server.membership.set_group("team", [bob])
    alice_c = await users.connected(alice)
    bob_c = await users.connected(bob)
    assert await alice_c.subscribe(pattern) == DENIED
    assert await bob_c.subscribe("im/v1/g/team/#") == 1
    svc = await service_client(users)
    await svc.publish("im/v1/g/team/msg", {"v": 1, "text": "members only"})
    assert (await bob_c.receive_on("/msg")).json()["text"] == "members only"
    await alice_c.nothing(0.3)


async def test_non_member_cannot_post_in_a_group_at_broker_level(
    server: EmbeddedServer, users: Users
) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    server.membership.set_group("team", [bob])
    bob_c = await users.connected(bob)
    await bob_c.subscribe("im/v1/g/team/#")
    alice_c = await users.connected(alice)
    await alice_c.publish("im/v1/g/team/msg", {"v": 1, "id": "g-1", "text": "intruder"})
    assert (await error_of(alice_c, alice))["code"] == "forbidden"
    await bob_c.nothing(0.3)


async def test_removed_member_stops_receiving_at_once(server: EmbeddedServer, users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    server.membership.set_group("team", [alice, bob])
    alice_c = await users.connected(alice)
    assert await alice_c.subscribe("im/v1/g/team/#") == 1
    svc = await service_client(users)
    await svc.publish("im/v1/g/team/msg", {"v": 1, "text": "one"})
    assert (await alice_c.receive_on("/msg")).json()["text"] == "one"
    server.membership.set_group("team", [bob])
    await svc.publish("im/v1/g/team/msg", {"v": 1, "text": "two"})
    await alice_c.nothing(0.3)


# -- placeholder injection -------------------------------------------------------------------------

EVIL = ["+", "#", "a/b", "$SYS", "+/#", "x+", "a#", "/", ""]


@pytest.mark.parametrize("name", EVIL)
def test_engine_evil_user_names_never_widen_a_placeholder_rule(name: str) -> None:
    engine = AclEngine(
        rules=[
            parse_rule("allow all publish,subscribe,receive dev/%u/#"),
            parse_rule("allow all publish,subscribe,receive cid/%c/#"),
            parse_rule("deny all receive dev/%u/private/#"),
        ],
        membership=MembershipIndex(),
    )
    who = Identity(user=name, client_id=name)
    for action in Action:
        for text in ("dev/victim/x", "dev/+/x", "cid/victim/x"):
            if action is not Action.SUBSCRIBE and "+" in text:
                continue
            assert not engine.allowed(who, action, text), (action, text)
    for request in ("dev/#", "dev/+/#", "#", "cid/#", "cid/+/#", f"dev/{name}/#", f"cid/{name}/#"):
        assert not engine.allowed(who, Action.SUBSCRIBE, request), request


@pytest.mark.parametrize("name", ["+", "#", "a/b", "$SYS", "x+y"])
async def test_accounts_with_wildcard_names_are_refused_at_connect(
    server: EmbeddedServer, users: Users, name: str
) -> None:
    # The CLI refuses such ids; storage takes them, so an account made around the CLI exists.
    await server.storage.add_user(name, password=PASSWORD)
    await add_rules(server, "allow all publish,subscribe,receive dev/%u/#")
    victim = await users.add("victim")
    victim_c = await users.connected(victim)
    assert await victim_c.subscribe(f"dev/{victim}/#") == 1
    assert await connack_code(users.client(name, client_id=f"evil-{len(name)}")) == 4
    await victim_c.nothing(0.2)


@pytest.mark.parametrize("client_id", ["+", "#", "a/b", "$SYS", "x/+", "victim/#"])
async def test_evil_client_ids_never_widen_a_percent_c_rule(
    server: EmbeddedServer, users: Users, client_id: str
) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    await add_rules(server, "allow all publish,subscribe,receive cid/%c/#")
    bob_c = await users.connected(bob, client_id="bobdev")
    assert await bob_c.subscribe("cid/bobdev/#") == 1  # the rule works for a sane client id
    evil = await users.connected(alice, client_id=client_id)
    for pattern in ("cid/+/#", "cid/#", "cid/bobdev/#", f"cid/{client_id}/#", f"cid/{client_id}"):
        if is_valid_filter(pattern):  # paho refuses to send invalid ones
            assert await evil.subscribe(pattern) == DENIED, pattern
    assert await evil.subscribe("#") == 1  # granted as alice's own topics, nothing of cid/
    await evil.publish("cid/bobdev/cmd", b"inject")
    assert (await error_of(evil, alice))["code"] == "forbidden"
    await bob_c.nothing(0.3)
    await bob_c.publish("cid/bobdev/status", b"bob-only")
    await none_containing(evil, b"bob-only")


@pytest.mark.parametrize("field", ["user", "client_id"])
async def test_nul_in_user_name_or_client_id_is_refused_on_the_wire(
    server: EmbeddedServer, users: Users, field: str
) -> None:
    alice = await users.add("alice")
    raw = Raw(server.port())
    try:
        if field == "user":
            raw.send(Raw.connect_packet(client_id="c1", user=f"{alice}\0x", password=PASSWORD))
        else:
            raw.send(Raw.connect_packet(client_id="c\0+", user=alice, password=PASSWORD))
        packet = await asyncio.to_thread(raw.read_packet, 3.0)
        # Either closed at once (MQTT-1.5.3-2 malformed string) or refused: never accepted.
        assert packet is None or (packet[0] == 2 and packet[2][1] != 0)
    finally:
        raw.close()


# -- tokens ----------------------------------------------------------------------------------------


def keys_file(server: EmbeddedServer) -> Path:
    return server.data_dir / TOKEN_KEYS_FILENAME


async def with_keys(server: EmbeddedServer) -> Keyring:
    keyring = ensure_keyring(keys_file(server), now=int(time.time()))
    await server.reload_policy()  # the broker re-reads the key file
    return keyring


async def token_rc(users: Users, user: str, token: str) -> int:
    return await connack_code(users.client(user, password=token))


async def test_valid_token_connects(server: EmbeddedServer, users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    keyring = await with_keys(server)
    token = issue_token(keyring, subject=alice, audience="mqim", ttl_s=60, now=int(time.time()))
    alice_c = users.client(alice, password=token)
    await alice_c.connect()
    bob_c = await users.connected(bob)
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "t-1", "to": bob, "text": "via token"})
    assert (await bob_c.receive_on("/msg")).json()["text"] == "via token"


@pytest.mark.parametrize(
    "attack",
    [
        "expired",
        "tampered",
        "wrong-audience",
        "alg-none",
        "other-user",
        "unknown-key",
        "foreign-key",
        "garbage",
    ],
)
async def test_bad_tokens_are_refused(server: EmbeddedServer, users: Users, attack: str) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    keyring = await with_keys(server)
    now = int(time.time())
    user = alice
    if attack == "expired":
        token = issue_token(keyring, subject=alice, audience="mqim", ttl_s=60, now=now - 3600)
    elif attack == "tampered":
        good = issue_token(keyring, subject=bob, audience="mqim", ttl_s=60, now=now)
        head, _, sig = good.split(".")
        body = {"sub": alice, "aud": "mqim", "iat": now, "exp": now + 60, "jti": "x"}
        token = f"{head}.{b64url_encode(json.dumps(body).encode())}.{sig}"
    elif attack == "wrong-audience":
        token = issue_token(keyring, subject=alice, audience="another-service", ttl_s=60, now=now)
    elif attack == "alg-none":
        head = b64url_encode(b'{"alg":"none","typ":"JWT"}')
        body = {"sub": alice, "aud": "mqim", "iat": now, "exp": now + 60, "jti": "x"}
        token = f"{head}.{b64url_encode(json.dumps(body).encode())}."
    elif attack == "other-user":
        token = issue_token(keyring, subject=bob, audience="mqim", ttl_s=60, now=now)  # bob's, as alice
    elif attack == "unknown-key":
        token = issue_token(Keyring().rotated(now=now), subject=alice, audience="mqim", ttl_s=60, now=now)
    elif attack == "foreign-key":
        other = Keyring().rotated(now=now)
        assert keyring.signing_key is not None
        from mqim.auth import TokenKey

        same_kid = Keyring(keys=[TokenKey(kid=keyring.signing_key.kid, secret=b"y" * 32, created=now)])
        token = issue_token(same_kid, subject=alice, audience="mqim", ttl_s=60, now=now)
        assert other.signing_key is not None
    else:
        token = "eyJhbGciOiJIUzI1NiJ9.e30.AAAA"
    assert await token_rc(users, user, token) == 4


async def test_revoked_token_is_refused(server: EmbeddedServer, users: Users) -> None:
    alice = await users.add("alice")
    keyring = await with_keys(server)
    token = issue_token(
        keyring, subject=alice, audience="mqim", ttl_s=600, now=int(time.time()), token_id="jti-7"
    )
    assert await token_rc(users, alice, token) == 0
    await server.storage.revoke_token("jti-7", expires_ts=None)
    assert await token_rc(users, alice, token) == 4
    other = issue_token(keyring, subject=alice, audience="mqim", ttl_s=600, now=int(time.time()))
    assert await token_rc(users, alice, other) == 0


async def test_token_of_a_disabled_user_is_refused(server: EmbeddedServer, users: Users) -> None:
    alice = await users.add("alice")
    keyring = await with_keys(server)
    token = issue_token(keyring, subject=alice, audience="mqim", ttl_s=600, now=int(time.time()))
    await server.storage.set_disabled(alice, True)
    assert await token_rc(users, alice, token) == 4


async def test_key_rotation_reaches_the_running_server(server: EmbeddedServer, users: Users) -> None:
    alice = await users.add("alice")
    keyring = await with_keys(server)
    now = int(time.time())
    old = issue_token(keyring, subject=alice, audience="mqim", ttl_s=600, now=now)
    kept = keyring.rotated(now=now + 1, keep=2)
    save_keyring(keys_file(server), kept)
    await server.reload_policy()
    new = issue_token(kept, subject=alice, audience="mqim", ttl_s=600, now=now)
    assert await token_rc(users, alice, old) == 0
    assert await token_rc(users, alice, new) == 0
    save_keyring(keys_file(server), kept.rotated(now=now + 2, keep=1))
    await server.reload_policy()
    assert await token_rc(users, alice, old) == 4
    assert await token_rc(users, alice, new) == 4


async def test_password_still_works_beside_tokens(server: EmbeddedServer, users: Users) -> None:
    alice = await users.add("alice")
    await with_keys(server)
    assert await token_rc(users, alice, PASSWORD) == 0
    assert await token_rc(users, alice, "wrong") == 4


# -- disabled accounts -----------------------------------------------------------------------------


async def test_disabled_users_open_connection_is_closed_by_the_cli_in_another_process(
    server: EmbeddedServer, users: Users
) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    alice_c = await users.connected(alice)
    second = await users.connected(alice)
    bob_c = await users.connected(bob)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQIM_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mqim.cli", "user", "disable", alice, "--data-dir", str(server.data_dir),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    assert await asyncio.to_thread(alice_c.disconnected.wait, 5), "alice's connection stayed open"
    assert await asyncio.to_thread(second.disconnected.wait, 5)
    assert not bob_c.disconnected.is_set()
    assert await connack_code(users.client(alice)) == 4


async def test_disable_in_process_closes_at_once_and_enable_lets_back_in(
    server: EmbeddedServer, users: Users
) -> None:
    alice = await users.add("alice")
    alice_c = await users.connected(alice)
    assert await server.disable_user(alice) == 1
    assert await asyncio.to_thread(alice_c.disconnected.wait, 5)
    await server.storage.set_disabled(alice, False)
    await server.reload_policy()
    await users.connected(alice)


async def test_removed_account_is_closed_too(server: EmbeddedServer, users: Users) -> None:
    alice = await users.add("alice")
    alice_c = await users.connected(alice)
    await server.storage.remove_user(alice)
    assert await asyncio.to_thread(alice_c.disconnected.wait, 5)


# -- limits ----------------------------------------------------------------------------------------


async def test_publish_rate_limit_then_sustained_abuse_disconnects(
    tmp_path: Path, uid: Callable[[str], str]
) -> None:
    async with (
        started(
            tmp_path / "data",
            settings=settings(publish_rate=0.5, publish_burst=3, max_violations=6, violation_window_s=60),
        ) as server,
        users_of(server, uid) as users,
    ):
        alice, bob = await users.add("alice"), await users.add("bob")
        await add_rules(
            server, f"allow user:{bob} subscribe,receive play/#", f"allow user:{alice} publish play/#"
        )
        bob_c = await users.connected(bob)
        await bob_c.subscribe("play/#")
        alice_c = await users.connected(alice)
        for i in range(3):
            await alice_c.publish("play/x", b"%d" % i)
        assert [(await bob_c.receive()).payload for _ in range(3)] == [b"0", b"1", b"2"]
        for i in range(2):  # a few violations: told, dropped, still connected
            await alice_c.publish("play/x", json.dumps({"id": f"r-{i}"}))
            error = await error_of(alice_c, alice)
            assert (error["code"], error["ref"]) == ("rate_limited", f"r-{i}")
        await bob_c.nothing(0.2)
        assert not alice_c.disconnected.is_set()
        for _ in range(10):  # a flood: the connection is closed
            alice_c.client.publish("play/x", b"flood", qos=0)
        assert await asyncio.to_thread(alice_c.disconnected.wait, 5)
        assert server.broker is not None
        assert server.broker.hub.counters.extra["abuse_disconnects"] == 1
        assert server.broker.hub.counters.extra["rate_limited"] >= 6


async def test_payload_size_limit(tmp_path: Path, uid: Callable[[str], str]) -> None:
    async with (
        started(tmp_path / "data", settings=settings(max_payload_bytes=200, max_violations=3)) as server,
        users_of(server, uid) as users,
    ):
        alice, bob = await users.add("alice"), await users.add("bob")
        bob_c = await users.connected(bob)
        alice_c = await users.connected(alice)
        big = json.dumps({"v": 1, "id": "big-1", "to": bob, "text": "x" * 300})
        await alice_c.publish(f"im/v1/up/{alice}/msg", big)
        error = await error_of(alice_c, alice)
        assert (error["code"], error["ref"]) == ("too_large", "big-1")
        await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "ok-1", "to": bob, "text": "small"})
        assert (await bob_c.receive_on("/msg")).json()["text"] == "small"
        for _ in range(3):
            alice_c.client.publish(f"im/v1/up/{alice}/msg", "y" * 500, qos=0)
        assert await asyncio.to_thread(alice_c.disconnected.wait, 5)


async def test_repeated_forbidden_publishes_disconnect(tmp_path: Path, uid: Callable[[str], str]) -> None:
    async with (
        started(tmp_path / "data", settings=settings(max_violations=4)) as server,
        users_of(server, uid) as users,
    ):
        alice, bob = await users.add("alice"), await users.add("bob")
        alice_c = await users.connected(alice)
        for _ in range(3):
            await alice_c.publish(f"im/v1/u/{bob}/msg", b"{}")
        assert not alice_c.disconnected.is_set()
        await alice_c.publish(f"im/v1/u/{bob}/msg", b"{}")
        assert await asyncio.to_thread(alice_c.disconnected.wait, 5)


async def test_connections_per_user(tmp_path: Path, uid: Callable[[str], str]) -> None:
    async with (
        started(tmp_path / "data", settings=settings(max_connections_per_user=2)) as server,
        users_of(server, uid) as users,
    ):
        alice = await users.add("alice")
        svc = await users.add("svc", kind=AccountKind.SERVICE)
        first = await users.connected(alice, client_id=f"{alice}-1")
        await users.connected(alice, client_id=f"{alice}-2")
        assert await connack_code(users.client(alice, client_id=f"{alice}-3")) == 5
        # Taking over one's own client id is not an extra connection.
        await users.connected(alice, client_id=f"{alice}-1")
        assert await asyncio.to_thread(first.disconnected.wait, 5)
        # Services are exempt.
        for i in range(3):
            await users.connected(svc, client_id=f"{svc}-{i}")


async def test_connect_rate_per_source_address(tmp_path: Path, uid: Callable[[str], str]) -> None:
    async with (
        started(
            tmp_path / "data", settings=settings(connect_rate_per_address=0.01, connect_burst_per_address=3)
        ) as server,
        users_of(server, uid) as users,
    ):
        alice = await users.add("alice")
        for i in range(3):
            await users.connected(alice, client_id=f"c{i}")
        assert await connack_code(users.client(alice, client_id="c3")) == 3  # before any password check
        # Brute force meets the same wall.
        assert await connack_code(users.client(alice, password="guess", client_id="c4")) == 3
