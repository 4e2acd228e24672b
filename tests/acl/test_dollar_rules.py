"""`$` topics in ACL rules: a rule pattern's leading wildcard covers `$` topics but `$SYS`.

MQTT-4.7.2-1 says a *subscription filter* starting with a wildcard matches no `$` topic; it says
nothing about authorization. A rule `allow ... #` therefore permits publishing and subscribing
`$TopicA/B` by name (what the Paho interoperability suite needs), while `#` subscriptions still
never receive it and `$SYS/...` stays reachable only by rules that name it.
"""

from __future__ import annotations

import pytest

from mqim.acl import (
    AclEngine,
    Action,
    Identity,
    MembershipIndex,
    ReceiveScope,
    compile_receive_scope,
    parse_rules,
)
from mqim.acl._matcher import rule_levels

PAHO = Identity(user="paho", client_id="myclientid")
PAHO_RULES = parse_rules(
    """
    allow user:paho publish,subscribe,receive #
    deny user:paho subscribe test/nosubscribe
    """
)


def _engine(rules_text: str = "") -> AclEngine:
    rules = parse_rules(rules_text) if rules_text else PAHO_RULES
    return AclEngine(rules=rules, membership=MembershipIndex())


@pytest.mark.parametrize(
    ("pattern", "first", "expected"),
    [
        (("#",), "$TopicA", ("$TopicA", "#")),
        (("+", "B"), "$TopicA", ("$TopicA", "B")),
        (("+", "+", "#"), "$x", ("$x", "+", "#")),
        (("#",), "$SYS", ("#",)),  # `$SYS` only by name
        (("+", "x"), "$SYS", ("+", "x")),
        (("#",), "TopicA", ("#",)),  # no `$`: unchanged
        (("#",), "+", ("#",)),  # a wildcard-led request matches no `$` topic anyway
        (("a", "#"), "$TopicA", ("a", "#")),  # a literal first level is compared as is
    ],
)
def test_rule_levels(pattern: tuple[str, ...], first: str, expected: tuple[str, ...]) -> None:
    assert tuple(rule_levels(pattern, first)) == expected


def test_hash_rule_permits_publishing_dollar_topics_but_not_sys() -> None:
    engine = _engine()
    assert engine.allowed(PAHO, Action.PUBLISH, "$TopicA/B")
    assert engine.allowed(PAHO, Action.PUBLISH, "$TopicA")
    assert engine.allowed(PAHO, Action.RECEIVE, "$TopicA/B")
    assert engine.allowed(PAHO, Action.SUBSCRIBE, "$TopicA/#")
    assert not engine.allowed(PAHO, Action.PUBLISH, "$SYS/broker/uptime")
    assert not engine.allowed(PAHO, Action.SUBSCRIBE, "$SYS/#")
    assert not engine.allowed(PAHO, Action.RECEIVE, "$SYS/x")


def test_plus_rule_covers_dollar_first_level() -> None:
    engine = _engine("allow all publish,receive +/B")
    assert engine.allowed(PAHO, Action.PUBLISH, "$TopicA/B")
    assert not engine.allowed(PAHO, Action.PUBLISH, "$TopicA/C")
    assert not engine.allowed(PAHO, Action.PUBLISH, "$SYS/B")


def test_deny_rule_with_leading_wildcard_denies_dollar_topics_too() -> None:
    engine = _engine("allow all publish,subscribe,receive #\ndeny all publish,subscribe +/secret")
    assert not engine.allowed(PAHO, Action.PUBLISH, "$x/secret")
    assert not engine.allowed(PAHO, Action.SUBSCRIBE, "$x/#")  # it overlaps `$x/secret`
    assert engine.allowed(PAHO, Action.PUBLISH, "$x/open")


def test_sys_needs_a_rule_that_names_it() -> None:
    engine = _engine("allow all publish,subscribe,receive $SYS/#")
    assert engine.allowed(PAHO, Action.PUBLISH, "$SYS/x")
    assert engine.allowed(PAHO, Action.SUBSCRIBE, "$SYS/#")


def test_im_namespace_lock_is_unchanged() -> None:
    engine = _engine("allow all publish,subscribe,receive #")
    assert not engine.allowed(PAHO, Action.PUBLISH, "im/v1/u/bob/msg")
    assert not engine.allowed(PAHO, Action.SUBSCRIBE, "im/v1/u/bob/#")


def test_scopes_follow_the_rule_reading_and_the_filter_rule() -> None:
    membership = MembershipIndex()

    def scope(topic_filter: str) -> ReceiveScope:
        return compile_receive_scope(
            identity=PAHO, topic_filter=topic_filter, rules=PAHO_RULES, membership=membership
        )

    everything = scope("#")
    assert everything.wide
    assert not everything.allows("$TopicA/B")  # MQTT-4.7.2-1: a `#` subscription never gets it
    dollar = scope("$TopicA/#")
    assert dollar.exact
    assert dollar.allows("$TopicA/B")
    assert scope("$TopicA/+").exact
    assert scope("$SYS/#").empty
    assert scope("test/nosubscribe").empty
    assert not everything.allows("test/nosubscribe")
    assert everything.allows("TopicA/B")
