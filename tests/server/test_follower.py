"""The membership follower: event deltas, first contacts, loading and re-reading memberships."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mqim.acl import MembershipIndex
from mqim.server import STAMP_NAME, MembershipFollower, load_membership, touch_membership_stamp
from mqim.server._follower import first_contact, group_event_delta
from mqim.storage import NewMessage, Role, SqliteStorage


def test_group_event_deltas() -> None:
    create = b'{"v":1,"type":"group.create","group":"g","by":"alice","members":["bob"],"count":1}'
    assert group_event_delta(create) == ({"alice", "bob"}, set())
    assert group_event_delta(b'{"type":"group.remove","members":["bob","bad id"]}') == (set(), {"bob"})
    assert group_event_delta(b'{"type":"group.add","count":500}') == (set(), set())  # list too long
    assert group_event_delta(b'{"type":"group.rename","name":"x"}') == (set(), set())
    assert group_event_delta(b"not json") == (set(), set())


def test_first_contact_from_acks() -> None:
    assert first_contact(b'{"v":1,"id":"c","conv":"d:alice:bob","seq":1,"server_id":"s","ts":1}') == (
        "alice",
        "bob",
    )
    assert first_contact(b'{"v":1,"id":"c","conv":"d:alice:bob","seq":12,"server_id":"s","ts":1}') is None
    assert first_contact(b'{"v":1,"id":"c","conv":"g:team","seq":1,"server_id":"s","ts":1}') is None
    assert first_contact(b'{"v":1,"id":"c","conv":"d:alice:alice","seq":1,"server_id":"s","ts":1}') is None


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    async with SqliteStorage(path=tmp_path / "im.db") as store:
        for user in ("alice", "bob", "carol", "dave"):
            await store.add_user(user, password="pw-123456")
        yield store


async def test_load_membership_reads_groups_and_contacts(storage: SqliteStorage) -> None:
    await storage.create_group("team", name="Team", owner="alice", members=["bob"])
    await storage.append_messages(
        [NewMessage(conv="d:carol:dave", sender="carol", client_id="c-1", ts=1, body={"text": "hi"})]
    )
    index = MembershipIndex()
    await load_membership(storage, index)
    assert index.members_of("team") == {"alice", "bob"}
    assert index.shares_conversation("carol", "dave")
    assert not index.shares_conversation("alice", "carol")


async def test_follower_rereads_after_the_stamp_moves(storage: SqliteStorage, tmp_path: Path) -> None:
    index = MembershipIndex()
    await storage.create_group("team", name="Team", owner="alice", members=["bob"])
    await load_membership(storage, index)
    follower = MembershipFollower(
        storage=storage, index=index, stamp=tmp_path / STAMP_NAME, port=None, poll_s=0.05
    )
    async with follower, asyncio.TaskGroup() as tasks:
        task = tasks.create_task(follower.run(), name="follower")
        await storage.set_members("team", {"bob": None, "carol": Role.MEMBER})
        await storage.create_group("other", name="Other", owner="dave", members=[])
        touch_membership_stamp(tmp_path)
        for _ in range(200):
            if follower.reloads:
                break
            await asyncio.sleep(0.05)
        task.cancel()
    assert follower.reloads == 1
    assert index.members_of("team") == {"alice", "carol"}
    assert index.members_of("other") == {"dave"}
