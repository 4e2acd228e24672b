"""MembershipIndex: answers and change notifications."""

from __future__ import annotations

import pytest

from mqim.acl import MembershipIndex, MembershipLookup, ObservableMembership


@pytest.fixture
def index() -> MembershipIndex:
    return MembershipIndex()


def record(index: MembershipIndex) -> list[frozenset[str]]:
    seen: list[frozenset[str]] = []
    index.add_listener(seen.append)
    return seen


def test_is_a_lookup(index: MembershipIndex) -> None:
    lookup: MembershipLookup = index
    assert isinstance(lookup, ObservableMembership)


def test_members_and_groups(index: MembershipIndex) -> None:
    index.add_member("team", "alice")
    index.add_member("team", "bob")
    index.add_member("ops", "alice")
    assert index.is_member("alice", "team")
    assert not index.is_member("carol", "team")
    assert not index.is_member("alice", "nope")
    assert index.groups_of("alice") == {"team", "ops"}
    assert index.members_of("team") == {"alice", "bob"}
    assert len(index) == 2
    index.remove_member("team", "alice")
    assert not index.is_member("alice", "team")
    assert index.groups_of("alice") == {"ops"}


def test_shares_conversation(index: MembershipIndex) -> None:
    assert not index.shares_conversation("alice", "bob")
    index.add_contact("alice", "bob")
    assert index.shares_conversation("alice", "bob")
    assert index.shares_conversation("bob", "alice")
    assert index.contacts_of("bob") == {"alice"}
    index.remove_contact("bob", "alice")
    assert not index.shares_conversation("alice", "bob")
    index.set_group("team", ["alice", "carol"])
    assert index.shares_conversation("carol", "alice")
    assert not index.shares_conversation("carol", "bob")
    index.add_contact("alice", "alice")
    assert index.contacts_of("alice") == frozenset()


def test_notifications_name_affected_users(index: MembershipIndex) -> None:
    seen = record(index)
    index.set_group("team", ["alice", "bob"])
    assert seen.pop() == {"alice", "bob"}
    index.add_member("team", "carol")
    assert seen.pop() == {"alice", "bob", "carol"}  # presence about carol changes for all
    index.remove_member("team", "alice")
    assert seen.pop() == {"alice", "bob", "carol"}
    index.set_group("team", ["bob", "dave"])
    assert seen.pop() == {"bob", "carol", "dave"}
    index.add_contact("x", "y")
    assert seen.pop() == {"x", "y"}
    index.drop_group("team")
    assert seen.pop() == {"bob", "dave"}
    assert not index.is_member("bob", "team")
    assert seen == []


def test_no_op_changes_notify_nobody(index: MembershipIndex) -> None:
    index.set_group("team", ["alice"])
    index.add_contact("alice", "bob")
    seen = record(index)
    index.add_member("team", "alice")
    index.remove_member("team", "zed")
    index.set_group("team", {"alice"})
    index.drop_group("nope")
    index.add_contact("bob", "alice")
    index.remove_contact("x", "y")
    index.forget_user("nobody")
    assert seen == []


def test_forget_user_and_clear(index: MembershipIndex) -> None:
    index.set_group("team", ["alice", "bob"])
    index.add_contact("alice", "carol")
    seen = record(index)
    index.forget_user("alice")
    assert seen.pop() == {"alice", "bob", "carol"}
    assert index.groups_of("alice") == frozenset()
    assert index.contacts_of("carol") == frozenset()
    assert index.members_of("team") == {"bob"}
    index.clear()
    assert seen.pop() == {"bob"}
    assert len(index) == 0


def test_failing_listener_does_not_starve_others(index: MembershipIndex) -> None:
    def broken(users: frozenset[str]) -> None:
        raise RuntimeError("boom")

    index.add_listener(broken)
    seen = record(index)
    with pytest.raises(ExceptionGroup):
        index.add_member("team", "alice")
    assert seen == [{"alice"}]
    assert index.is_member("alice", "team")
    index.remove_listener(broken)
    index.remove_listener(broken)  # unknown: ignored
    index.add_member("team", "bob")
    assert len(seen) == 2
