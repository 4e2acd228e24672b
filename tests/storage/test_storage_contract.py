"""The `Storage` contract, run against every backend.

Backend-neutral: only the public `Storage` interface is used. To add a backend, add its name to
the `storage` fixture's params and a branch that builds it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mqim.storage import (
    AccountKind,
    AlreadyExists,
    MongoStorage,
    NewMessage,
    NotFound,
    Role,
    SqliteStorage,
    Storage,
)


@pytest.fixture(params=["sqlite", "mongo"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    backend: Storage
    if request.param == "sqlite":
        backend = SqliteStorage(path=tmp_path / "mqim.db")
    elif request.param == "mongo":
        # One SecantusDB per session (tests/support/servers.py); a fresh database per test.
        url = request.getfixturevalue("mongo_proc").url
        backend = MongoStorage(url=url, database=f"test_{uuid.uuid4().hex[:12]}")
    else:  # pragma: no cover - a new param without a branch
        raise AssertionError(f"unknown backend {request.param}")
    async with backend:
        yield backend


def msg(conv: str, sender: str, client_id: str, text: str = "hi", ts: int = 1000) -> NewMessage:
    return NewMessage(conv=conv, sender=sender, client_id=client_id, ts=ts, body={"text": text})


# -- users -------------------------------------------------------------------------------------
async def test_add_and_get_user(storage: Storage) -> None:
    created = await storage.add_user("alice", password="s3cret")
    assert created.user_id == "alice"
    assert created.kind is AccountKind.USER
    assert not created.disabled
    assert await storage.get_user("alice") == created
    assert await storage.get_user("nobody") is None


async def test_add_duplicate_user_fails(storage: Storage) -> None:
    await storage.add_user("alice", password="a")
    with pytest.raises(AlreadyExists):
        await storage.add_user("alice", password="b")
    assert await storage.verify_password("alice", "a") is not None


async def test_list_users_sorted_with_kinds(storage: Storage) -> None:
    await storage.add_user("carol", password="x")
    await storage.add_user("alice", password="x", kind=AccountKind.SERVICE)
    await storage.add_user("bob", password="x", kind=AccountKind.BRIDGE)
    users = await storage.list_users()
    assert [u.user_id for u in users] == ["alice", "bob", "carol"]
    assert [u.kind for u in users] == [AccountKind.SERVICE, AccountKind.BRIDGE, AccountKind.USER]


async def test_verify_password(storage: Storage) -> None:
    await storage.add_user("alice", password="right")
    ok = await storage.verify_password("alice", "right")
    assert ok is not None
    assert ok.user_id == "alice"
    assert await storage.verify_password("alice", "wrong") is None
    assert await storage.verify_password("alice", "") is None
    assert await storage.verify_password("nobody", "right") is None


async def test_set_password(storage: Storage) -> None:
    await storage.add_user("alice", password="old")
    await storage.set_password("alice", "new")
    assert await storage.verify_password("alice", "old") is None
    assert await storage.verify_password("alice", "new") is not None
    with pytest.raises(NotFound):
        await storage.set_password("nobody", "x")


async def test_disable_and_enable(storage: Storage) -> None:
    await storage.add_user("alice", password="pw")
    await storage.set_disabled("alice", True)
    user = await storage.get_user("alice")
    assert user is not None
    assert user.disabled
    assert await storage.verify_password("alice", "pw") is None
    await storage.set_disabled("alice", False)
    assert await storage.verify_password("alice", "pw") is not None
    with pytest.raises(NotFound):
        await storage.set_disabled("nobody", True)


async def test_remove_user_keeps_messages(storage: Storage) -> None:
    await storage.add_user("alice", password="pw")
    await storage.append_messages([msg("d:alice:bob", "alice", "c1")])
    await storage.remove_user("alice")
    assert await storage.get_user("alice") is None
    assert await storage.verify_password("alice", "pw") is None
    assert [m.sender for m in await storage.get_messages("d:alice:bob")] == ["alice"]
    with pytest.raises(NotFound):
        await storage.remove_user("alice")


# -- append ------------------------------------------------------------------------------------
async def test_append_assigns_seqs_in_order(storage: Storage) -> None:
    conv = "d:alice:bob"
    results = await storage.append_messages([msg(conv, "alice", f"c{i}", text=f"t{i}") for i in range(3)])
    assert [r.record.seq for r in results] == [1, 2, 3]
    assert all(r.created for r in results)
    assert [r.record.body["text"] for r in results] == ["t0", "t1", "t2"]
    assert len({r.record.server_id for r in results}) == 3
    assert await storage.last_seq(conv) == 3
    assert await storage.last_seq("d:x:y") == 0
    stored = await storage.get_messages(conv)
    assert stored == [r.record for r in results]


async def test_append_dedups_by_sender_and_client_id(storage: Storage) -> None:
    conv = "d:alice:bob"
    [first] = await storage.append_messages([msg(conv, "alice", "c1", text="original")])
    [again] = await storage.append_messages([msg(conv, "alice", "c1", text="retry")])
    assert first.created
    assert not again.created
    assert again.record == first.record
    assert again.record.body == {"text": "original"}
    # Another sender may reuse the same client id.
    [other] = await storage.append_messages([msg(conv, "bob", "c1")])
    assert other.created
    assert other.record.seq == 2
    assert await storage.last_seq(conv) == 2


async def test_append_duplicate_inside_one_batch(storage: Storage) -> None:
    conv = "d:alice:bob"
    results = await storage.append_messages(
        [msg(conv, "alice", "c1", text="a"), msg(conv, "alice", "c2"), msg(conv, "alice", "c1", text="b")]
    )
    assert [r.created for r in results] == [True, True, False]
    assert results[2].record == results[0].record
    assert [m.seq for m in await storage.get_messages(conv)] == [1, 2]


async def test_append_batch_spanning_conversations(storage: Storage) -> None:
    results = await storage.append_messages(
        [
            msg("d:alice:bob", "alice", "c1"),
            msg("g:team", "alice", "c2"),
            msg("d:alice:bob", "bob", "c3"),
            msg("g:team", "bob", "c4"),
            msg("g:team", "carol", "c5"),
        ]
    )
    assert [(r.record.conv, r.record.seq) for r in results] == [
        ("d:alice:bob", 1),
        ("g:team", 1),
        ("d:alice:bob", 2),
        ("g:team", 2),
        ("g:team", 3),
    ]
    assert await storage.last_seq("d:alice:bob") == 2
    assert await storage.last_seq("g:team") == 3


async def test_append_empty_batch(storage: Storage) -> None:
    assert await storage.append_messages([]) == []


async def test_message_fields_round_trip(storage: Storage) -> None:
    body = {"text": "héllo ✓", "data": {"temp": 21.5, "tags": ["a", "b"], "ok": True, "none": None}}
    new = NewMessage(
        conv="d:alice:bob", sender="alice", client_id="c-9", ts=1764200000123, kind="msg", body=body
    )
    [result] = await storage.append_messages([new])
    [stored] = await storage.get_messages("d:alice:bob")
    assert stored == result.record
    assert (stored.conv, stored.sender, stored.client_id, stored.ts, stored.kind) == (
        "d:alice:bob",
        "alice",
        "c-9",
        1764200000123,
        "msg",
    )
    assert stored.body == body
    assert stored.server_id


async def test_concurrent_appends_are_gapless(storage: Storage) -> None:
    conv = "g:crowd"
    batches = await asyncio.gather(
        *(storage.append_messages([msg(conv, f"u{i}", "c1"), msg(conv, f"u{i}", "c2")]) for i in range(20))
    )
    seqs = sorted(r.record.seq for batch in batches for r in batch)
    assert seqs == list(range(1, 41))
    for batch in batches:
        assert batch[0].record.seq < batch[1].record.seq


# -- history paging ----------------------------------------------------------------------------
@pytest.fixture
async def ten(storage: Storage) -> Storage:
    await storage.append_messages([msg("g:team", "alice", f"c{i}") for i in range(1, 11)])
    return storage


async def test_get_messages_after(ten: Storage) -> None:
    assert [m.seq for m in await ten.get_messages("g:team", after_seq=7)] == [8, 9, 10]
    assert [m.seq for m in await ten.get_messages("g:team", after_seq=0, limit=3)] == [1, 2, 3]
    assert await ten.get_messages("g:team", after_seq=10) == []
    assert await ten.get_messages("g:other") == []


async def test_get_messages_before(ten: Storage) -> None:
    assert [m.seq for m in await ten.get_messages("g:team", before_seq=4)] == [1, 2, 3]
    assert [m.seq for m in await ten.get_messages("g:team", after_seq=2, before_seq=6)] == [3, 4, 5]
    assert await ten.get_messages("g:team", before_seq=1) == []


async def test_get_messages_newest_pages_backwards(ten: Storage) -> None:
    assert [m.seq for m in await ten.get_messages("g:team", newest=True, limit=3)] == [8, 9, 10]
    page = await ten.get_messages("g:team", before_seq=8, newest=True, limit=3)
    assert [m.seq for m in page] == [5, 6, 7]
    page = await ten.get_messages("g:team", before_seq=3, newest=True, limit=3)
    assert [m.seq for m in page] == [1, 2]
    page = await ten.get_messages("g:team", after_seq=6, before_seq=10, newest=True, limit=2)
    assert [m.seq for m in page] == [8, 9]


async def test_get_messages_limit(ten: Storage) -> None:
    assert len(await ten.get_messages("g:team", limit=4)) == 4
    assert len(await ten.get_messages("g:team", limit=100)) == 10
    assert await ten.get_messages("g:team", limit=0) == []


# -- groups ------------------------------------------------------------------------------------
async def test_create_and_get_group(storage: Storage) -> None:
    group = await storage.create_group("team", name="The Team", owner="alice", members=["bob", "carol"])
    assert group.group_id == "team"
    assert group.name == "The Team"
    assert group.members == {"alice": Role.OWNER, "bob": Role.MEMBER, "carol": Role.MEMBER}
    assert await storage.get_group("team") == group
    assert await storage.get_group("nope") is None
    with pytest.raises(AlreadyExists):
        await storage.create_group("team", name="again", owner="bob", members=[])


async def test_owner_listed_among_members_stays_owner(storage: Storage) -> None:
    group = await storage.create_group("team", name="T", owner="alice", members=["alice", "bob"])
    assert group.members == {"alice": Role.OWNER, "bob": Role.MEMBER}


async def test_set_members(storage: Storage) -> None:
    await storage.create_group("team", name="T", owner="alice", members=["bob", "carol"])
    group = await storage.set_members("team", {"dave": Role.MEMBER, "bob": Role.ADMIN, "carol": None})
    assert group.members == {"alice": Role.OWNER, "bob": Role.ADMIN, "dave": Role.MEMBER}
    assert await storage.get_group("team") == group
    # Removing someone who is not a member is harmless.
    group = await storage.set_members("team", {"zed": None})
    assert set(group.members) == {"alice", "bob", "dave"}
    with pytest.raises(NotFound):
        await storage.set_members("nope", {"bob": Role.MEMBER})


async def test_rename_group(storage: Storage) -> None:
    await storage.create_group("team", name="Old", owner="alice", members=[])
    renamed = await storage.rename_group("team", "New")
    assert renamed.name == "New"
    assert renamed.members == {"alice": Role.OWNER}
    group = await storage.get_group("team")
    assert group is not None
    assert group.name == "New"
    with pytest.raises(NotFound):
        await storage.rename_group("nope", "x")


async def test_delete_group_keeps_messages(storage: Storage) -> None:
    await storage.create_group("team", name="T", owner="alice", members=["bob"])
    await storage.append_messages([msg("g:team", "alice", "c1")])
    await storage.delete_group("team")
    assert await storage.get_group("team") is None
    assert await storage.groups_of("alice") == []
    assert [m.seq for m in await storage.get_messages("g:team")] == [1]
    with pytest.raises(NotFound):
        await storage.delete_group("team")


async def test_groups_of(storage: Storage) -> None:
    await storage.create_group("zeta", name="Z", owner="alice", members=["bob"])
    await storage.create_group("alpha", name="A", owner="bob", members=["alice"])
    await storage.create_group("mid", name="M", owner="carol", members=[])
    assert await storage.groups_of("alice") == ["alpha", "zeta"]
    assert await storage.groups_of("bob") == ["alpha", "zeta"]
    assert await storage.groups_of("carol") == ["mid"]
    assert await storage.groups_of("nobody") == []
    await storage.set_members("zeta", {"bob": None})
    assert await storage.groups_of("bob") == ["alpha"]


# -- cursors and conversation states -----------------------------------------------------------
async def test_cursors_move_forward_only(storage: Storage) -> None:
    conv = "d:alice:bob"
    await storage.append_messages([msg(conv, "alice", f"c{i}") for i in range(5)])
    state = await storage.advance_cursor("bob", conv, delivered_seq=4)
    assert (state.last_seq, state.read_seq, state.delivered_seq, state.unread) == (5, 0, 4, 5)
    state = await storage.advance_cursor("bob", conv, read_seq=3)
    assert (state.read_seq, state.delivered_seq, state.unread) == (3, 4, 2)
    state = await storage.advance_cursor("bob", conv, read_seq=1, delivered_seq=2)
    assert (state.read_seq, state.delivered_seq) == (3, 4)
    state = await storage.advance_cursor("bob", conv)
    assert (state.read_seq, state.delivered_seq) == (3, 4)


async def test_read_cursor_clamped_to_last_seq(storage: Storage) -> None:
    conv = "d:alice:bob"
    await storage.append_messages([msg(conv, "alice", "c1"), msg(conv, "alice", "c2")])
    state = await storage.advance_cursor("bob", conv, read_seq=99)
    assert (state.last_seq, state.read_seq, state.unread) == (2, 2, 0)
    await storage.append_messages([msg(conv, "alice", "c3")])
    [state] = await storage.conv_states("bob", [conv])
    assert (state.last_seq, state.read_seq, state.unread) == (3, 2, 1)


async def test_cursors_are_per_user(storage: Storage) -> None:
    conv = "d:alice:bob"
    await storage.append_messages([msg(conv, "alice", "c1"), msg(conv, "bob", "c2")])
    await storage.advance_cursor("bob", conv, read_seq=2)
    states = {s.conv: s for s in await storage.conv_states("alice", [conv])}
    assert states[conv].read_seq == 0
    assert states[conv].unread == 2


async def test_conv_states_lists_direct_and_group_conversations(storage: Storage) -> None:
    await storage.create_group("team", name="T", owner="carol", members=["alice"])
    await storage.append_messages(
        [msg("d:alice:bob", "alice", "c1"), msg("d:alice:bob", "bob", "c2"), msg("g:team", "carol", "c3")]
    )
    await storage.advance_cursor("alice", "d:alice:bob", read_seq=1, delivered_seq=2)
    alice = await storage.conv_states("alice")
    assert [(s.conv, s.last_seq, s.read_seq, s.delivered_seq, s.unread) for s in alice] == [
        ("d:alice:bob", 2, 1, 2, 1),
        ("g:team", 1, 0, 0, 1),
    ]
    assert [s.conv for s in await storage.conv_states("bob")] == ["d:alice:bob"]
    assert [s.conv for s in await storage.conv_states("carol")] == ["g:team"]
    assert await storage.conv_states("nobody") == []


async def test_conv_states_follow_group_membership(storage: Storage) -> None:
    await storage.create_group("team", name="T", owner="alice", members=[])
    # A group is listed even before it has a message.
    [state] = await storage.conv_states("alice")
    assert (state.conv, state.last_seq, state.unread) == ("g:team", 0, 0)
    await storage.set_members("team", {"bob": Role.MEMBER})
    assert [s.conv for s in await storage.conv_states("bob")] == ["g:team"]
    await storage.set_members("team", {"bob": None})
    assert await storage.conv_states("bob") == []
    await storage.delete_group("team")
    assert await storage.conv_states("alice") == []


async def test_conv_states_for_given_conversations(storage: Storage) -> None:
    await storage.append_messages([msg("d:alice:bob", "alice", "c1")])
    states = await storage.conv_states("alice", ["g:unknown", "d:alice:bob"])
    assert [(s.conv, s.last_seq, s.unread) for s in states] == [("g:unknown", 0, 0), ("d:alice:bob", 1, 1)]
