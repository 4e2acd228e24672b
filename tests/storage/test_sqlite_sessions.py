"""`SqliteSessionStore`: what only the SQLite backend has.

The `SessionStore` behaviours shared with Redis are in `test_session_store_contract.py`; here are
durability when the writing process is killed, the schema version check and the pure coalescing
of a write batch.
"""

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

from mqim.storage import RetainedRecord, SqliteSessionStore, StorageError
from mqim.storage._session_writes import DeleteOp, DequeueOp, EnqueueOp, SaveOp, WriteOp, coalesce

REPO_ROOT = str(Path(__file__).resolve().parents[2])


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
