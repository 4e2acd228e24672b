"""MQTT 3.1.1 topic and filter functions: validation, matching, subset, intersection."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqim.acl import (
    MAX_TOPIC_BYTES,
    filter_is_subset,
    filters_intersect,
    is_valid_filter,
    is_valid_topic,
    split_shared,
    topic_matches,
)

# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic", ["a", "a/b", "/", "a//b", "/a", "a/", "$SYS/x", "room 1/ü", "x" * MAX_TOPIC_BYTES]
)
def test_valid_topics(topic: str) -> None:
    assert is_valid_topic(topic)


@pytest.mark.parametrize(
    "topic",
    ["", "+", "#", "a/+", "a/#", "a+b", "a#", "a\0b", "x" * (MAX_TOPIC_BYTES + 1), "é" * 40000, "\ud800"],
)
def test_invalid_topics(topic: str) -> None:
    assert not is_valid_topic(topic)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "a",
        "#",
        "+",
        "a/#",
        "a/+/b",
        "+/+",
        "/",
        "+/",
        "/#",
        "$SYS/#",
        "$share/g/a/#",
        "$share/g/#",
        "$share/g/+/x",
        "$share/g//",
    ],
)
def test_valid_filters(topic_filter: str) -> None:
    assert is_valid_filter(topic_filter)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "",
        "a#",
        "a/#/b",
        "#/a",
        "a/b+",
        "+a",
        "a/++",
        "##",
        "a\0",
        "x" * (MAX_TOPIC_BYTES + 1),
        "$share/g",
        "$share/g/",
        "$share//a",
        "$share/+/a",
        "$share/#/a",
        "$share/g+/a",
        "$share/g/a#",
    ],
)
def test_invalid_filters(topic_filter: str) -> None:
    assert not is_valid_filter(topic_filter)


def test_split_shared() -> None:
    assert split_shared("$share/g/a/#") == ("g", "a/#")
    assert split_shared("a/#") == (None, "a/#")


# -- matching ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/", True),
        ("a/+", "a", False),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/#", "ab", False),
        ("#", "a/b", True),
        ("#", "/", True),
        ("+/+", "/", True),
        ("+", "/", False),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("$SYS/+", "$SYS/x", True),
        ("a/$x", "a/$x", True),
        ("+/$x", "a/$x", True),
        ("$share/g/a/+", "a/b", True),
        ("$share/g/#", "$SYS/x", False),
        ("a/#", "a/+", False),
        ("a/#/b", "a/x/b", False),
        ("a", "", False),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


# -- subset and intersection -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sub", "sup", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/+", True),
        ("a/b", "a/#", True),
        ("a", "a/#", True),
        ("a/+", "a/#", True),
        ("a/b/#", "a/#", True),
        ("a/#", "a/#", True),
        ("a/#", "a/+", False),
        ("a/#", "a/b/#", False),
        ("a/+", "a/b", False),
        ("a/+/c", "a/+/+", True),
        ("a/+/+", "a/+/c", False),
        ("#", "#", True),
        ("#", "+/#", True),
        ("+/#", "#", True),
        ("#", "+", False),
        ("#", "+/+/#", False),
        ("a/b/c", "#", True),
        ("$SYS/x", "#", False),
        ("$SYS/x", "+/x", False),
        ("$SYS/#", "#", False),
        ("$SYS/x", "$SYS/#", True),
        ("+/x", "$SYS/#", False),
        ("#", "$SYS/#", False),
        ("a/$x", "a/+", True),
        ("/", "+/+", True),
        ("/", "#", True),
        ("$share/g/a/b", "a/#", True),
        ("a/b", "$share/g/a/#", True),
        ("a/#", "bad#", False),
        ("/#", "/+/#", True),  # `/#` only adds the empty topic "", which is not a valid name
        ("/#", "+/+/#", True),
        ("/+/#", "/#", True),
        ("+", "+/#", True),
    ],
)
def test_filter_is_subset(sub: str, sup: str, expected: bool) -> None:
    assert filter_is_subset(sub, sup) is expected


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "+/b", True),
        ("a/#", "a", True),
        ("a/+", "a", False),
        ("#", "a/b/c", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/#", False),
        ("$SYS/#", "$SYS/+", True),
        ("#", "+", True),
        ("a/+/c", "a/b/+", True),
        ("a/+/c", "a/b/d", False),
        ("a/b/c/#", "a/+", False),
        ("a/b/c/#", "a/+/c", True),
        ("$share/g/a/#", "a/b", True),
        ("a", "bad#", False),
        ("/#", "+", False),  # only "" would match both
        ("/#", "+/+", True),
    ],
)
def test_filters_intersect(left: str, right: str, expected: bool) -> None:
    assert filters_intersect(left, right) is expected
    assert filters_intersect(right, left) is expected


# -- properties over a small alphabet ----------------------------------------------------------

LEVELS = ("$SYS", "a", "b", "")


def _topics(max_levels: int) -> list[str]:
    topics = []
    for count in range(1, max_levels + 1):
        for levels in itertools.product(LEVELS, repeat=count):
            topic = "/".join(levels)
            if is_valid_topic(topic):
                topics.append(topic)
    return topics


# Witnesses never need more than one level beyond the longest (5-level) filter.
TOPICS = _topics(6)


def _filter(levels: list[str], hash_tail: bool) -> str:
    if hash_tail and len(levels) < 5:
        levels = [*levels, "#"]
    return "/".join(levels)


# Filters of 1-5 levels over the same alphabet, with `+` and an optional trailing `#`.
filters = st.builds(
    _filter, st.lists(st.sampled_from((*LEVELS, "+")), min_size=0, max_size=5), st.booleans()
).filter(is_valid_filter)


def _matched(topic_filter: str) -> frozenset[str]:
    return frozenset(t for t in TOPICS if topic_matches(topic_filter, t))


def test_alphabet_sanity() -> None:
    assert len(TOPICS) > 5000
    assert "" not in TOPICS
    assert _matched("#") == frozenset(t for t in TOPICS if not t.startswith("$"))


@settings(max_examples=300, deadline=None)
@given(filters, filters)
def test_subset_is_sound_and_complete(sub: str, sup: str) -> None:
    """(a) subset implies containment of matched topics; (b) otherwise a witness exists."""
    matched_sub, matched_sup = _matched(sub), _matched(sup)
    assert matched_sub, f"every valid filter matches some topic: {sub!r}"
    if filter_is_subset(sub, sup):
        assert matched_sub <= matched_sup, sorted(matched_sub - matched_sup)[:5]
    else:
        assert matched_sub - matched_sup, f"{sub!r} is not a subset of {sup!r} but no witness"


@settings(max_examples=300, deadline=None)
@given(filters, filters)
def test_intersect_agrees_with_brute_force(left: str, right: str) -> None:
    """(c) filters_intersect is true iff some topic is matched by both."""
    expected = bool(_matched(left) & _matched(right))
    assert filters_intersect(left, right) is expected
    assert filters_intersect(right, left) is expected


@settings(max_examples=200, deadline=None)
@given(filters)
def test_subset_is_reflexive_and_shares_ignored(topic_filter: str) -> None:
    assert filter_is_subset(topic_filter, topic_filter)
    assert filters_intersect(topic_filter, topic_filter)
    assert filter_is_subset(f"$share/g/{topic_filter}", topic_filter)
