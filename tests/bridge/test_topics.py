"""Mosquitto topic rules and the local/remote mapping (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqim.bridge import (
    Direction,
    TopicRule,
    TopicRuleError,
    format_topic_rule,
    local_filters,
    map_in,
    map_out,
    may_echo,
    parse_topic_rule,
    subscriptions,
)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("a/#", TopicRule(pattern="a/#")),
        ("a/# in", TopicRule(pattern="a/#", direction=Direction.IN)),
        ("a/# BOTH 1", TopicRule(pattern="a/#", direction=Direction.BOTH, qos=1)),
        (
            "sensors/# both 1 site/ edge/",
            TopicRule(
                pattern="sensors/#",
                direction=Direction.BOTH,
                qos=1,
                local_prefix="site/",
                remote_prefix="edge/",
            ),
        ),
        (
            '"" out 2 local/exact remote/exact',
            TopicRule(pattern="", qos=2, local_prefix="local/exact", remote_prefix="remote/exact"),
        ),
        ('x/+ in 0 "" far/', TopicRule(pattern="x/+", direction=Direction.IN, remote_prefix="far/")),
    ],
)
def test_parse(text: str, rule: TopicRule) -> None:
    assert parse_topic_rule(text) == rule
    assert parse_topic_rule(format_topic_rule(rule)) == rule


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a/# sideways",
        "a/# in 3",
        "a/# in 1 onlyone",
        "a/# in 1 a b c",
        "a/#/b in 1",
        '"" in 1',
        '"" in 1 "" far/',
        "a in 1 pre+/ far/",
        "a in 1 l/ r/#/",
        "$share/g/a in 1",
        '"unterminated',
        "a/# in 1 " + "x" * 2000 + " y",
    ],
)
def test_invalid_rules_are_refused(text: str) -> None:
    with pytest.raises(TopicRuleError):
        parse_topic_rule(text)


def test_mapping_swaps_prefixes_by_direction() -> None:
    rules = (
        parse_topic_rule("sensors/# both 1 site/ edge/"),
        parse_topic_rule("cmd/+ in 1 local/ remote/"),
        parse_topic_rule("status out 0"),
    )
    assert map_out(rules, "site/sensors/a/b") == ("edge/sensors/a/b", 1)
    assert map_out(rules, "status") == ("status", 0)
    assert map_out(rules, "local/cmd/x") is None  # an in-only rule
    assert map_out(rules, "sensors/a") is None
    assert map_in(rules, "edge/sensors/a") == ("site/sensors/a", 1)
    assert map_in(rules, "remote/cmd/x") == ("local/cmd/x", 1)
    assert map_in(rules, "status") is None  # an out-only rule
    assert subscriptions(rules) == {"edge/sensors/#": 1, "remote/cmd/+": 1}
    assert local_filters(rules) == ["site/sensors/#", "status"]
    assert may_echo(rules, "edge/sensors/a")
    assert not may_echo(rules, "status")


def test_exact_topic_rule() -> None:
    rules = (parse_topic_rule('"" both 1 here/it there/it'),)
    assert map_out(rules, "here/it") == ("there/it", 1)
    assert map_in(rules, "there/it") == ("here/it", 1)
    assert map_out(rules, "here/it/more") is None


_level = st.text(alphabet="abc", min_size=1, max_size=3)
_topic = st.lists(_level, min_size=1, max_size=4).map("/".join)


@given(
    topic=_topic, local=st.sampled_from(["", "l/", "lo/cal/"]), remote=st.sampled_from(["", "r/", "re/mote/"])
)
def test_out_then_in_is_the_identity(topic: str, local: str, remote: str) -> None:
    rules = (
        TopicRule(pattern="#", direction=Direction.BOTH, qos=1, local_prefix=local, remote_prefix=remote),
    )
    out = map_out(rules, local + topic)
    assert out is not None
    assert out[0] == remote + topic
    assert map_in(rules, out[0]) == (local + topic, 1)
