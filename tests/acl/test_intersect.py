"""Receive scopes: a wildcard filter intersected with what an identity may receive.

The reference is always the engine: a topic is in the scope exactly when the filter matches it and
the engine allows both RECEIVE on it and SUBSCRIBE on it (as a wildcard-free filter).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from mqim.acl import (
    DEFAULT_MAX_WIDE_SUBSCRIPTIONS_PER_SESSION,
    AclEngine,
    Action,
    Effect,
    Identity,
    InvalidRule,
    MembershipIndex,
    ReceiveScope,
    Rule,
    ScopePart,
    Subject,
    compile_receive_scope,
    find_witness,
    meet_levels,
    parse_rules,
    topic_matches,
)
from mqim.acl._matcher import match_levels

ALICE = Identity(user="alice", client_id="phone", roles=frozenset({"staff"}))
SERVICE = Identity(user="logic-1", client_id="logic-1", kind="service")
BRIDGE = Identity(user="mosq", client_id="mosq-bridge", kind="bridge")
ADMIN = Identity(user="root", client_id="cli", kind="admin")
ODD = Identity(user="odd+name", client_id="c")  # may not fill a %u level

PAHO_RULES = parse_rules(
    """
    allow all subscribe,receive #
    deny all subscribe test/nosubscribe
    """
)


def _index() -> MembershipIndex:
    index = MembershipIndex()
    index.set_group("g1", ["alice", "carol"])
    index.set_group("g2", ["bob", "dave"])
    index.add_contact("alice", "bob")
    return index


@pytest.fixture
def index() -> MembershipIndex:
    return _index()


def _scope(
    identity: Identity, topic_filter: str, rules: Sequence[Rule], index: MembershipIndex
) -> ReceiveScope:
    return compile_receive_scope(identity=identity, topic_filter=topic_filter, rules=rules, membership=index)


def _engine_allows(engine: AclEngine, identity: Identity, topic_filter: str, topic: str) -> bool:
    return (
        topic_matches(topic_filter, topic)
        and engine.allowed(identity, Action.RECEIVE, topic)
        and engine.allowed(identity, Action.SUBSCRIBE, topic)
    )


@pytest.fixture
def engine(index: MembershipIndex) -> Iterator[AclEngine]:
    engine = AclEngine(rules=PAHO_RULES, membership=index)
    yield engine
    engine.close()


# -- the filter algebra ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("a/#", "+/b", "a/b"),
        ("#", "a", "a"),
        ("a/#", "a", "a"),
        ("a/+", "a", None),
        ("+/#", "+", "+"),
        ("+/x", "$SYS/x", None),
        ("#", "$SYS/#", None),
        ("$SYS/#", "$SYS/+", "$SYS/+"),
        ("/#", "+", None),  # only the empty topic, which is not a topic name
        ("/#", "/+", "/+"),
        ("a/b", "a/c", None),
        ("a/+/c", "+/b/#", "a/b/c"),
        ("#", "#", "#"),
    ],
)
def test_meet(left: str, right: str, expected: str | None) -> None:
    for a, b in ((left, right), (right, left)):
        met = meet_levels(tuple(a.split("/")), tuple(b.split("/")))
        assert (None if met is None else "/".join(met)) == expected


def test_meet_with_everything() -> None:
    assert meet_levels((), ("$SYS", "#")) == ("$SYS", "#")


@pytest.mark.parametrize(
    ("pattern", "excludes", "found"),
    [
        ("#", [], True),
        ("#", ["#"], False),
        ("#", ["+", "+/+/#"], False),  # `+/+/#` also matches `+/+`'s parent-less cousins
        ("a/#", ["a", "a/+/#"], False),
        ("a/#", ["a/+/#"], True),  # `a` itself
        ("a/+", ["a/b"], True),
        ("test/nosubscribe", ["test/nosubscribe"], False),
        ("$SYS/#", ["#"], True),  # `#` never matches `$` topics
        ("+", ["x", "x1"], True),  # the fresh value avoids the literals
        ("/#", ["/+/#"], False),  # `/` alone is `/+` over valid names; `/` itself is ["", ""]
    ],
)
def test_witness(pattern: str, excludes: list[str], found: bool) -> None:
    levels = tuple(pattern.split("/"))
    split = [tuple(e.split("/")) for e in excludes]
    witness = find_witness(levels, split)
    assert (witness is not None) == found
    if witness is not None:
        topic = "/".join(witness)
        assert topic_matches(pattern, topic)
        assert not any(topic_matches(e, topic) for e in excludes)


# -- scopes of a user ------------------------------------------------------------------------------


def test_hash_as_user_is_everything_permitted(engine: AclEngine, index: MembershipIndex) -> None:
    scope = _scope(ALICE, "#", PAHO_RULES, index)
    assert not scope.empty
    assert scope.wide
    assert scope.dynamic
    for topic in (
        "TopicA",
        "TopicA/B",
        "/TopicA",
        "test/other",
        "im",
        "im/v2/x",
        "im/v1/u/alice/msg",
        "im/v1/u/alice",
        "im/v1/g/g1/msg",
        "im/v1/presence/alice",
        "im/v1/presence/bob",  # direct contact
        "im/v1/presence/carol",  # shares g1
    ):
        assert scope.allows(topic), topic
        assert _engine_allows(engine, ALICE, "#", topic), topic
    for topic in (
        "test/nosubscribe",
        "im/v1",
        "im/v1/u/bob/msg",
        "im/v1/g/g2/msg",
        "im/v1/presence/dave",
        "im/v1/up/alice/msg",  # publish only
        "$SYS/broker/uptime",
        "$TopicA/B",
    ):
        assert not scope.allows(topic), topic
        assert not _engine_allows(engine, ALICE, "#", topic), topic


@pytest.mark.parametrize("topic_filter", ["TopicA/+", "TopicA/#", "/#", "im/v1/u/alice/#", "im/v1/g/g1/+"])
def test_exact_scopes(index: MembershipIndex, topic_filter: str) -> None:
    scope = _scope(ALICE, topic_filter, PAHO_RULES, index)
    assert scope.exact
    assert not scope.wide
    assert scope.witness is not None
    assert topic_matches(topic_filter, scope.witness)


@pytest.mark.parametrize(
    "topic_filter",
    ["test/nosubscribe", "im/v1/u/bob/#", "im/v1/up/#", "$SYS/#"],
)
def test_refused(index: MembershipIndex, topic_filter: str) -> None:
    scope = _scope(ALICE, topic_filter, PAHO_RULES, index)
    assert scope.empty
    assert scope.witness is None
    assert not scope.allows("test/nosubscribe")
    assert "refused" in scope.describe()


def test_deny_cuts_the_wildcard_but_not_the_rest(index: MembershipIndex) -> None:
    scope = _scope(ALICE, "test/#", PAHO_RULES, index)
    assert scope.wide
    assert scope.allows("test")
    assert scope.allows("test/other")
    assert scope.allows("test/nosubscribe/deeper")  # the deny names one topic
    assert not scope.allows("test/nosubscribe")


def test_two_level_wildcard_misses_the_namespace_root(index: MembershipIndex) -> None:
    scope = _scope(ALICE, "+/+", PAHO_RULES, index)
    assert scope.wide
    assert not scope.dynamic  # `+/+` cannot reach a group or presence topic
    assert scope.allows("TopicA/B")
    assert not scope.allows("im/v1")
    assert not scope.allows("$TopicA/B")


def test_shared_subscription_is_judged_by_its_inner_filter(index: MembershipIndex) -> None:
    plain = _scope(ALICE, "#", PAHO_RULES, index)
    shared = _scope(ALICE, "$share/x/#", PAHO_RULES, index)
    assert shared.share == "x"
    assert shared.parts == plain.parts
    assert shared.allows("TopicA")
    assert not shared.allows("im/v1/u/bob/msg")


def test_placeholders_expand_for_the_identity(index: MembershipIndex) -> None:
    rules = parse_rules(
        """
        allow all subscribe,receive home/%u/#
        deny all receive home/+/secret
        """
    )
    scope = _scope(ALICE, "home/#", rules, index)
    assert scope.allows("home/alice/x")
    assert not scope.allows("home/alice/secret")
    assert not scope.allows("home/bob/x")
    assert _scope(ODD, "home/#", rules, index).empty  # an unsafe %u grants nothing


def test_deny_placeholder_widens_for_an_unsafe_name(index: MembershipIndex) -> None:
    rules = parse_rules(
        """
        allow all subscribe,receive #
        deny all receive priv/%u/#
        """
    )
    scope = _scope(ODD, "priv/#", rules, index)
    assert scope.allows("priv")
    assert not scope.allows("priv/anyone/x")


def test_membership_changes_need_a_recompile(index: MembershipIndex) -> None:
    before = _scope(ALICE, "im/v1/g/+/#", PAHO_RULES, index)
    assert before.dynamic
    assert before.allows("im/v1/g/g1/msg")
    assert not before.allows("im/v1/g/g2/msg")
    index.add_member("g2", "alice")
    assert not before.allows("im/v1/g/g2/msg")  # compiled: never asks the lookup
    after = _scope(ALICE, "im/v1/g/+/#", PAHO_RULES, index)
    assert after.allows("im/v1/g/g2/msg")
    index.remove_member("g1", "alice")
    assert not _scope(ALICE, "im/v1/g/+/#", PAHO_RULES, index).allows("im/v1/g/g1/msg")


def test_literal_owner_asks_only_that_owner(index: MembershipIndex) -> None:
    scope = _scope(ALICE, "im/v1/g/g1/#", PAHO_RULES, index)
    assert scope.exact
    assert scope.dynamic
    assert _scope(ALICE, "im/v1/g/g2/#", PAHO_RULES, index).empty


def test_owner_enumeration_is_capped(index: MembershipIndex) -> None:
    capped = compile_receive_scope(
        identity=ALICE, topic_filter="im/v1/presence/+", rules=PAHO_RULES, membership=index, max_owners=2
    )
    assert capped.capped
    assert capped.empty  # alice, bob and carol are three owners: the grant is left out whole
    named = compile_receive_scope(
        identity=ALICE, topic_filter="im/v1/presence/bob", rules=PAHO_RULES, membership=index, max_owners=2
    )
    assert not named.capped
    assert named.exact  # a literal owner is one question, never capped
    assert not _scope(ALICE, "im/v1/presence/+", PAHO_RULES, index).capped


def test_no_configured_rule_still_reaches_own_topics(index: MembershipIndex) -> None:
    scope = _scope(ALICE, "#", (), index)
    assert scope.allows("im/v1/u/alice/msg")
    assert not scope.allows("TopicA")
    assert len(scope.parts) == 1


def test_a_configured_allow_never_opens_the_namespace(index: MembershipIndex) -> None:
    rules = parse_rules("allow user:alice subscribe,receive im/v1/u/bob/#")
    assert _scope(ALICE, "im/v1/u/bob/#", rules, index).empty
    assert not _scope(ALICE, "#", rules, index).allows("im/v1/u/bob/msg")


def test_receive_and_subscribe_both_needed(index: MembershipIndex) -> None:
    rules = parse_rules(
        """
        allow all receive a/#
        allow all subscribe +/b
        """
    )
    scope = _scope(ALICE, "#", rules, index)
    assert scope.allows("a/b")
    assert not scope.allows("a/c")
    assert not scope.allows("c/b")


# -- other identity kinds ----------------------------------------------------------------------------


def test_service(index: MembershipIndex) -> None:
    scope = _scope(SERVICE, "#", (), index)
    assert scope.allows("im/v1/up/alice/msg")
    assert not scope.allows("im/v1/u/alice/msg")  # services publish there, they do not read it
    assert _scope(SERVICE, "$share/workers/im/v1/up/#", (), index).exact


def test_bridge(index: MembershipIndex) -> None:
    scope = _scope(BRIDGE, "#", (), index)
    assert scope.allows("bridge/mosq/x")
    assert not scope.allows("bridge/other/x")


def test_admin_reaches_dollar_topics_only_by_name(index: MembershipIndex) -> None:
    assert _scope(ADMIN, "#", (), index).exact
    assert not _scope(ADMIN, "#", (), index).allows("$SYS/x")
    sys_scope = _scope(ADMIN, "$SYS/#", (), index)
    assert sys_scope.exact
    assert sys_scope.allows("$SYS/x")
    denied = parse_rules("deny all receive $SYS/secret")
    assert not _scope(ADMIN, "$SYS/#", denied, index).allows("$SYS/secret")


def test_invalid_filter_is_empty(index: MembershipIndex) -> None:
    for bad in ("", "a/#/b", "ab/+e", "$share/x"):
        assert _scope(ALICE, bad, PAHO_RULES, index).empty


def test_builtin_off(index: MembershipIndex) -> None:
    scope = compile_receive_scope(
        identity=ALICE, topic_filter="#", rules=PAHO_RULES, membership=index, builtin=False
    )
    assert scope.allows("im/v1/u/bob/msg")  # no lock without the built-in rules


def test_named_limit() -> None:
    assert DEFAULT_MAX_WIDE_SUBSCRIPTIONS_PER_SESSION > 0


# -- properties ------------------------------------------------------------------------------------

_LEVELS = ["a", "b", "", "x", "$s", "im", "v1", "u", "g", "presence", "up"]
_LEVELS += ["alice", "bob", "carol", "g1", "g2"]
_level = st.sampled_from(_LEVELS)
_namespace_prefix = st.tuples(
    st.just("im"),
    st.just("v1"),
    st.sampled_from(["u", "g", "presence", "up"]),
    st.sampled_from(["alice", "bob", "carol", "dave", "g1", "g2", "odd"]),
)


@st.composite
def _topics(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        head = list(draw(_namespace_prefix))
        cut = draw(st.integers(min_value=1, max_value=4))
        levels = head[:cut] + draw(st.lists(_level, max_size=2))
    else:
        levels = draw(st.lists(_level, min_size=1, max_size=4))
    topic = "/".join(levels)
    assume(topic != "")
    return topic


@st.composite
def _filter_levels(draw: st.DrawFn, placeholders: bool) -> list[str]:
    pool = [*_LEVELS, "+", "+"] + (["%u", "%c"] if placeholders else [])
    if draw(st.booleans()):
        levels = list(draw(_namespace_prefix))[: draw(st.integers(min_value=1, max_value=4))]
        levels = [draw(st.sampled_from([level, "+"])) for level in levels]
        levels += draw(st.lists(st.sampled_from(pool), max_size=2))
    else:
        levels = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    return levels


@st.composite
def _filters(draw: st.DrawFn) -> str:
    text = "/".join(draw(_filter_levels(False)))
    assume(text != "")
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        text = "$share/grp/" + text
    return text


@st.composite
def _rules(draw: st.DrawFn) -> Rule:
    effect = draw(st.sampled_from([Effect.ALLOW, Effect.ALLOW, Effect.DENY]))
    actions = draw(st.sets(st.sampled_from(list(Action)), min_size=1))
    pattern = "/".join(draw(_filter_levels(True)))
    if Action.PUBLISH not in actions and draw(st.integers(min_value=0, max_value=5)) == 0:
        pattern = "$share/+/" + pattern
    subject = draw(
        st.sampled_from([Subject.everyone(), Subject.for_user("alice"), Subject.for_role("staff")])
    )
    try:
        return Rule(effect=effect, actions=frozenset(actions), pattern=pattern, subject=subject)
    except InvalidRule:
        assume(False)
        raise


_IDENTITIES = [
    ALICE,
    Identity(user="bob", client_id="laptop"),
    Identity(user="carol", client_id="alice"),
    ODD,
    SERVICE,
    BRIDGE,
    ADMIN,
]


def _instances(topic_filter: str, data: st.DataObject) -> list[str]:
    """Topic names the filter matches (most of them; the engine decides the rest)."""
    inner = topic_filter.split("/", 2)[2] if topic_filter.startswith("$share/") else topic_filter
    out: list[str] = []
    for _ in range(4):
        levels: list[str] = []
        for level in inner.split("/"):
            if level == "+":
                levels.append(data.draw(_level))
            elif level == "#":
                levels.extend(data.draw(st.lists(_level, max_size=2)))
            else:
                levels.append(level)
        if levels and levels != [""]:
            out.append("/".join(levels))
    return out


_BROAD = parse_rules("allow all subscribe,receive #")


@settings(max_examples=300, deadline=None)
@given(
    identity=st.sampled_from(_IDENTITIES),
    rules=st.lists(_rules(), max_size=5),
    broad=st.booleans(),
    topic_filter=_filters(),
    topics=st.lists(_topics(), min_size=1, max_size=8),
    data=st.data(),
)
def test_scope_equals_filter_and_engine(
    identity: Identity,
    rules: list[Rule],
    broad: bool,
    topic_filter: str,
    topics: list[str],
    data: st.DataObject,
) -> None:
    if broad:
        rules = [*rules, *_BROAD]
    topics = [*topics, *_instances(topic_filter, data)]
    index = _index()
    engine = AclEngine(rules=rules, membership=index, cache_size=0)
    try:
        scope = _scope(identity, topic_filter, rules, index)
        event("empty" if scope.empty else "exact" if scope.exact else "wide")
        event("some topic in the scope" if any(map(scope.allows, topics)) else "no topic in the scope")
        for topic in topics:
            assert scope.allows(topic) == _engine_allows(engine, identity, topic_filter, topic), (
                topic,
                scope.describe(),
            )
        if scope.witness is not None:
            assert _engine_allows(engine, identity, topic_filter, scope.witness), scope.describe()
        if scope.exact:
            for topic in topics:
                assert scope.allows(topic) == topic_matches(topic_filter, topic)
    finally:
        engine.close()


@settings(max_examples=300, deadline=None)
@given(
    pattern=_filter_levels(False),
    excludes=st.lists(_filter_levels(False), max_size=5),
    topics=st.lists(_topics(), max_size=12),
)
def test_witness_is_exact(pattern: list[str], excludes: list[list[str]], topics: list[str]) -> None:
    assume(pattern != [""])
    levels = tuple(pattern)
    split = [tuple(e) for e in excludes if e != [""]]
    witness = find_witness(levels, split)
    if witness is not None:
        topic = "/".join(witness)
        assert topic_matches("/".join(levels), topic)
        assert not any(match_levels(e, witness) for e in split)
    else:
        for topic in topics:
            parts = topic.split("/")
            assert not (match_levels(levels, parts) and not any(match_levels(e, parts) for e in split))


@settings(max_examples=300, deadline=None)
@given(
    filters=st.lists(_filter_levels(False), min_size=1, max_size=6),
    topics=st.lists(_topics(), min_size=1, max_size=12),
)
def test_part_trie_matches_like_the_filters(filters: list[list[str]], topics: list[str]) -> None:
    texts = ["/".join(levels) for levels in filters if levels != [""]]
    assume(texts)
    part = ScopePart(include=tuple(texts), exclude=())
    for topic in topics:
        assert part.allows_levels(topic.split("/")) == any(topic_matches(f, topic) for f in texts), topic
