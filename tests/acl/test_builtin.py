"""The built-in v1 topic table (DESIGN.md section 2), evaluated through the engine."""

from __future__ import annotations

import pytest

from mqim.acl import AclEngine, Action, Identity, MembershipIndex, describe_builtins, parse_rules

PUB, SUB, RECV = Action.PUBLISH, Action.SUBSCRIBE, Action.RECEIVE
ALICE = Identity(user="alice", client_id="alice-phone")
SERVICE = Identity(user="logic-1", client_id="logic-1", kind="service")
BRIDGE = Identity(user="mosq", client_id="mosq-bridge", kind="bridge")
ADMIN = Identity(user="root", client_id="cli", kind="admin")


@pytest.fixture
def index() -> MembershipIndex:
    index = MembershipIndex()
    index.set_group("team", ["alice", "bob"])
    index.set_group("other", ["bob"])
    index.add_contact("alice", "carol")
    return index


@pytest.fixture
def engine(index: MembershipIndex) -> AclEngine:
    return AclEngine(membership=index)


@pytest.mark.parametrize(
    ("action", "topic"),
    [
        (PUB, "im/v1/up/alice/msg"),
        (PUB, "im/v1/up/alice/typing"),
        (SUB, "im/v1/u/alice/#"),
        (SUB, "im/v1/u/alice/msg"),
        (SUB, "im/v1/u/alice/+"),
        (SUB, "im/v1/u/alice"),
        (RECV, "im/v1/u/alice/msg"),
        (SUB, "im/v1/g/team/#"),
        (SUB, "im/v1/g/team/msg"),
        (SUB, "im/v1/g/team/+"),
        (RECV, "im/v1/g/team/msg"),
        (SUB, "im/v1/presence/alice"),
        (SUB, "im/v1/presence/bob"),  # shares group "team"
        (SUB, "im/v1/presence/carol"),  # direct contact
        (RECV, "im/v1/presence/carol"),
    ],
)
def test_user_may(engine: AclEngine, action: Action, topic: str) -> None:
    decision = engine.decide(ALICE, action, topic)
    assert decision.allowed, decision
    assert decision.rule.startswith("builtin:user-")


@pytest.mark.parametrize(
    ("action", "topic"),
    [
        (PUB, "im/v1/up/bob/msg"),
        (PUB, "im/v1/up/alice"),
        (PUB, "im/v1/up/alice/msg/extra"),
        (PUB, "im/v1/u/alice/msg"),
        (PUB, "im/v1/u/bob/msg"),
        (PUB, "im/v1/g/team/msg"),
        (PUB, "im/v1/presence/alice"),
        (SUB, "im/v1/u/bob/#"),
        (SUB, "im/v1/u/+/msg"),
        (SUB, "im/v1/u/#"),
        (SUB, "im/v1/#"),
        (SUB, "#"),
        (SUB, "+/v1/u/alice/#"),
        (SUB, "im/v1/+/alice/#"),
        (SUB, "im/v1/up/alice/#"),
        (SUB, "im/v1/up/+/msg"),
        (RECV, "im/v1/up/alice/msg"),
        (RECV, "im/v1/u/bob/msg"),
        (SUB, "im/v1/g/other/#"),  # not a member
        (RECV, "im/v1/g/other/msg"),
        (SUB, "im/v1/g/+/msg"),
        (SUB, "im/v1/g/#"),
        (SUB, "im/v1/presence/dave"),  # shares nothing
        (SUB, "im/v1/presence/+"),
        (SUB, "im/v1/presence/#"),
        (SUB, "im/v1/presence/bob/#"),
        (SUB, "$share/x/im/v1/u/alice/#"),
        (SUB, "$SYS/#"),
        (SUB, "unrelated/#"),
        (PUB, "unrelated"),
    ],
)
def test_user_may_not(engine: AclEngine, action: Action, topic: str) -> None:
    assert not engine.decide(ALICE, action, topic).allowed


def test_group_removal_takes_effect_at_once(engine: AclEngine, index: MembershipIndex) -> None:
    assert engine.allowed(ALICE, SUB, "im/v1/g/team/#")
    assert engine.allowed(ALICE, RECV, "im/v1/g/team/msg")
    assert engine.allowed(ALICE, SUB, "im/v1/presence/bob")
    assert engine.cache_len >= 3
    index.remove_member("team", "alice")
    assert not engine.allowed(ALICE, SUB, "im/v1/g/team/#")
    assert not engine.allowed(ALICE, RECV, "im/v1/g/team/msg")
    assert not engine.allowed(ALICE, SUB, "im/v1/presence/bob")
    index.add_member("team", "alice")
    assert engine.allowed(ALICE, RECV, "im/v1/g/team/msg")


def test_presence_follows_other_members(engine: AclEngine, index: MembershipIndex) -> None:
    bob = Identity(user="bob")
    assert engine.allowed(bob, SUB, "im/v1/presence/alice")
    index.remove_member("team", "alice")  # bob's answer about alice changes too
    assert not engine.allowed(bob, SUB, "im/v1/presence/alice")


def test_contact_changes_take_effect(engine: AclEngine, index: MembershipIndex) -> None:
    assert not engine.allowed(ALICE, SUB, "im/v1/presence/dave")
    index.add_contact("dave", "alice")
    assert engine.allowed(ALICE, SUB, "im/v1/presence/dave")
    index.remove_contact("alice", "dave")
    assert not engine.allowed(ALICE, SUB, "im/v1/presence/dave")


def test_configured_rules_cannot_open_the_user_namespace(index: MembershipIndex) -> None:
    rules = parse_rules("allow all publish,subscribe,receive #\nallow user:alice subscribe im/v1/u/+/msg\n")
    engine = AclEngine(membership=index, rules=rules)
    assert engine.allowed(ALICE, SUB, "sensors/#")
    assert engine.allowed(ALICE, PUB, "sensors/x")
    for action, topic in [
        (SUB, "#"),
        (SUB, "im/v1/u/+/msg"),
        (PUB, "im/v1/up/bob/msg"),
        (PUB, "im/v1/u/bob/msg"),
        (RECV, "im/v1/u/bob/msg"),
    ]:
        decision = engine.decide(ALICE, action, topic)
        assert not decision.allowed
        assert decision.rule == "builtin:user-lock"
    # Its own uplink stays allowed (here by the configured rule, which comes first).
    assert engine.allowed(ALICE, PUB, "im/v1/up/alice/msg")


@pytest.mark.parametrize("user", ["+", "#", "a/b", "$SYS", "a\0b", "", "al+ice", "x#"])
def test_odd_user_names_never_widen(index: MembershipIndex, user: str) -> None:
    engine = AclEngine(membership=index, rules=parse_rules("allow all publish,subscribe sensors/%u/#"))
    odd = Identity(user=user, client_id=user)
    for action, topic in [
        (PUB, "im/v1/up/+/msg"),
        (PUB, f"im/v1/up/{user}/msg"),
        (SUB, "im/v1/u/+/#"),
        (SUB, f"im/v1/u/{user}/#"),
        (SUB, "im/v1/presence/+"),
        (SUB, "sensors/#"),
        (SUB, "sensors/+/#"),
        (PUB, "sensors/x/y"),
        (PUB, f"sensors/{user}/y"),
    ]:
        assert not engine.allowed(odd, action, topic), (user, action, topic)
    bridge = Identity(user=user, kind="bridge")
    assert not engine.allowed(bridge, SUB, "bridge/#")
    assert not engine.allowed(bridge, PUB, "bridge/x/y")


def test_service(engine: AclEngine) -> None:
    allowed = [
        (PUB, "im/v1/u/alice/msg"),
        (PUB, "im/v1/g/team/msg"),
        (PUB, "im/v1/presence/alice"),
        (SUB, "im/v1/up/#"),
        (SUB, "im/v1/up/+/+"),
        (SUB, "$share/logic/im/v1/up/#"),
        (SUB, "$share/logic/im/v1/up/+/msg"),
        (RECV, "im/v1/up/alice/msg"),
    ]
    denied = [
        (PUB, "im/v1/up/alice/msg"),
        (SUB, "im/v1/u/#"),
        (SUB, "#"),
        (SUB, "$share/logic/#"),
        (PUB, "other/x"),
        (RECV, "im/v1/u/alice/msg"),
    ]
    for action, topic in allowed:
        assert engine.allowed(SERVICE, action, topic), (action, topic)
    for action, topic in denied:
        assert not engine.allowed(SERVICE, action, topic), (action, topic)


def test_bridge(engine: AclEngine) -> None:
    for action in Action:
        name = "bridge/mosq/#" if action is SUB else "bridge/mosq/a/b"
        assert engine.allowed(BRIDGE, action, name)
    for action, topic in [
        (PUB, "bridge/other/x"),
        (SUB, "bridge/#"),
        (SUB, "bridge/+/x"),
        (PUB, "im/v1/up/mosq/msg"),
        (SUB, "#"),
    ]:
        assert not engine.allowed(BRIDGE, action, topic), (action, topic)


def test_admin(engine: AclEngine) -> None:
    for action, topic in [(SUB, "#"), (SUB, "$SYS/#"), (PUB, "im/v1/u/alice/msg"), (SUB, "$share/a/#")]:
        decision = engine.decide(ADMIN, action, topic)
        assert decision.allowed
        assert decision.rule == "builtin:admin"
    assert not engine.allowed(ADMIN, PUB, "a/#")  # still not a valid topic name


def test_builtin_off(index: MembershipIndex) -> None:
    engine = AclEngine(membership=index, builtin=False)
    assert not engine.allowed(ALICE, PUB, "im/v1/up/alice/msg")
    assert not engine.allowed(ADMIN, SUB, "#")


def test_describe_builtins() -> None:
    lines = describe_builtins()
    assert any(line.startswith("user: allow all publish im/v1/up/%u/+") for line in lines)
    assert any("builtin:user-lock" in line for line in lines)
    assert {line.split(":")[0] for line in lines} == {"user", "service", "bridge", "admin"}
