"""The rule model: subjects, identities, rules and placeholder patterns."""

from __future__ import annotations

import pytest

from mqim.acl import (
    Action,
    Effect,
    Identity,
    InvalidIdentity,
    InvalidRule,
    Rule,
    Subject,
    SubjectKind,
)
from mqim.acl._rules import placeholder_value

ALICE = Identity(user="alice", client_id="phone-1", roles=frozenset({"staff"}))


def rule(pattern: str, *, effect: Effect = Effect.ALLOW, actions: str = "publish") -> Rule:
    return Rule(
        effect=effect,
        actions=frozenset(Action(a) for a in actions.split(",")),
        pattern=pattern,
    )


def test_subjects() -> None:
    assert Subject.everyone().applies_to(ALICE)
    assert Subject.for_user("alice").applies_to(ALICE)
    assert not Subject.for_user("bob").applies_to(ALICE)
    assert Subject.for_role("staff").applies_to(ALICE)
    assert not Subject.for_role("guest").applies_to(ALICE)
    assert str(Subject.for_role("staff")) == "role:staff"
    assert str(Subject.everyone()) == "all"


@pytest.mark.parametrize("name", ["", "two words", "tab\there", "nul\0", "x" * 257])
def test_bad_subject_names(name: str) -> None:
    with pytest.raises(InvalidRule):
        Subject.for_user(name)


def test_all_subject_takes_no_name() -> None:
    with pytest.raises(InvalidRule):
        Subject(kind=SubjectKind.ALL, name="x")


def test_identity_is_hashable_and_validated() -> None:
    same = Identity(user="alice", client_id="phone-1", roles=frozenset({"staff"}))
    assert same == ALICE
    assert hash(same) == hash(ALICE)
    assert Identity(user="alice", kind="admin") != Identity(user="alice")
    with pytest.raises(InvalidIdentity):
        Identity(user="alice", kind="root")  # type: ignore[arg-type]
    with pytest.raises(InvalidIdentity):
        Identity(user="alice", roles="staff")  # type: ignore[arg-type]
    coerced = Identity(user="alice", roles={"a"})  # type: ignore[arg-type]
    assert coerced.roles == frozenset({"a"})


def test_rule_coerces_and_compiles() -> None:
    built = Rule(effect="allow", actions=frozenset({"publish"}), pattern="im/v1/up/%u/+")  # type: ignore[arg-type]
    assert built.effect is Effect.ALLOW
    assert built.actions == frozenset({Action.PUBLISH})
    assert built.compiled.placeholders == ((3, "u"),)
    assert built.compiled.expand(ALICE, widen=False) == ("im", "v1", "up", "alice", "+")


@pytest.mark.parametrize(
    "pattern",
    ["", "foo%u", "%u%c", "a/%x", "a/50%", "a/#/b", "a/b#", "a+", "a\0", "$share/g", "$share/%u/a"],
)
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(InvalidRule):
        rule(pattern)


@pytest.mark.parametrize("pattern", ["%u", "%u/#", "a/%c/%u/+", "$share/+/a/#", "$share/g/%u"])
def test_good_patterns(pattern: str) -> None:
    assert rule(pattern, actions="subscribe").pattern == pattern


def test_rule_needs_actions_and_valid_effect() -> None:
    with pytest.raises(InvalidRule):
        Rule(effect=Effect.ALLOW, actions=frozenset(), pattern="a")
    with pytest.raises(InvalidRule):
        Rule(effect="maybe", actions=frozenset({Action.PUBLISH}), pattern="a")  # type: ignore[arg-type]
    with pytest.raises(InvalidRule):
        Rule(effect=Effect.ALLOW, actions=frozenset({"fly"}), pattern="a")  # type: ignore[arg-type]
    with pytest.raises(InvalidRule):
        Rule(effect=Effect.ALLOW, actions="publish", pattern="a")  # type: ignore[arg-type]


def test_share_patterns_cannot_publish() -> None:
    with pytest.raises(InvalidRule):
        rule("$share/+/a/#", actions="publish")
    assert rule("$share/+/a/#", actions="subscribe,receive").compiled.share == "+"


@pytest.mark.parametrize("value", ["", "a+", "a#", "a/b", "$SYS", "a\0b", "+", "#"])
def test_unsafe_placeholder_values(value: str) -> None:
    assert placeholder_value(value) is None
    identity = Identity(user=value, client_id=value)
    allow = rule("x/%u/%c")
    assert allow.compiled.expand(identity, widen=False) is None
    # A deny rule widens instead: it denies what it would deny for any user.
    assert allow.compiled.expand(identity, widen=True) == ("x", "+", "+")


def test_safe_placeholder_values() -> None:
    assert placeholder_value("alice.b-1_x") == "alice.b-1_x"
    identity = Identity(user="alice", client_id="c 1")
    assert rule("x/%c").compiled.expand(identity, widen=False) == ("x", "c 1")
