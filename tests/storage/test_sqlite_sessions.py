"""`SqliteSessionStore`: durable MQTT sessions, queues and retained messages."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mqim.storage import QueuedMessage, RetainedRecord, SqliteSessionStore, StorageError, Unavailable
from mqim.storage._session_writes import DeleteOp, DequeueOp, EnqueueOp, SaveOp, WriteOp, coalesce

REPO_ROOT = str(Path(__file__).resolve().parents[2])
ALL_BYTES = bytes(range(256)) + b"\x00\x00\xff"


def q(qid: int, payload: bytes = b"p", topic: str = "im/v1/u/bob/msg", qos: int = 1) -> QueuedMessage:
    return QueuedMessage(qid=qid, topic=topic, payload=payload, qos=qos)


async def test_save_and_load_sessions_with_queues(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    async with SqliteSessionStore(path=path) as store:
        store.save_session("dev-b", user="bob", subscriptions={"im/v1/u/bob/#": 1}, disconnected_ts=None)
        store.save_session(
            "dev-a",
            user="alice",
            subscriptions={"im/v1/u/alice/#": 1, "im/v1/g/team/#": 0},
            disconnected_ts=42,
        )
        for qid in (3, 1, 2):
            store.enqueue("dev-a", q(qid, payload=f"m{qid}".encode()))
        store.enqueue("dev-b", q(7))
        await store.flush()
    async with SqliteSessionStore(path=path) as store:
        sessions, retained = await store.load()
    assert retained == []
    assert [s.client_id for s in sessions] == ["dev-a", "dev-b"]
    a, b = sessions
    assert a.user == "alice"
    assert a.subscriptions == {"im/v1/u/alice/#": 1, "im/v1/g/team/#": 0}
    assert a.disconnected_ts == 42
    assert [(m.qid, m.payload) for m in a.queue] == [(1, b"m1"), (2, b"m2"), (3, b"m3")]
    assert b.user == "bob"
    assert b.disconnected_ts is None
    assert b.queue == [q(7)]


async def test_save_replaces_metadata_and_keeps_queue(tmp_path: Path) -> None:
    async with SqliteSessionStore(path=tmp_path / "sessions.db") as store:
        store.save_session("dev", user="alice", subscriptions={"a/#": 1}, disconnected_ts=None)
        store.enqueue("dev", q(1))
        await store.flush()
        store.save_session("dev", user="alice", subscriptions={"b/#": 0}, disconnected_ts=99)
        [session], _ = await store.load()
    assert session.subscriptions == {"b/#": 0}
    assert session.disconnected_ts == 99
    assert session.queue == [q(1)]


async def test_caller_mutation_after_save_is_not_stored(tmp_path: Path) -> None:
    async with SqliteSessionStore(path=tmp_path / "sessions.db") as store:
        subs = {"a/#": 1}
        store.save_session("dev", user=None, subscriptions=subs, disconnected_ts=None)
        subs["b/#"] = 1
        [session], _ = await store.load()
    assert session.subscriptions == {"a/#": 1}
    assert session.user is None


async def test_dequeue(tmp_path: Path) -> None:
    async with SqliteSessionStore(path=tmp_path / "sessions.db") as store:
        store.save_session("dev", user="u", subscriptions={}, disconnected_ts=None)
        for qid in range(1, 6):
            store.enqueue("dev", q(qid))
        await store.flush()
        store.dequeue("dev", [2, 4])
        store.dequeue("dev", [])
        store.dequeue("dev", [99])  # unknown qid: harmless
        [session], _ = await store.load()
        assert [m.qid for m in session.queue] == [1, 3, 5]
        # Enqueued and dequeued within one batch: never visible.
        store.enqueue("dev", q(6))
        store.dequeue("dev", [6, 1])
        [session], _ = await store.load()
        assert [m.qid for m in session.queue] == [3, 5]


async def test_delete_session_removes_its_queue(tmp_path: Path) -> None:
    async with SqliteSessionStore(path=tmp_path / "sessions.db") as store:
        for cid in ("keep", "drop"):
            store.save_session(cid, user="u", subscriptions={}, disconnected_ts=None)
            store.enqueue(cid, q(1))
        await store.flush()
        store.enqueue("drop", q(2))
        store.delete_session("drop")
        sessions, _ = await store.load()
        assert [(s.client_id, [m.qid for m in s.queue]) for s in sessions] == [("keep", [1])]
        # A session re-created after delete starts with an empty queue.
        store.save_session("drop", user="u", subscriptions={}, disconnected_ts=None)
        sessions, _ = await store.load()
        assert {s.client_id: s.queue for s in sessions}["drop"] == []


async def test_retained_set_replace_and_clear(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    async with SqliteSessionStore(path=path) as store:
        store.set_retained(RetainedRecord(topic="im/v1/presence/bob", payload=b"online", qos=1))
        store.set_retained(RetainedRecord(topic="im/v1/presence/alice", payload=b"offline", qos=0))
        store.set_retained(RetainedRecord(topic="im/v1/presence/carol", payload=b"x", qos=1))
        await store.flush()
        store.set_retained(RetainedRecord(topic="im/v1/presence/alice", payload=b"online", qos=1))
        store.set_retained(RetainedRecord(topic="im/v1/presence/carol", payload=b"", qos=0))
        # Set then clear then set again inside one batch: the last write wins.
        store.set_retained(RetainedRecord(topic="t/flip", payload=b"1", qos=0))
        store.set_retained(RetainedRecord(topic="t/flip", payload=b"", qos=0))
        store.set_retained(RetainedRecord(topic="t/flip", payload=b"2", qos=1))
        store.set_retained(RetainedRecord(topic="t/gone", payload=b"1", qos=0))
        store.set_retained(RetainedRecord(topic="t/gone", payload=b"", qos=0))
        await store.flush()
    async with SqliteSessionStore(path=path) as store:
        _, retained = await store.load()
    assert retained == [
        RetainedRecord(topic="im/v1/presence/alice", payload=b"online", qos=1),
        RetainedRecord(topic="im/v1/presence/bob", payload=b"online", qos=1),
        RetainedRecord(topic="t/flip", payload=b"2", qos=1),
    ]


async def test_binary_payloads_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    async with SqliteSessionStore(path=path) as store:
        store.save_session("dev", user="u", subscriptions={}, disconnected_ts=None)
        store.enqueue("dev", q(1, payload=ALL_BYTES))
        store.enqueue("dev", q(2, payload=b"\x00"))
        store.enqueue("dev", QueuedMessage(qid=3, topic="t", payload=bytes(bytearray(b"\xff\xfe")), qos=2))
        store.set_retained(RetainedRecord(topic="bin", payload=ALL_BYTES, qos=1))
    async with SqliteSessionStore(path=path) as store:
        [session], [retained] = await store.load()
    assert [m.payload for m in session.queue] == [ALL_BYTES, b"\x00", b"\xff\xfe"]
    assert all(type(m.payload) is bytes for m in session.queue)
    assert session.queue[2].qos == 2
    assert retained.payload == ALL_BYTES
    assert type(retained.payload) is bytes


async def test_flush_makes_writes_durable_for_other_readers(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    async with SqliteSessionStore(path=path, batch_max=3) as store:
        store.save_session("dev", user="u", subscriptions={}, disconnected_ts=None)
        for qid in range(1, 101):
            store.enqueue("dev", q(qid))
        await store.flush()
        # Another connection (as a new process would) already sees the committed data.
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT count(*) FROM queue").fetchone()[0] == 100


async def test_many_concurrent_flushes(tmp_path: Path) -> None:
    async with SqliteSessionStore(path=tmp_path / "sessions.db") as store:
        store.save_session("dev", user="u", subscriptions={}, disconnected_ts=None)

        async def writer(base: int) -> None:
            for i in range(20):
                store.enqueue("dev", q(base + i))
                if i % 5 == 0:
                    await store.flush()

        await asyncio.gather(*(writer(k * 1000) for k in range(10)))
        await store.flush()
        [session], _ = await store.load()
    assert len(session.queue) == 200


async def test_operations_after_close_raise_unavailable(tmp_path: Path) -> None:
    store = SqliteSessionStore(path=tmp_path / "sessions.db")
    with pytest.raises(Unavailable):
        store.enqueue("dev", q(1))
    await store.open()
    store.enqueue("dev", q(1))
    await store.close()
    await store.close()
    with pytest.raises(Unavailable):
        store.enqueue("dev", q(2))
    with pytest.raises(Unavailable):
        store.save_session("dev", user=None, subscriptions={}, disconnected_ts=None)
    with pytest.raises(Unavailable):
        await store.flush()
    with pytest.raises(Unavailable):
        await store.load()


async def test_bad_write_is_reported_by_flush_and_loses_only_itself(tmp_path: Path) -> None:
    async with SqliteSessionStore(path=tmp_path / "sessions.db") as store:
        store.save_session("dev", user="u", subscriptions={}, disconnected_ts=None)
        store.enqueue("dev", q(1))
        # qos is NOT NULL in the schema: this write cannot be stored.
        store.enqueue("dev", QueuedMessage(qid=2, topic="t", payload=b"x", qos=None))  # type: ignore[arg-type]
        store.enqueue("dev", q(3))
        with pytest.raises(StorageError, match="EnqueueOp"):
            await store.flush()
        await store.flush()  # reported once
        [session], _ = await store.load()
    assert [m.qid for m in session.queue] == [1, 3]


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    async with SqliteSessionStore(path=path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version (version, applied_ts) VALUES (999, 0)")
    store = SqliteSessionStore(path=path)
    with pytest.raises(StorageError, match="newer"):
        await store.open()
    await store.close()


_CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from mqim.storage import QueuedMessage, RetainedRecord, SqliteSessionStore

    async def main() -> None:
        store = SqliteSessionStore(path=Path(sys.argv[1]))
        await store.open()
        store.save_session("dev", user="bob", subscriptions={"im/v1/u/bob/#": 1}, disconnected_ts=7)
        for qid in range(1, 501):
            payload = bytes([qid % 256]) * 64
            store.enqueue("dev", QueuedMessage(qid=qid, topic="im/v1/u/bob/msg", payload=payload, qos=1))
        store.dequeue("dev", [1, 2])
        store.set_retained(RetainedRecord(topic="im/v1/presence/bob", payload=b"\\x00online", qos=1))
        await store.flush()
        print("flushed", flush=True)
        # Keep writing without flushing, then wait to be killed: no close(), no atexit.
        for qid in range(501, 1001):
            store.enqueue("dev", QueuedMessage(qid=qid, topic="t", payload=b"late", qos=1))
        time.sleep(60)

    asyncio.run(main())
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
async def test_flushed_data_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, str(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert child.stdout is not None
    assert child.stderr is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):  # already gone if it crashed
            child.kill()  # SIGKILL: no close(), no atexit, no flush
        _, errors = await asyncio.wait_for(child.communicate(), timeout=30)
    assert line == b"flushed\n", errors.decode(errors="replace")
    assert child.returncode == -signal.SIGKILL
    async with SqliteSessionStore(path=path) as store:
        [session], [retained] = await store.load()
    assert session.user == "bob"
    assert session.subscriptions == {"im/v1/u/bob/#": 1}
    assert session.disconnected_ts == 7
    flushed = [m for m in session.queue if m.qid <= 500]
    assert [m.qid for m in flushed] == list(range(3, 501))
    assert all(m.payload == bytes([m.qid % 256]) * 64 for m in flushed)
    # Unflushed writes may or may not have made it, but never partially out of order.
    late = [m.qid for m in session.queue if m.qid > 500]
    assert late == list(range(501, 501 + len(late)))
    assert retained == RetainedRecord(topic="im/v1/presence/bob", payload=b"\x00online", qos=1)


# -- the pure coalescing step --------------------------------------------------------------------
def test_coalesce_cancels_enqueue_then_dequeue() -> None:
    ops: list[WriteOp] = [
        EnqueueOp("a", 1, "t", b"1", 1),
        EnqueueOp("a", 2, "t", b"2", 1),
        DequeueOp("a", (1, 9)),
        EnqueueOp("b", 1, "t", b"1", 1),
    ]
    assert coalesce(ops) == [
        EnqueueOp("a", 2, "t", b"2", 1),
        DequeueOp("a", (1, 9)),
        EnqueueOp("b", 1, "t", b"1", 1),
    ]


def test_coalesce_keeps_reenqueue_after_dequeue() -> None:
    ops: list[WriteOp] = [
        EnqueueOp("a", 1, "t", b"old", 1),
        DequeueOp("a", (1,)),
        EnqueueOp("a", 1, "t", b"new", 1),
    ]
    assert coalesce(ops) == [DequeueOp("a", (1,)), EnqueueOp("a", 1, "t", b"new", 1)]


def test_coalesce_delete_session_drops_its_pending_enqueues() -> None:
    save = SaveOp("a", "u", {}, None)
    ops: list[WriteOp] = [save, EnqueueOp("a", 1, "t", b"", 1), EnqueueOp("b", 1, "t", b"", 1), DeleteOp("a")]
    assert coalesce(ops) == [save, EnqueueOp("b", 1, "t", b"", 1), DeleteOp("a")]


def test_coalesce_replaced_enqueue() -> None:
    ops: list[WriteOp] = [EnqueueOp("a", 1, "t", b"old", 1), EnqueueOp("a", 1, "t", b"new", 0)]
    assert coalesce(ops) == [EnqueueOp("a", 1, "t", b"new", 0)]
