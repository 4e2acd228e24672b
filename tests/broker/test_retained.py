"""RetainedIndex: the trie agrees with brute-force matching, and removal prunes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mqim.acl import topic_matches
from mqim.broker._retained import RetainedIndex

_levels = st.sampled_from(["a", "b", "$SYS", "", "c"])
_topics = st.lists(_levels, min_size=1, max_size=4).map("/".join).filter(bool)  # "" is no topic
_filter_levels = st.sampled_from(["a", "b", "$SYS", "", "+", "c"])


@st.composite
def _filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(_filter_levels, min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


@given(topics=st.sets(_topics, max_size=12), topic_filter=_filters())
def test_match_agrees_with_brute_force(topics: set[str], topic_filter: str) -> None:
    index = RetainedIndex()
    for topic in topics:
        index[topic] = (b"x", 1)
    expected = {t for t in topics if topic_matches(topic_filter, t)}
    assert set(index.match(topic_filter)) == expected


@given(topics=st.lists(_topics, max_size=12), removed=st.lists(_topics, max_size=12))
def test_removal_keeps_the_index_consistent(topics: list[str], removed: list[str]) -> None:
    index = RetainedIndex()
    for topic in topics:
        index[topic] = (b"x", 0)
    for topic in removed:
        index.pop(topic, None)
    remaining = set(topics) - set(removed)
    assert set(index) == remaining
    assert set(index.match("#")) == {t for t in remaining if not t.startswith("$")}


def test_dollar_topics_need_an_explicit_first_level() -> None:
    index = RetainedIndex()
    index["$SYS/x"] = (b"1", 0)
    index["a/x"] = (b"2", 0)
    assert index.match("+/x") == ["a/x"]
    assert index.match("$SYS/#") == ["$SYS/x"]
    assert index.match("a/x") == ["a/x"]
    assert index.match("a") == []
    index["a"] = (b"3", 0)
    assert sorted(index.match("a/#")) == ["a", "a/x"]
