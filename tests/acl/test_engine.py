"""AclEngine semantics: validation, deny wins, first-match reporting, caching, invalidation."""

from __future__ import annotations

import functools
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqim.acl import (
    DEFAULT_DENY,
    INVALID_REQUEST,
    MAX_CACHED_TOPIC_LENGTH,
    AclEngine,
    Action,
    Effect,
    Identity,
    MembershipIndex,
    Rule,
    Subject,
    is_valid_filter,
    is_valid_topic,
    parse_rule,
    parse_rules,
    topic_matches,
)

PUB, SUB, RECV = Action.PUBLISH, Action.SUBSCRIBE, Action.RECEIVE
ALICE = Identity(user="alice", client_id="phone", roles=frozenset({"staff"}))
BOB = Identity(user="bob", client_id="laptop")


class CountingLookup:
    """A membership lookup that does not report changes (so dynamic answers are not cached)."""

    def __init__(self) -> None:
        self.groups: dict[str, set[str]] = {}
        self.calls = 0

    def is_member(self, user: str, group: str) -> bool:
        self.calls += 1
        return user in self.groups.get(group, set())

    def shares_conversation(self, user: str, other: str) -> bool:
        self.calls += 1
        return False


def engine_with(text: str, **kwargs: object) -> AclEngine:
    return AclEngine(rules=parse_rules(text), membership=MembershipIndex(), **kwargs)  # type: ignore[arg-type]


def test_invalid_requests_are_denied() -> None:
    engine = engine_with("allow all publish,subscribe,receive #")
    for action, text in [(PUB, "a/+"), (PUB, ""), (RECV, "a/#"), (SUB, "a/#/b"), (SUB, ""), (PUB, "a\0")]:
        decision = engine.decide(ALICE, action, text)
        assert not decision.allowed
        assert decision.rule == INVALID_REQUEST
    assert engine.allowed(ALICE, SUB, "a/#")


def test_default_deny() -> None:
    decision = engine_with("allow user:bob publish a").decide(ALICE, PUB, "a")
    assert (decision.allowed, decision.rule, decision.reason) == (
        False,
        DEFAULT_DENY,
        "no rule grants publish on 'a'",
    )


def test_subjects_select_rules() -> None:
    engine = engine_with("allow user:alice publish a\nallow role:staff publish b\nallow all publish c")
    assert engine.allowed(ALICE, PUB, "a")
    assert engine.allowed(ALICE, PUB, "b")
    assert engine.allowed(ALICE, PUB, "c")
    assert not engine.allowed(BOB, PUB, "a")
    assert not engine.allowed(BOB, PUB, "b")
    assert engine.allowed(BOB, PUB, "c")


def test_explicit_deny_wins_over_earlier_allow() -> None:
    engine = engine_with(
        "allow all publish,subscribe,receive sensors/#\ndeny user:alice publish,receive sensors/secret"
    )
    decision = engine.decide(ALICE, PUB, "sensors/secret")
    assert not decision.allowed
    assert decision.rule == "deny user:alice publish,receive sensors/secret"
    assert engine.allowed(ALICE, PUB, "sensors/open")
    assert engine.allowed(BOB, PUB, "sensors/secret")
    assert not engine.allowed(ALICE, RECV, "sensors/secret")


def test_subscribe_deny_uses_intersection() -> None:
    engine = engine_with("allow all subscribe,receive sensors/#\ndeny all subscribe sensors/secret/+")
    assert not engine.allowed(ALICE, SUB, "sensors/#")
    assert not engine.allowed(ALICE, SUB, "sensors/+/x")
    assert not engine.allowed(ALICE, SUB, "sensors/secret/x")
    assert engine.allowed(ALICE, SUB, "sensors/open/#")
    assert engine.allowed(ALICE, SUB, "sensors/secret")  # the parent level itself is not denied
    assert engine.allowed(ALICE, RECV, "sensors/secret/x")  # deny covered subscribe only


def test_subscribe_allow_needs_subset() -> None:
    engine = engine_with("allow all subscribe a/+")
    assert engine.allowed(ALICE, SUB, "a/b")
    assert engine.allowed(ALICE, SUB, "a/+")
    assert not engine.allowed(ALICE, SUB, "a/#")
    assert not engine.allowed(ALICE, SUB, "a")
    engine = engine_with("allow all subscribe #")
    assert engine.allowed(ALICE, SUB, "x/#")
    assert not engine.allowed(ALICE, SUB, "$SYS/#")


def test_first_matching_allow_is_reported() -> None:
    engine = AclEngine(
        rules=[
            parse_rule("allow all publish a/+", name="narrow"),
            parse_rule("allow all publish a/#", name="wide"),
        ],
        membership=MembershipIndex(),
    )
    assert engine.decide(ALICE, PUB, "a/b").rule == "narrow"
    assert engine.decide(ALICE, PUB, "a/b/c").rule == "wide"
    decision = engine.decide(ALICE, PUB, "a/b")
    assert "'a/+' matches 'a/b'" in decision.reason


def test_first_matching_deny_is_reported() -> None:
    engine = AclEngine(
        rules=[
            parse_rule("allow all publish #", name="all"),
            parse_rule("deny all publish a/#", name="deny-a"),
            parse_rule("deny all publish a/b", name="deny-ab"),
        ],
        membership=MembershipIndex(),
    )
    assert engine.decide(ALICE, PUB, "a/b").rule == "deny-a"


def test_shared_subscriptions_need_share_grants() -> None:
    engine = engine_with(
        "allow all subscribe,receive jobs/#\nallow role:staff subscribe $share/workers/jobs/#"
    )
    assert engine.allowed(BOB, SUB, "jobs/#")
    assert not engine.allowed(BOB, SUB, "$share/workers/jobs/#")
    assert engine.allowed(ALICE, SUB, "$share/workers/jobs/#")
    assert engine.allowed(ALICE, SUB, "$share/workers/jobs/x")
    assert not engine.allowed(ALICE, SUB, "$share/thieves/jobs/#")
    engine = engine_with("allow all subscribe $share/+/jobs/#\ndeny all subscribe jobs/secret")
    assert engine.allowed(ALICE, SUB, "$share/any/jobs/open")
    assert not engine.allowed(ALICE, SUB, "$share/any/jobs/#")  # a plain deny covers shares too
    assert not engine.allowed(ALICE, SUB, "jobs/open")  # a share grant is not a plain grant


def test_share_deny_only_denies_shares() -> None:
    engine = engine_with(
        "allow all subscribe jobs/#\nallow all subscribe $share/+/jobs/#\ndeny all subscribe $share/bad/#"
    )
    assert engine.allowed(ALICE, SUB, "jobs/x")
    assert engine.allowed(ALICE, SUB, "$share/good/jobs/x")
    assert not engine.allowed(ALICE, SUB, "$share/bad/jobs/x")


def test_placeholders() -> None:
    engine = engine_with("allow all publish,subscribe,receive devices/%u/%c/#")
    assert engine.allowed(ALICE, PUB, "devices/alice/phone/temp")
    assert engine.allowed(ALICE, SUB, "devices/alice/phone/#")
    assert not engine.allowed(ALICE, SUB, "devices/alice/+/#")
    assert not engine.allowed(ALICE, PUB, "devices/bob/phone/temp")
    assert not engine.allowed(Identity(user="alice"), PUB, "devices/alice//temp")  # empty client id


def test_deny_with_unusable_placeholder_denies_for_everyone() -> None:
    engine = engine_with("allow all publish #\ndeny all publish private/%u")
    odd = Identity(user="a/b")
    assert not engine.allowed(odd, PUB, "private/x")
    assert engine.allowed(odd, PUB, "public/x")
    assert not engine.allowed(ALICE, PUB, "private/alice")
    assert engine.allowed(ALICE, PUB, "private/bob")


def test_cache_hits_and_bounds() -> None:
    engine = engine_with("allow all publish #", cache_size=3)
    for topic in ("a", "b", "c", "d"):
        assert engine.allowed(ALICE, PUB, topic)
    assert engine.cache_len == 3
    assert engine.decide(ALICE, PUB, "d") is engine.decide(ALICE, PUB, "d")
    long_topic = "x" * (MAX_CACHED_TOPIC_LENGTH + 1)
    engine.invalidate()
    assert engine.allowed(ALICE, PUB, long_topic)
    assert engine.cache_len == 0


def test_cache_disabled_and_negative_size() -> None:
    engine = engine_with("allow all publish #", cache_size=0)
    assert engine.allowed(ALICE, PUB, "a")
    assert engine.cache_len == 0
    with pytest.raises(ValueError, match="cache_size"):
        engine_with("", cache_size=-1)


def test_invalidate_user_only_drops_that_user() -> None:
    engine = engine_with("allow all publish #")
    for identity, topic in itertools.product((ALICE, BOB), ("a", "b")):
        engine.allowed(identity, PUB, topic)
    other_alice = Identity(user="alice", client_id="tablet")
    engine.allowed(other_alice, PUB, "a")
    assert engine.cache_len == 5
    engine.invalidate_user("alice")
    assert engine.cache_len == 2
    engine.invalidate_user("nobody")
    assert engine.cache_len == 2
    engine.invalidate()
    assert engine.cache_len == 0


def test_eviction_keeps_user_index_consistent() -> None:
    engine = engine_with("allow all publish #", cache_size=2)
    engine.allowed(ALICE, PUB, "a")
    engine.allowed(BOB, PUB, "a")
    engine.allowed(BOB, PUB, "b")  # evicts alice's entry
    engine.invalidate_user("alice")
    assert engine.cache_len == 2
    engine.invalidate_user("bob")
    assert engine.cache_len == 0


def test_set_rules_replaces_and_invalidates() -> None:
    engine = engine_with("allow all publish a")
    assert engine.allowed(ALICE, PUB, "a")
    rules = [Rule(effect=Effect.ALLOW, actions=frozenset({PUB}), pattern="b", subject=Subject.everyone())]
    engine.set_rules(rules)
    assert engine.rules == tuple(rules)
    assert not engine.allowed(ALICE, PUB, "a")
    assert engine.allowed(ALICE, PUB, "b")
    with pytest.raises(TypeError):
        engine.set_rules(["allow all publish a"])  # type: ignore[list-item]


def test_unobserved_lookup_is_asked_every_time() -> None:
    lookup = CountingLookup()
    lookup.groups["team"] = {"alice"}
    engine = AclEngine(membership=lookup)
    assert engine.allowed(ALICE, SUB, "im/v1/g/team/#")
    assert engine.allowed(ALICE, SUB, "im/v1/g/team/#")
    assert lookup.calls >= 2
    lookup.groups["team"].clear()
    assert not engine.allowed(ALICE, SUB, "im/v1/g/team/#")
    # Decisions that never asked the lookup are still cached.
    calls = lookup.calls
    assert engine.allowed(ALICE, SUB, "im/v1/u/alice/#")
    assert engine.allowed(ALICE, SUB, "im/v1/u/alice/#")
    assert lookup.calls == calls
    assert engine.cache_len == 1


def test_close_detaches_from_the_index() -> None:
    index = MembershipIndex()
    index.add_member("team", "alice")
    engine = AclEngine(membership=index)
    assert engine.allowed(ALICE, RECV, "im/v1/g/team/msg")
    engine.close()
    index.remove_member("team", "alice")  # no listener left, and no stale answer either
    assert not engine.allowed(ALICE, RECV, "im/v1/g/team/msg")


# -- property (d): a granted subscription never delivers a topic the identity may not receive --

LEVELS = ("im", "v1", "u", "g", "up", "presence", "alice", "bob", "team", "other", "$SYS", "x")
SUB_LEVELS = (*LEVELS, "+")


def _topics() -> list[str]:
    topics: set[str] = set()
    for a, b in itertools.product(LEVELS, repeat=2):
        topics.update((a, f"{a}/{b}", f"{a}/{b}/x"))
    for kind, owner in itertools.product(LEVELS, repeat=2):
        base = f"im/v1/{kind}/{owner}"
        topics.update((f"im/v1/{kind}", base, f"{base}/msg", f"{base}/x/y", f"{base}/"))
    return sorted(t for t in topics if is_valid_topic(t))


TOPICS = _topics()

random_filters = st.builds(
    lambda head, rest, tail: "/".join([*head, *rest, *(["#"] if tail else [])]) or "#",
    st.sampled_from([(), ("im",), ("im", "v1"), ("+", "v1"), ("im", "+")]),
    st.lists(st.sampled_from(SUB_LEVELS), max_size=3),
    st.booleans(),
).filter(is_valid_filter)

# Every filter shaped like the v1 table, checked in each example so the property has teeth.
V1_FILTERS = sorted(
    f
    for kind, owner, tail in itertools.product(
        ["u", "g", "presence", "up", "+"],
        ["alice", "bob", "team", "other", "+", "#"],
        [(), ("#",), ("msg",), ("+",), ("x", "#"), ("",)],
    )
    if is_valid_filter(f := "/".join(("im", "v1", kind, owner, *tail)))
)
EXTRA_FILTERS = [
    *("#", "+/#", "im/#", "im/v1/#", "+/v1/u/alice/#", "im/+/u/alice/#", "x/#", "alice/#", "$SYS/#")
]


@functools.cache
def matched_topics(topic_filter: str) -> tuple[str, ...]:
    return tuple(t for t in TOPICS if topic_matches(topic_filter, t))


configured = st.lists(
    st.builds(
        lambda effect, read, pattern: f"{effect} all {'subscribe,receive' if read else 'publish'} {pattern}",
        st.sampled_from(["allow", "allow", "deny"]),
        st.booleans(),
        st.sampled_from(
            ["#", "im/#", "im/v1/u/+/#", "im/v1/g/#", "x/#", "im/v1/presence/+", "%u/#", "im/v1/u/alice/x"]
        ),
    ),
    max_size=3,
)


@settings(max_examples=100, deadline=None)
@given(configured, st.sampled_from(["alice", "bob"]), st.lists(random_filters, max_size=5))
def test_subscribe_never_exceeds_receive(rule_texts: list[str], user: str, more: list[str]) -> None:
    """(d) A granted subscription never covers a topic the identity may not receive.

    And under im/v1/ it never covers anything but the user's own inbox, its groups and the
    presence of users it shares a conversation with, whatever was configured.
    """
    index = MembershipIndex()
    index.set_group("team", ["alice"])
    index.add_contact("alice", "bob")
    engine = AclEngine(rules=parse_rules("\n".join(rule_texts)), membership=index)
    identity = Identity(user=user, client_id="c")
    mine = {("u", user), ("presence", "alice"), ("presence", "bob")}
    if user == "alice":
        mine.add(("g", "team"))
    granted = 0
    for topic_filter in (*V1_FILTERS, *EXTRA_FILTERS, *more):
        if not engine.allowed(identity, SUB, topic_filter):
            continue
        granted += 1
        for topic in matched_topics(topic_filter):
            assert engine.allowed(identity, RECV, topic), (topic_filter, topic, rule_texts)
            if topic.startswith("im/v1/"):
                levels = topic.split("/")
                assert len(levels) >= 4, (topic_filter, topic)
                assert (levels[2], levels[3]) in mine, (topic_filter, topic, rule_texts)
    if not any(text.startswith("deny") for text in rule_texts):
        assert granted >= 5  # at least the user's own inbox filters
