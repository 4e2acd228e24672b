"""SQLite-specific behaviour of `SqliteStorage`: files, migrations, threads, batching."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from mqim.storage import (
    AlreadyExists,
    NewMessage,
    Role,
    SqliteSessionStore,
    SqliteStorage,
    StorageError,
    Unavailable,
)


def msg(conv: str, sender: str, client_id: str, body: dict[str, object] | None = None) -> NewMessage:
    return NewMessage(conv=conv, sender=sender, client_id=client_id, ts=1, body=body or {"text": client_id})


def versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM schema_version ORDER BY version")]


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "mqim.db"
    async with SqliteStorage(path=path) as storage:
        await storage.add_user("alice", password="pw")
        await storage.create_group("team", name="T", owner="alice", members=["bob"])
        first = await storage.append_messages([msg("g:team", "alice", "c1"), msg("d:alice:bob", "bob", "c2")])
        await storage.advance_cursor("alice", "g:team", read_seq=1)
    async with SqliteStorage(path=path) as storage:
        assert await storage.verify_password("alice", "pw") is not None
        group = await storage.get_group("team")
        assert group is not None
        assert group.members == {"alice": Role.OWNER, "bob": Role.MEMBER}
        assert await storage.get_messages("g:team") == [first[0].record]
        [again] = await storage.append_messages([msg("g:team", "alice", "c1")])
        assert not again.created
        assert again.record == first[0].record
        [nxt] = await storage.append_messages([msg("g:team", "alice", "c3")])
        assert nxt.record.seq == 2
        states = {s.conv: s for s in await storage.conv_states("alice")}
        assert states["g:team"].read_seq == 1
        assert states["d:alice:bob"].last_seq == 1


async def test_migrations_recorded_and_reopen_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "mqim.db"
    async with SqliteStorage(path=path):
        pass
    recorded = versions(path)
    assert recorded == list(range(1, len(recorded) + 1))
    assert recorded[0] == 1
    async with SqliteStorage(path=path):
        pass
    assert versions(path) == recorded
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mqim.db"
    async with SqliteStorage(path=path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version (version, applied_ts) VALUES (999, 0)")
    storage = SqliteStorage(path=path)
    with pytest.raises(StorageError, match="newer"):
        await storage.open()
    await storage.close()
    assert versions(path)[-1] == 999


async def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE something (x)")
    with pytest.raises(StorageError, match="not an mqim storage database"):
        await SqliteStorage(path=path).open()
    sessions = tmp_path / "sessions.db"
    async with SqliteSessionStore(path=sessions):
        pass
    with pytest.raises(StorageError, match="not an mqim storage database"):
        await SqliteStorage(path=sessions).open()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError):
        await SqliteStorage(path=garbage).open()


async def test_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(Unavailable):
        await SqliteStorage(path=tmp_path / "missing-dir" / "mqim.db").open()


async def test_concurrent_appends_from_many_coroutines(tmp_path: Path) -> None:
    convs = ["g:a", "g:b", "d:x:y"]
    async with SqliteStorage(path=tmp_path / "mqim.db", batch_max=16) as storage:
        results = await asyncio.gather(
            *(storage.append_messages([msg(convs[i % 3], f"u{i}", "c")]) for i in range(300))
        )
        by_conv: dict[str, list[int]] = {}
        for [result] in results:
            assert result.created
            by_conv.setdefault(result.record.conv, []).append(result.record.seq)
        for conv in convs:
            assert sorted(by_conv[conv]) == list(range(1, 101))
            assert await storage.last_seq(conv) == 100
            assert [m.seq for m in await storage.get_messages(conv, limit=1000)] == list(range(1, 101))
        assert len({r.record.server_id for [r] in results}) == 300


async def test_failing_request_does_not_fail_its_batch(tmp_path: Path) -> None:
    async with SqliteStorage(path=tmp_path / "mqim.db") as storage:
        await storage.add_user("alice", password="pw")
        outcomes = await asyncio.gather(
            storage.append_messages([msg("g:t", "a", "1")]),
            # Not JSON: fails inside the writer, after the seq of its first message was taken.
            storage.append_messages([msg("g:t", "b", "2"), msg("g:t", "b", "3", body={"x": object()})]),
            storage.append_messages([msg("g:t", "c", "4")]),
            storage.create_group("grp", name="G", owner="alice", members=[]),
            storage.create_group("grp", name="G again", owner="alice", members=[]),
            storage.append_messages([msg("g:t", "d", "5")]),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], StorageError)
        assert isinstance(outcomes[1].__cause__, TypeError)
        created = [o for o in (outcomes[3], outcomes[4]) if not isinstance(o, BaseException)]
        failed = [o for o in (outcomes[3], outcomes[4]) if isinstance(o, BaseException)]
        assert len(created) == 1
        assert len(failed) == 1
        assert isinstance(failed[0], AlreadyExists)
        # The failed request left nothing behind: no message, no seq gap, no idempotency entry.
        stored = await storage.get_messages("g:t")
        assert [(m.seq, m.client_id) for m in stored] == [(1, "1"), (2, "4"), (3, "5")]
        [retry] = await storage.append_messages([msg("g:t", "b", "2")])
        assert retry.created
        assert retry.record.seq == 4


async def test_batch_max_one(tmp_path: Path) -> None:
    async with SqliteStorage(path=tmp_path / "mqim.db", batch_max=1) as storage:
        results = await asyncio.gather(
            *(storage.append_messages([msg("g:t", "a", str(i))]) for i in range(20))
        )
        assert sorted(r.record.seq for [r] in results) == list(range(1, 21))


async def test_close_commits_queued_writes(tmp_path: Path) -> None:
    path = tmp_path / "mqim.db"
    storage = SqliteStorage(path=path)
    await storage.open()
    tasks = [asyncio.create_task(storage.append_messages([msg("g:t", "a", str(i))])) for i in range(50)]
    await asyncio.sleep(0)  # let every task queue its request
    await storage.close()
    assert all(t.done() and not t.cancelled() for t in tasks)
    assert sorted(t.result()[0].record.seq for t in tasks) == list(range(1, 51))
    async with SqliteStorage(path=path) as reopened:
        assert await reopened.last_seq("g:t") == 50


async def test_operations_after_close_raise_unavailable(tmp_path: Path) -> None:
    storage = SqliteStorage(path=tmp_path / "mqim.db")
    with pytest.raises(Unavailable):
        await storage.get_user("alice")
    await storage.open()
    await storage.close()
    await storage.close()  # idempotent
    with pytest.raises(Unavailable):
        await storage.get_user("alice")
    with pytest.raises(Unavailable):
        await storage.append_messages([msg("g:t", "a", "1")])
    with pytest.raises(Unavailable):
        await storage.add_user("alice", password="pw")
    with pytest.raises(Unavailable):
        await storage.verify_password("alice", "pw")
    with pytest.raises(Unavailable):
        await storage.conv_states("alice")
    with pytest.raises(Unavailable):
        await storage.open()


async def test_readers_see_committed_writes_immediately(tmp_path: Path) -> None:
    async with SqliteStorage(path=tmp_path / "mqim.db") as storage:
        for i in range(1, 21):
            await storage.append_messages([msg("g:t", "a", str(i))])
            assert await storage.last_seq("g:t") == i
