"""`SqliteSessionStore`: durable MQTT session state in its own SQLite file.

This is the broker's hot path: every QoS1 message for an offline persistent session is enqueued
and later dequeued. The sync write methods therefore only append an operation to an in-memory
list (one uncontended lock, no thread hop); the first append into an empty list wakes the writer
thread, which takes the whole list and commits it in transactions of at most `batch_max`
operations. Within a batch an enqueue that a later dequeue (or session delete) removes again is
never written.

`flush()` and `load()` travel through the same list, so they are ordered after every write queued
before them; `flush()` resolves once those writes are committed. Durability is the same as
`SqliteStorage`: WAL with ``synchronous=NORMAL``, i.e. committed data survives ``kill -9`` of the
process, and an operating-system crash may lose the last transactions.

If a batch cannot be committed it is retried operation by operation, so a bad write loses only
itself; what still fails (a bad value, a full disk) is logged and the next `flush()` raises the
error: those writes are lost, and the broker learns it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from mqim.storage._contracts import SessionStore
from mqim.storage._exceptions import StorageError, Unavailable
from mqim.storage._records import QueuedMessage, RetainedRecord, StoredSession
from mqim.storage._session_writes import (
    Barrier,
    DeleteOp,
    DequeueOp,
    EnqueueOp,
    Load,
    Op,
    QueuedWrites,
    RetainOp,
    SaveOp,
    Stop,
    WriteOp,
    coalesce,
)
from mqim.storage._sqlite_schema import SESSIONS_SCHEMA, connect, migrate, translate

_log = logging.getLogger(__name__)

# How long close() waits for the writer thread to commit what is queued.
CLOSE_TIMEOUT_S: Final = 30.0


def _write_group(conn: sqlite3.Connection, kind: type, ops: list[WriteOp]) -> None:
    """Execute consecutive writes of one kind with executemany."""
    if kind is EnqueueOp:
        conn.executemany(
            "INSERT OR REPLACE INTO queue (client_id, qid, topic, payload, qos) VALUES (?, ?, ?, ?, ?)",
            [(op.client_id, op.qid, op.topic, op.payload, op.qos) for op in ops if isinstance(op, EnqueueOp)],
        )
    elif kind is DequeueOp:
        conn.executemany(
            "DELETE FROM queue WHERE client_id = ? AND qid = ?",
            [(op.client_id, qid) for op in ops if isinstance(op, DequeueOp) for qid in op.qids],
        )
    elif kind is SaveOp:
        conn.executemany(
            "INSERT OR REPLACE INTO sessions (client_id, user, subscriptions, disconnected_ts) "
            "VALUES (?, ?, ?, ?)",
            [
                (
                    op.client_id,
                    op.user,
                    json.dumps(op.subscriptions, separators=(",", ":")),
                    op.disconnected_ts,
                )
                for op in ops
                if isinstance(op, SaveOp)
            ],
        )
    elif kind is DeleteOp:
        ids = [(op.client_id,) for op in ops if isinstance(op, DeleteOp)]
        conn.executemany("DELETE FROM sessions WHERE client_id = ?", ids)
        conn.executemany("DELETE FROM queue WHERE client_id = ?", ids)
    elif kind is RetainOp:
        # Only retained writes are in this group, so the last one per topic decides.
        last: dict[str, RetainOp] = {op.topic: op for op in ops if isinstance(op, RetainOp)}
        conn.executemany(
            "INSERT OR REPLACE INTO retained (topic, payload, qos) VALUES (?, ?, ?)",
            [(op.topic, op.payload, op.qos) for op in last.values() if op.payload],
        )
        conn.executemany(
            "DELETE FROM retained WHERE topic = ?", [(op.topic,) for op in last.values() if not op.payload]
        )


def write_ops(conn: sqlite3.Connection, ops: Sequence[WriteOp]) -> None:
    """Apply `ops` (after `coalesce`) in order, grouping runs of the same kind."""
    for kind, group in itertools.groupby(coalesce(ops), key=type):
        _write_group(conn, kind, list(group))


def read_all(conn: sqlite3.Connection) -> tuple[list[StoredSession], list[RetainedRecord]]:
    """Every session with its queue in qid order, and every retained message by topic."""
    queues: dict[str, list[QueuedMessage]] = {}
    for client_id, qid, topic, payload, qos in conn.execute(
        "SELECT client_id, qid, topic, payload, qos FROM queue ORDER BY client_id, qid"
    ):
        queues.setdefault(client_id, []).append(
            QueuedMessage(qid=qid, topic=topic, payload=bytes(payload), qos=qos)
        )
    sessions = [
        StoredSession(
            client_id=client_id,
            user=user,
            subscriptions={str(k): int(v) for k, v in json.loads(subscriptions).items()},
            disconnected_ts=disconnected_ts,
            queue=queues.get(client_id, []),
        )
        for client_id, user, subscriptions, disconnected_ts in conn.execute(
            "SELECT client_id, user, subscriptions, disconnected_ts FROM sessions ORDER BY client_id"
        )
    ]
    retained = [
        RetainedRecord(topic=topic, payload=bytes(payload), qos=qos)
        for topic, payload, qos in conn.execute("SELECT topic, payload, qos FROM retained ORDER BY topic")
    ]
    return sessions, retained


class SqliteSessionStore(QueuedWrites, SessionStore):
    """`SessionStore` in one SQLite file (the broker passes ``<data-dir>/sessions.db``).

    Use as an async context manager, or call `open()` and `close()`. The sync write methods
    must be called while the store is open; they raise `Unavailable` otherwise.

    Args:
        path: The database file; created with its schema if missing.
        batch_max: Most operations committed in one transaction.
    """

    def __init__(self, *, path: Path, batch_max: int = 2048) -> None:
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        self._path = Path(path)
        self._batch_max = batch_max
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ops: list[Op] = []
        self._accepting = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started: asyncio.Future[None] | None = None
        # Set by the thread when a batch could not be committed; reported by the next flush.
        self._lost: StorageError | None = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def pending(self) -> int:
        """Operations queued and not yet taken by the writer thread (for metrics/back-pressure)."""
        return len(self._ops)

    async def open(self) -> None:
        """Start the writer thread and create or migrate the schema.

        Raises:
            StorageError: The file cannot be opened, is not an mqim sessions database, or has a
                newer schema than this code.
        """
        if self._closed:
            raise Unavailable("session store is closed")
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._main, name=f"mqim-sessions:{self._path.name}", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.shield(self._started)
        except BaseException:
            # The thread has exited (startup failed) or will see the stop marker (cancelled).
            self._push(Stop())
            self._thread = None
            raise
        self._accepting = True

    async def close(self) -> None:
        """Commit everything queued, stop the writer thread and close the connection.

        Raises:
            StorageError: The last writes could not be committed.
        """
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is None:
            return
        failure: StorageError | None = None
        if self._accepting:
            try:
                await self._submit_barrier()
            except StorageError as exc:
                failure = exc
        self._accepting = False
        self._push(Stop())
        await asyncio.to_thread(thread.join, CLOSE_TIMEOUT_S)
        if thread.is_alive():
            _log.warning("%s did not stop within %.1f s", thread.name, CLOSE_TIMEOUT_S)
        if failure is not None:
            raise failure

    # -- queued writes (sync, called on the event loop) ------------------------------------------
    def _push(self, op: Op) -> None:
        with self._lock:
            self._ops.append(op)
            if len(self._ops) == 1:
                self._wake.set()  # one wake-up per batch: only the first op after a drain

    def _push_write(self, op: WriteOp) -> None:
        if not self._accepting:
            raise Unavailable("session store is closed" if self._closed else "session store is not open")
        self._push(op)

    # -- ordered reads and barriers --------------------------------------------------------------
    def _new_future(self) -> asyncio.Future[Any]:
        if not self._accepting or self._loop is None:
            raise Unavailable("session store is closed" if self._closed else "session store is not open")
        return self._loop.create_future()

    async def _submit_barrier(self) -> None:
        future: asyncio.Future[None] = self._new_future()
        self._push(Barrier(future))
        await future

    async def flush(self) -> None:
        """Return when every write queued before this call is committed.

        Raises:
            Unavailable: The store is closed.
            StorageError: A batch queued before this call could not be committed.
        """
        await self._submit_barrier()

    async def load(self) -> tuple[list[StoredSession], list[RetainedRecord]]:
        """Every stored session (queue in qid order) and retained message, after queued writes."""
        future: asyncio.Future[tuple[list[StoredSession], list[RetainedRecord]]] = self._new_future()
        self._push(Load(future))
        return await future

    # -- the writer thread -----------------------------------------------------------------------
    def _call_loop(self, callback: Any, *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            _log.warning("session store: event loop closed, result dropped")

    def _main(self) -> None:
        assert self._started is not None
        try:
            conn = connect(self._path, read_only=False)
        except StorageError as exc:
            self._call_loop(_settle, [(self._started, None, exc)])
            return
        try:
            migrate(conn, SESSIONS_SCHEMA, path=self._path)
        except BaseException as exc:
            conn.close()
            err = translate(exc, "cannot open session store")
            if err is not exc:
                err.__cause__ = exc
            self._call_loop(_settle, [(self._started, None, err)])
            return
        self._call_loop(_settle, [(self._started, None, None)])
        try:
            self._serve(conn)
        except BaseException as exc:  # a bug here; make every waiter fail instead of hang
            _log.exception("session store writer died")
            # On the loop thread, so nothing can be queued after the drain.
            self._call_loop(self._died, exc)
            raise
        finally:
            conn.close()

    def _died(self, exc: BaseException) -> None:
        self._accepting = False
        error = Unavailable(f"session store writer died: {exc!r}")
        _settle([(op.future, None, error) for op in self._take_all() if isinstance(op, Barrier | Load)])

    def _take_all(self) -> list[Op]:
        with self._lock:
            ops, self._ops = self._ops, []
            self._wake.clear()
        return ops

    def _fail_waiters(self, ops: Sequence[Op], error: StorageError) -> None:
        outcomes: list[_Settle] = [(op.future, None, error) for op in ops if isinstance(op, Barrier | Load)]
        if outcomes:
            self._call_loop(_settle, outcomes)

    def _serve(self, conn: sqlite3.Connection) -> None:
        while True:
            self._wake.wait()
            ops = self._take_all()
            stop_at = next((i for i, op in enumerate(ops) if isinstance(op, Stop)), None)
            if stop_at is not None:
                # Nothing legitimately follows the stop marker: close() stopped accepting first.
                leftovers, ops = ops[stop_at + 1 :], ops[:stop_at]
                self._fail_waiters(leftovers, Unavailable("session store is closed"))
            for start in range(0, len(ops), self._batch_max):
                self._run_batch(conn, ops[start : start + self._batch_max])
            if stop_at is not None:
                return

    def _run_batch(self, conn: sqlite3.Connection, ops: list[Op]) -> None:
        waiters = [op for op in ops if isinstance(op, Barrier | Load)]
        loaded: dict[int, tuple[list[StoredSession], list[RetainedRecord]]] = {}
        try:
            loaded = self._transaction(conn, ops, one_by_one=False)
        except Exception as exc:
            # Rare (a bad value, or the disk): retry op by op so one bad write loses only itself.
            _log.warning(
                "session store: batch of %d operations failed (%s); retrying one by one", len(ops), exc
            )
            try:
                loaded = self._transaction(conn, ops, one_by_one=True)
            except Exception as exc2:
                self._lose(exc2, f"{len(ops)} queued operations not committed")
        outcomes: list[_Settle] = []
        for waiter in waiters:
            if isinstance(waiter, Load) and id(waiter) in loaded:
                outcomes.append((waiter.future, loaded[id(waiter)], None))
            else:
                # Every flush reports lost writes once; later flushes start clean.
                outcomes.append((waiter.future, None, self._lost))
        if any(isinstance(w, Barrier) for w in waiters):
            self._lost = None
        if outcomes:
            self._call_loop(_settle, outcomes)

    def _lose(self, exc: BaseException, what: str) -> None:
        err = translate(exc, f"session store: {what}")
        if err is not exc:
            err.__cause__ = exc
        _log.error("%s", err)
        self._lost = err

    def _transaction(
        self, conn: sqlite3.Connection, ops: list[Op], *, one_by_one: bool
    ) -> dict[int, tuple[list[StoredSession], list[RetainedRecord]]]:
        """Run `ops` in one transaction; return what each `Load` read, by id."""
        loaded: dict[int, tuple[list[StoredSession], list[RetainedRecord]]] = {}
        writes: list[WriteOp] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                if isinstance(op, Barrier | Stop):
                    continue
                if isinstance(op, Load):
                    # Coalescing must not cross a read: write what precedes it first.
                    write_ops(conn, writes)
                    writes.clear()
                    loaded[id(op)] = read_all(conn)
                elif one_by_one:
                    self._write_alone(conn, op)
                else:
                    writes.append(op)
            write_ops(conn, writes)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return loaded

    def _write_alone(self, conn: sqlite3.Connection, op: WriteOp) -> None:
        conn.execute("SAVEPOINT op")
        try:
            write_ops(conn, [op])
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            key = op.topic if isinstance(op, RetainOp) else op.client_id
            self._lose(exc, f"dropped {type(op).__name__} for {key!r}")
        conn.execute("RELEASE op")


_Settle = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _settle(outcomes: list[_Settle]) -> None:
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
