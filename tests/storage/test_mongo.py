"""`MongoStorage` against a real MongoDB-wire server (SecantusDB), beyond the shared contract.

Several processes share one database in cluster mode: two `MongoStorage` instances stand for two
workers. Crash leftovers (a message inserted but never numbered) are planted with a raw client.
The access-control methods run against both backends here, so they are proven alike.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from mqim.storage import (
    AlreadyExists,
    MongoStorage,
    NewMessage,
    NotFound,
    SqliteStorage,
    Storage,
    StorageError,
    Unavailable,
)
from mqim.storage._mongo_acl import LOG_GAP_WAIT_MS, settled_changes
from mqim.storage._mongo_append import STALE_PENDING_MS, assign_seqs, now_ms, plan
from mqim.storage._mongo_errors import RetryPolicy
from tests.conftest import free_port
from tests.support.servers import MongoServer, mongo_server

Raw = AsyncMongoClient[dict[str, object]]


def msg(conv: str, sender: str, client_id: str, text: str = "hi") -> NewMessage:
    return NewMessage(conv=conv, sender=sender, client_id=client_id, ts=1000, body={"text": text})


@pytest.fixture
def dbname() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def mongo(mongo_proc: MongoServer, dbname: str) -> AsyncIterator[MongoStorage]:
    async with MongoStorage(url=mongo_proc.url, database=dbname) as storage:
        yield storage


@pytest.fixture
async def raw(mongo_proc: MongoServer) -> AsyncIterator[Raw]:
    client: Raw = AsyncMongoClient(mongo_proc.url)
    yield client
    await client.close()


@pytest.fixture(params=["sqlite", "mongo"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path, dbname: str) -> AsyncIterator[Storage]:
    storage: Storage
    if request.param == "sqlite":
        storage = SqliteStorage(path=tmp_path / "mqim.db")
    else:
        storage = MongoStorage(url=request.getfixturevalue("mongo_proc").url, database=dbname)
    async with storage:
        yield storage


# -- several workers on one database -------------------------------------------------------------
async def test_two_workers_number_one_conversation_without_gaps(mongo_proc: MongoServer, dbname: str) -> None:
    async with (
        MongoStorage(url=mongo_proc.url, database=dbname) as a,
        MongoStorage(url=mongo_proc.url, database=dbname) as b,
    ):
        batches = await asyncio.gather(
            *(
                (a if i % 2 else b).append_messages(
                    [msg("g:crowd", f"u{i}", "c1"), msg("g:crowd", f"u{i}", "c2")]
                )
                for i in range(12)
            )
        )
        seqs = sorted(r.record.seq for batch in batches for r in batch)
        assert seqs == list(range(1, 25))
        for batch in batches:
            assert batch[0].record.seq + 1 == batch[1].record.seq  # a batch gets a block
        assert [m.seq for m in await a.get_messages("g:crowd", limit=100)] == list(range(1, 25))


async def test_same_message_from_two_workers_is_stored_once(mongo_proc: MongoServer, dbname: str) -> None:
    async with (
        MongoStorage(url=mongo_proc.url, database=dbname) as a,
        MongoStorage(url=mongo_proc.url, database=dbname) as b,
    ):
        results = await asyncio.gather(
            *((a, b)[i % 2].append_messages([msg("d:alice:bob", "alice", f"c{i // 2}")]) for i in range(20))
        )
        flat = [r for [r] in results]
        for i in range(0, 20, 2):
            pair = flat[i : i + 2]
            assert sorted(r.created for r in pair) == [False, True]
            assert pair[0].record == pair[1].record
        assert [m.seq for m in await a.get_messages("d:alice:bob")] == list(range(1, 11))


# -- crash leftovers -------------------------------------------------------------------------------
async def test_message_left_pending_by_a_dead_writer_is_completed(
    mongo: MongoStorage, raw: Raw, dbname: str
) -> None:
    [first] = await mongo.append_messages([msg("d:alice:bob", "alice", "c1")])
    # A worker inserted this one, then died before numbering it.
    await raw[dbname]["messages"].insert_one(
        {
            "_id": "dead-writer",
            "conv": "d:alice:bob",
            "seq": None,
            "sender": "alice",
            "client_id": "c2",
            "ts": 5,
            "kind": "msg",
            "body": '{"text":"from the dead"}',
            "pending_ts": now_ms() - STALE_PENDING_MS - 1000,
        }
    )
    assert [m.seq for m in await mongo.get_messages("d:alice:bob")] == [1]  # invisible meanwhile
    [retry] = await mongo.append_messages([msg("d:alice:bob", "alice", "c2", text="retry")])
    assert retry.created  # nobody was told about it before: deliver it now
    assert retry.record.seq == first.record.seq + 1
    assert retry.record.server_id == "dead-writer"
    assert retry.record.body == {"text": "from the dead"}
    [again] = await mongo.append_messages([msg("d:alice:bob", "alice", "c2")])
    assert not again.created
    assert again.record == retry.record


async def test_duplicate_of_a_message_in_flight_waits_for_its_writer(
    mongo: MongoStorage, raw: Raw, dbname: str
) -> None:
    messages = raw[dbname]["messages"]
    await messages.insert_one(
        {
            "_id": "in-flight",
            "conv": "d:alice:bob",
            "seq": None,
            "sender": "alice",
            "client_id": "c1",
            "ts": 5,
            "kind": "msg",
            "body": "{}",
            "pending_ts": now_ms(),
        }
    )
    waiting = asyncio.create_task(mongo.append_messages([msg("d:alice:bob", "alice", "c1")]))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    # The other writer finishes its append.
    await raw[dbname]["conversations"].insert_one({"_id": "d:alice:bob", "last_seq": 1})
    await messages.update_one({"_id": "in-flight"}, {"$set": {"seq": 1}})
    [result] = await asyncio.wait_for(waiting, timeout=30)
    assert not result.created
    assert (result.record.server_id, result.record.seq) == ("in-flight", 1)
    assert await mongo.last_seq("d:alice:bob") == 1


async def test_a_reused_seq_is_an_error_not_a_silent_overwrite(
    mongo: MongoStorage, raw: Raw, dbname: str
) -> None:
    await mongo.append_messages([msg("g:team", "alice", "c1")])
    # Someone reset the counter: the next seq collides with a stored message.
    await raw[dbname]["conversations"].delete_one({"_id": "g:team"})
    with pytest.raises(StorageError, match="conv_seq"):
        await mongo.append_messages([msg("g:team", "alice", "c2")])
    assert [m.client_id for m in await mongo.get_messages("g:team")] == ["c1"]


# -- schema, errors --------------------------------------------------------------------------------
async def test_open_creates_indexes_and_refuses_a_newer_schema(
    mongo_proc: MongoServer, raw: Raw, dbname: str
) -> None:
    async with MongoStorage(url=mongo_proc.url, database=dbname):
        pass
    names = {ix["name"] async for ix in await raw[dbname]["messages"].list_indexes()}
    assert {"idempotency", "conv_seq"} <= names
    await raw[dbname]["meta"].update_one({"_id": "schema"}, {"$set": {"version": 999}})
    storage = MongoStorage(url=mongo_proc.url, database=dbname)
    with pytest.raises(StorageError, match="newer"):
        await storage.open()
    await storage.close()


async def test_unreachable_server_is_unavailable() -> None:
    url = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
    storage = MongoStorage(url=url, timeout_s=0.2, retry=RetryPolicy(attempts=2, first_delay_s=0.01))
    with pytest.raises(Unavailable, match="after 2 attempt"):
        await storage.open()
    await storage.close()
    with pytest.raises(Unavailable):
        await storage.get_user("alice")


async def test_bad_url_is_a_storage_error() -> None:
    with pytest.raises(StorageError):
        await MongoStorage(url="mongodb://").open()


async def test_closed_storage_is_unavailable(mongo_proc: MongoServer, dbname: str) -> None:
    storage = MongoStorage(url=mongo_proc.url, database=dbname)
    with pytest.raises(Unavailable, match="not open"):
        await storage.append_messages([msg("g:x", "a", "c")])
    await storage.open()
    await storage.close()
    with pytest.raises(Unavailable, match="closed"):
        await storage.list_users()


# -- values both backends must store alike ----------------------------------------------------------
async def test_bodies_with_awkward_keys_and_numbers(backend: Storage) -> None:
    body = {"$set": 1, "a.b": {"$gt": [2**70, -1.5]}, "": None, "ü": "✓"}
    [result] = await backend.append_messages(
        [NewMessage(conv="g:x", sender="a", client_id="c", ts=1, body=body)]
    )
    [stored] = await backend.get_messages("g:x")
    assert stored.body == body
    assert stored == result.record


# -- access control: rules, roles, tokens, account changes (both backends) -------------------------
async def test_acl_rules_in_order_and_version_moves(backend: Storage) -> None:
    v0 = await backend.acl_version()
    r1 = await backend.add_acl_rule("allow user:* publish im/v1/#", name="first")
    r2 = await backend.add_acl_rule("deny role:guest subscribe #")
    assert r1.rule_id < r2.rule_id
    assert (r1.name, r2.name) == ("first", "")
    v1 = await backend.acl_version()
    assert v1 != v0
    assert [r.text for r in await backend.list_acl_rules()] == [r1.text, r2.text]
    await backend.remove_acl_rule(r1.rule_id)
    assert await backend.list_acl_rules() == [r2]
    assert await backend.acl_version() != v1
    with pytest.raises(NotFound):
        await backend.remove_acl_rule(r1.rule_id)
    r3 = await backend.add_acl_rule("allow all")
    assert r3.rule_id > r2.rule_id  # ids are never reused


async def test_roles_and_assignments(backend: Storage) -> None:
    await backend.add_user("alice", password="pw")
    await backend.add_user("bob", password="pw")
    created = await backend.create_role("ops", description="operators")
    assert (created.name, created.description, created.members) == ("ops", "operators", ())
    await backend.create_role("guest")
    with pytest.raises(AlreadyExists):
        await backend.create_role("ops")
    before = await backend.acl_version()
    await backend.assign_role("bob", "ops")
    await backend.assign_role("alice", "ops")
    await backend.assign_role("alice", "ops")  # already held: no-op
    await backend.assign_role("alice", "guest")
    assert await backend.acl_version() != before
    assert await backend.roles_of("alice") == ["guest", "ops"]
    roles = await backend.list_roles()
    assert [(r.name, r.members) for r in roles] == [("guest", ("alice",)), ("ops", ("alice", "bob"))]
    with pytest.raises(NotFound):
        await backend.assign_role("nobody", "ops")
    with pytest.raises(NotFound):
        await backend.assign_role("alice", "nope")
    await backend.unassign_role("alice", "guest")
    with pytest.raises(NotFound):
        await backend.unassign_role("alice", "guest")
    await backend.remove_user("bob")  # a removed account loses its roles
    assert [(r.name, r.members) for r in await backend.list_roles()] == [("guest", ()), ("ops", ("alice",))]
    await backend.delete_role("ops")
    assert await backend.roles_of("alice") == []
    with pytest.raises(NotFound):
        await backend.delete_role("ops")
    # A role re-created under the same name starts without members.
    await backend.create_role("ops")
    assert [r.members for r in await backend.list_roles()] == [(), ()]


async def test_revoked_tokens(backend: Storage) -> None:
    assert not await backend.is_token_revoked("jti-1")
    await backend.revoke_token("jti-1", expires_ts=None)
    await backend.revoke_token("jti-1", expires_ts=None)  # idempotent
    await backend.revoke_token("jti-2", expires_ts=4_000_000_000)
    assert await backend.is_token_revoked("jti-1")
    assert await backend.is_token_revoked("jti-2")
    # Entries of tokens expired long ago are not kept (the token is refused as expired anyway).
    await backend.revoke_token("old", expires_ts=1)
    assert not await backend.is_token_revoked("old")
    assert await backend.is_token_revoked("jti-2")


async def test_user_changes(backend: Storage) -> None:
    start = await backend.user_changes(None)
    assert start.users == ()
    assert start.complete
    await backend.add_user("alice", password="pw")
    await backend.add_user("bob", password="pw")
    await backend.set_disabled("alice", True)
    await backend.remove_user("bob")
    changes = await backend.user_changes(start.rev)
    assert changes.complete
    assert changes.users == ("alice", "bob")
    assert changes.rev > start.rev
    assert (await backend.user_changes(changes.rev)).users == ()
    assert (await backend.user_changes(changes.rev)).rev == changes.rev
    page = await backend.user_changes(start.rev, limit=1)
    assert page.users == ("alice",)
    assert (await backend.user_changes(page.rev, limit=100)).users == ("bob", "alice")
    assert not (await backend.user_changes(changes.rev + 100)).complete


# -- pure pieces -----------------------------------------------------------------------------------
def test_plan_maps_duplicates_in_a_batch_to_their_first_occurrence() -> None:
    candidates, slots = plan([msg("g:x", "a", "1"), msg("g:x", "b", "1"), msg("g:x", "a", "1")])
    assert [c.key for c in candidates] == [("a", "1"), ("b", "1")]
    assert slots == [0, 1, 0]
    assert len({c.server_id for c in candidates}) == 2


def test_assign_seqs_numbers_each_block_in_batch_order() -> None:
    order = [(0, "x"), (1, "y"), (2, "x"), (4, "x")]
    # The counters after taking the blocks: x went 7 -> 10, y went 0 -> 1.
    assert assign_seqs(order, {"x": 10, "y": 1}) == {0: 8, 1: 1, 2: 9, 4: 10}


def test_settled_changes_waits_for_a_late_entry_but_not_forever() -> None:
    now = 1_000_000
    rows = [{"_id": 6, "user": "a", "ts": now}, {"_id": 8, "user": "b", "ts": now}]
    assert settled_changes(5, rows, now) == (6, ["a"])  # 7 may still be written
    old = now - LOG_GAP_WAIT_MS - 1
    rows = [{"_id": 6, "user": "a", "ts": old}, {"_id": 8, "user": "b", "ts": old}]
    assert settled_changes(5, rows, now) == (8, ["a", "b"])  # 7's writer died


@pytest.mark.slow
async def test_server_outage_is_unavailable_then_recovers(tmp_path: Path) -> None:
    policy = RetryPolicy(attempts=2, first_delay_s=0.01)
    # Fsync on commit: what was acknowledged before the SIGKILL must be there afterwards.
    with mongo_server(data_dir=tmp_path / "mongo", sync_on_commit=True) as server:
        async with MongoStorage(url=server.url, database="outage", timeout_s=0.5, retry=policy) as storage:
            await storage.add_user("alice", password="pw")
            [sent] = await storage.append_messages([msg("d:alice:bob", "alice", "c1")])
            await asyncio.to_thread(server.kill)
            with pytest.raises(Unavailable, match="MongoDB unavailable"):
                await storage.get_user("alice")
            with pytest.raises(Unavailable):
                await storage.append_messages([msg("d:alice:bob", "alice", "c2")])
            await asyncio.to_thread(server.start)
            # The same client reconnects by itself; what was acknowledged is there.
            assert await storage.get_user("alice") is not None
            assert await storage.get_messages("d:alice:bob") == [sent.record]
            [late] = await storage.append_messages([msg("d:alice:bob", "alice", "c2")])
            assert late.record.seq == 2
