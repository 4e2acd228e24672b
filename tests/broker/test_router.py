"""SubscriptionIndex: MQTT 4.7 matching through an exact map and a wildcard trie."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mqim.acl import topic_matches
from mqim.broker import SubscriptionIndex


def index_of(*subs: tuple[str, str, int]) -> SubscriptionIndex[str]:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    for key, topic_filter, qos in subs:
        index.add(key, topic_filter, qos)
    return index


def test_exact_plus_and_hash() -> None:
    index = index_of(("exact", "a/b/c", 1), ("plus", "a/+/c", 0), ("hash", "a/#", 2), ("other", "x/y", 1))
    assert index.match("a/b/c") == {"exact": 1, "plus": 0, "hash": 2}
    assert index.match("a/z/c") == {"plus": 0, "hash": 2}
    assert index.match("a/b") == {"hash": 2}
    assert index.match("x/y") == {"other": 1}
    assert index.match("x/y/z") == {}
    assert index.match("b") == {}


def test_hash_matches_its_parent_level() -> None:
    # MQTT-4.7.1-2: "sport/tennis/#" also matches "sport/tennis".
    index = index_of(("k", "a/#", 1), ("root", "#", 0), ("plus-hash", "+/#", 1))
    assert index.match("a") == {"k": 1, "root": 0, "plus-hash": 1}
    assert index.match("a/b/c/d") == {"k": 1, "root": 0, "plus-hash": 1}
    assert index.match("b") == {"root": 0, "plus-hash": 1}


def test_plus_matches_exactly_one_level_including_empty_ones() -> None:
    index = index_of(("k", "a/+", 1), ("lead", "+/b", 1), ("slash", "/+", 0))
    assert index.match("a") == {}
    assert index.match("a/") == {"k": 1}
    assert index.match("a/x/y") == {}
    assert index.match("/b") == {"lead": 1, "slash": 0}
    assert index.match("/x") == {"slash": 0}


def test_dollar_topics_are_not_matched_by_leading_wildcards() -> None:
    # MQTT-4.7.2-1
    index = index_of(("all", "#", 1), ("plus", "+/info", 1), ("sys", "$SYS/#", 1), ("sysplus", "$SYS/+", 0))
    assert index.match("$SYS/info") == {"sys": 1, "sysplus": 0}
    assert index.match("$SYS") == {"sys": 1}
    assert index.match("x/info") == {"all": 1, "plus": 1}
    # A "$" that is not the first character of the first level is an ordinary level.
    assert index.match("a/$b") == {"all": 1}


def test_overlapping_filters_give_one_entry_at_max_qos() -> None:
    # MQTT-3.3.5-1: one delivery per session, at the highest QoS of its matching subscriptions.
    index = index_of(("s", "t/x/#", 0), ("s", "t/x/y", 1), ("s", "t/+/y", 2), ("o", "t/x/y", 0))
    assert index.match("t/x/y") == {"s": 2, "o": 0}
    index.remove("s", "t/+/y")
    assert index.match("t/x/y") == {"s": 1, "o": 0}
    index.remove("s", "t/x/y")
    assert index.match("t/x/y") == {"s": 0, "o": 0}


def test_add_replaces_qos_and_reports_new_subscriptions() -> None:
    # MQTT-3.8.4-3: a second SUBSCRIBE to the same filter replaces the first.
    index: SubscriptionIndex[str] = SubscriptionIndex()
    assert index.add("k", "a/+", 0) is True
    assert index.add("k", "a/+", 2) is False
    assert index.add("k", "a/b", 1) is True
    assert len(index) == 2
    assert index.match("a/b") == {"k": 2}
    assert sorted(index.filters()) == [("a/+", "k", 2), ("a/b", "k", 1)]


def test_remove_prunes_the_trie_and_reports_missing_filters() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    filters = ["a/b/c", "a/+/c", "a/#", "+/+/+/#", "#", "a/b/+/d", "/+", "$SYS/#"]
    for n, topic_filter in enumerate(filters):
        index.add(f"k{n % 3}", topic_filter, n % 3)
    assert not index.remove("nobody", "a/+/c")
    assert not index.remove("k0", "a/+/zz/#")
    assert not index.remove("k0", "never/seen")
    for n, topic_filter in enumerate(filters):
        assert index.remove(f"k{n % 3}", topic_filter)
        assert not index.remove(f"k{n % 3}", topic_filter)
    assert len(index) == 0
    assert list(index.filters()) == []
    assert index._root.empty()  # no skeleton of empty nodes is left behind
    assert index._exact == {}
    assert index.match("a/b/c") == {}


def test_remove_keeps_branches_still_in_use() -> None:
    index = index_of(("a", "x/+/y", 1), ("b", "x/+/y/#", 1), ("c", "x/+", 0))
    index.remove("b", "x/+/y/#")
    assert index.match("x/1/y") == {"a": 1}
    assert index.match("x/1") == {"c": 0}
    index.remove("a", "x/+/y")
    assert index.match("x/1/y") == {}
    assert index.match("x/1") == {"c": 0}


def test_exact_topic_lookup_never_walks_the_trie_when_no_wildcards_exist() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    for n in range(5_000):
        index.add(f"user-{n}", f"im/v1/u/user-{n}/msg", 1)
    assert index.match("im/v1/u/user-4321/msg") == {"user-4321": 1}
    assert index.last_visited == 0


def test_match_cost_does_not_grow_with_other_users_wildcards() -> None:
    """Defect 1 (structural): a publish visits the trie nodes on its own path, whatever N is."""

    def visited(users: int) -> int:
        index: SubscriptionIndex[str] = SubscriptionIndex()
        for n in range(users):
            index.add(f"s{n}", f"im/v1/u/user-{n}/#", 1)
            index.add(f"s{n}", f"im/v1/u/user-{n}/+/x", 1)
        assert index.match("im/v1/u/user-7/msg") == {"s7": 1}
        return index.last_visited

    small, large = visited(10), visited(5_000)
    assert small == large
    # root, im, v1, u, user-7, and the "+" branch under user-7: the levels of the topic.
    assert large <= 2 * len(["im", "v1", "u", "user-7", "msg"])


# -- property: the index agrees with the reference matcher over every filter ---------------------

LEVELS = ["a", "b", "", "$x"]
filter_level = st.sampled_from([*LEVELS, "+"])
topic_level = st.sampled_from(LEVELS)


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(filter_level, min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


topics = st.lists(topic_level, min_size=1, max_size=5).map("/".join).filter(bool)


@settings(max_examples=300)
@given(
    subs=st.lists(
        st.tuples(st.sampled_from(["k1", "k2", "k3"]), topic_filters(), st.integers(0, 2)), max_size=12
    ),
    removals=st.lists(st.integers(0, 11), max_size=4),
    probe=st.lists(topics, min_size=1, max_size=6),
)
def test_match_agrees_with_brute_force(
    subs: list[tuple[str, str, int]], removals: list[int], probe: list[str]
) -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    live: dict[tuple[str, str], int] = {}
    for key, topic_filter, qos in subs:
        index.add(key, topic_filter, qos)
        live[(key, topic_filter)] = qos
    for n in removals:
        if n < len(subs):
            key, topic_filter, _ = subs[n]
            assert index.remove(key, topic_filter) == ((key, topic_filter) in live)
            live.pop((key, topic_filter), None)
    assert len(index) == len(live)
    for topic in probe:
        expected: dict[str, int] = {}
        for (key, topic_filter), qos in live.items():
            if topic_matches(topic_filter, topic):
                expected[key] = max(qos, expected.get(key, 0))
        assert index.match(topic) == expected, topic
