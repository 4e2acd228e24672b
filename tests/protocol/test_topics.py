"""v1 topic builders and parsers (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqim.protocol import (
    Channel,
    GroupKind,
    InboxKind,
    InvalidId,
    InvalidTopic,
    UpKind,
    group_filter,
    group_topic,
    inbox_filter,
    inbox_topic,
    parse_topic,
    parse_up_topic,
    presence_topic,
    up_topic,
)

ids = st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z")


@given(ids, st.sampled_from(list(UpKind)))
def test_up_topics_round_trip(user: str, kind: UpKind) -> None:
    topic = up_topic(user, kind)
    assert topic == f"im/v1/up/{user}/{kind.value}"
    assert parse_up_topic(topic) == (user, kind.value)
    assert parse_topic(topic) == (Channel.UP, user, kind.value)


@given(ids, st.sampled_from(list(InboxKind)))
def test_inbox_topics_round_trip(user: str, kind: InboxKind) -> None:
    assert parse_topic(inbox_topic(user, kind)) == (Channel.INBOX, user, kind.value)


@given(ids, st.sampled_from(list(GroupKind)))
def test_group_topics_round_trip(group: str, kind: GroupKind) -> None:
    assert parse_topic(group_topic(group, kind)) == (Channel.GROUP, group, kind.value)


def test_presence_and_filters() -> None:
    assert parse_topic(presence_topic("bob")) == (Channel.PRESENCE, "bob", "")
    assert inbox_filter("bob") == "im/v1/u/bob/#"
    assert group_filter("team") == "im/v1/g/team/#"


def test_parse_up_topic_returns_unknown_kinds_for_the_service_to_answer() -> None:
    assert parse_up_topic("im/v1/up/alice/whatever") == ("alice", "whatever")


@pytest.mark.parametrize(
    "topic",
    [
        "im/v1/up/alice",
        "im/v1/up/alice/msg/extra",
        "im/v2/up/alice/msg",
        "xx/v1/up/alice/msg",
        "im/v1/u/alice/msg",
        "im/v1/up/al ice/msg",
        "im/v1/up//msg",
    ],
)
def test_parse_up_topic_refuses_other_topics(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        parse_up_topic(topic)


@pytest.mark.parametrize(
    "topic",
    [
        "im/v1/x/alice/msg",
        "im/v1/u/alice/nope",
        "im/v1/g/team/ack",
        "im/v1/presence/bob/x",
        "im/v1",
        "a/b/c/d/e",
    ],
)
def test_parse_topic_refuses_what_is_not_in_the_table(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        parse_topic(topic)


def test_builders_refuse_bad_ids_and_kinds() -> None:
    with pytest.raises(InvalidId):
        inbox_topic("a/b", InboxKind.MSG)
    with pytest.raises(ValueError, match="nope"):
        up_topic("alice", "nope")
