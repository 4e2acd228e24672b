"""`HookOutbox`: the durable, bounded queue of webhook events (SQLite in the data directory).

The trigger calls `add()` synchronously: it only appends to an in-memory batch and wakes the
writer task, which commits everything queued (new events and the deletions of delivered ones)
in one transaction on the outbox's own thread (group commit), so the event loop never waits for
the disk. Senders read committed rows per endpoint in id order (`fetch`), and `done()` deletes a
row once its endpoint answered. A crash keeps every committed row; after a restart the rows are
sent again (a receiver may get an event twice: at least once, recognisable by its id).

Bounds (`max_rows`, `max_bytes` of bodies, all endpoints together): at the bound the **oldest
rows are dropped** and counted in `dropped_full` (logged once per episode): a push for the
newest message matters more than one for an old message, and the messages themselves stay in
storage for `sync`. The in-memory batch is bounded by `max_rows` the same way. Rows of endpoints
no longer configured are dropped at `open()`.

The file is `<data_dir>/hooks-outbox.db`, WAL with ``synchronous=NORMAL`` like mqim's other
SQLite files: a committed transaction survives ``kill -9``. Events triggered in the last
moments before a crash, not yet committed (one writer round trip, milliseconds), are lost.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar, TypeVarTuple, Unpack

from mqim.hooks._exceptions import HookStorageError

log = logging.getLogger("mqim.hooks")

RETRY_DELAY_S: Final = 1.0
"""Pause after a failed transaction before the next one (the disk may be full)."""

BUSY_TIMEOUT_S: Final = 5.0
"""How long SQLite waits for a lock held by another connection (`mqim hooks list`)."""

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS outbox ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " endpoint TEXT NOT NULL,"
    " event TEXT NOT NULL,"
    " delivery TEXT NOT NULL,"
    " body BLOB NOT NULL,"
    " created REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS outbox_endpoint ON outbox (endpoint, id)",
)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One undelivered event for one endpoint."""

    id: int
    endpoint: str
    event: str
    delivery: str
    body: bytes
    created: float


_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

_New = tuple[str, str, str, bytes, float]  # endpoint, event, delivery, body, created


@dataclass(slots=True)
class _Totals:
    rows: int = 0
    bytes: int = 0


class HookOutbox:
    """The outbox. `open()` first, run `run()` as a task, `close()` at the end.

    Args:
        path: The SQLite file; created (with its directory) if missing.
        max_rows: Events held at once (committed or being committed), all endpoints.
        max_bytes: Body bytes held at once.
    """

    def __init__(self, *, path: Path, max_rows: int, max_bytes: int) -> None:
        if max_rows < 1 or max_bytes < 1:
            raise ValueError("max_rows and max_bytes must be at least 1")
        self.path = path
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.dropped_full = 0
        """Events dropped at the bound (oldest first)."""
        self.written = 0
        """Events committed since start."""
        self._totals = _Totals()
        self._incoming: deque[_New] = deque()
        self._incoming_bytes = 0
        self._done: list[int] = []
        self._wake = asyncio.Event()
        self._signals: dict[str, asyncio.Event] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # used in the executor's thread only
        self._full_episode = False

    @property
    def rows(self) -> int:
        """Events held: committed and undelivered, plus those waiting for the writer."""
        return self._totals.rows + len(self._incoming)

    @property
    def size(self) -> int:
        """Body bytes held (same scope as `rows`)."""
        return self._totals.bytes + self._incoming_bytes

    @property
    def unwritten(self) -> int:
        """Additions and deletions not yet handed to the writer's thread."""
        return len(self._incoming) + len(self._done)

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self, endpoints: Collection[str]) -> None:
        """Open or create the file; drop rows of endpoints not in `endpoints`.

        Raises:
            HookStorageError: The file cannot be opened or created.
        """
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqim-hooks-outbox")
        for name in endpoints:
            self._signals[name] = asyncio.Event()
        try:
            rows, size, stale = await self._call(self._open_db, tuple(endpoints))
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._totals = _Totals(rows, size)
        if stale:
            log.warning("hooks outbox: %d events of endpoints no longer configured dropped", stale)
        if rows:
            log.info("hooks outbox: %d undelivered events to send", rows)
            for event in self._signals.values():
                event.set()

    async def close(self) -> None:
        """Commit what is still queued, then close the file."""
        if self._executor is None:
            return
        try:
            await self._commit_once()
        except HookStorageError as exc:
            log.error("hooks outbox: %d events not written at close: %s", len(self._incoming), exc)
        finally:
            try:
                await self._call(self._close_db)
            finally:
                self._executor.shutdown(wait=False)
                self._executor = None

    # -- the trigger's side (synchronous, on the event loop) -------------------------------------
    def add(self, *, endpoint: str, event: str, delivery: str, body: bytes, now: float) -> None:
        """Queue one event for one endpoint (never blocks; the writer commits it soon)."""
        self._incoming.append((endpoint, event, delivery, body, now))
        self._incoming_bytes += len(body)
        # The queue in memory obeys the same bound: the oldest leave first.
        while len(self._incoming) > self.max_rows or (
            self._incoming_bytes > self.max_bytes and len(self._incoming) > 1
        ):
            old = self._incoming.popleft()
            self._incoming_bytes -= len(old[3])
            self._note_dropped(1)
        self._wake.set()

    # -- the senders' side ---------------------------------------------------------------------
    def signal(self, endpoint: str) -> asyncio.Event:
        """Set whenever rows of `endpoint` were committed (clear it before `fetch`)."""
        return self._signals.setdefault(endpoint, asyncio.Event())

    async def fetch(self, endpoint: str, *, after: int, limit: int) -> list[OutboxRow]:
        """Committed rows of `endpoint` with an id above `after`, in id order."""
        return await self._call(self._fetch_db, endpoint, after, limit)

    def done(self, row_id: int) -> None:
        """Delete a delivered (or rejected) row in the next transaction."""
        self._done.append(row_id)
        self._wake.set()

    # -- the writer task -------------------------------------------------------------------------
    async def run(self) -> None:
        """Commit queued events and deletions in batches until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._commit_once()
            except HookStorageError as exc:
                log.error("hooks outbox: write failed, retrying in %.0f s: %s", RETRY_DELAY_S, exc)
                await asyncio.sleep(RETRY_DELAY_S)
                self._wake.set()

    async def _commit_once(self) -> None:
        if not self._incoming and not self._done:
            return
        batch = list(self._incoming)
        batch_bytes = self._incoming_bytes
        self._incoming.clear()
        self._incoming_bytes = 0
        done, self._done = self._done, []
        try:
            rows, size, dropped = await self._call(self._commit_db, batch, done)
        except HookStorageError:
            # Not written: back to the front of the queue (the bound still applies in `add`).
            # (On cancellation the thread still finishes that transaction: nothing to put back.)
            self._incoming.extendleft(reversed(batch))
            self._incoming_bytes += batch_bytes
            self._done[:0] = done
            raise
        self._totals = _Totals(rows, size)
        self.written += len(batch)
        if dropped:
            self._note_dropped(dropped)
        elif not self._incoming and rows < self.max_rows * 9 // 10:
            self._full_episode = False
        for endpoint in {new[0] for new in batch}:
            self.signal(endpoint).set()

    def _note_dropped(self, n: int) -> None:
        self.dropped_full += n
        if not self._full_episode:
            self._full_episode = True
            log.warning(
                "hooks outbox full (%d events, %d bytes): the oldest undelivered events are dropped",
                self.max_rows,
                self.max_bytes,
            )

    async def _call(self, fn: Callable[[Unpack[_Ts]], _T], *args: *_Ts) -> _T:
        if self._executor is None:
            raise HookStorageError("hooks outbox is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- in the outbox's thread ------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise HookStorageError("hooks outbox is not open")
        return self._conn

    def _open_db(self, endpoints: tuple[str, ...]) -> tuple[int, int, int]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
            self._conn = conn
            stale = 0
            if endpoints:
                marks = ",".join("?" * len(endpoints))
                stale = conn.execute(
                    f"DELETE FROM outbox WHERE endpoint NOT IN ({marks})", endpoints
                ).rowcount
            else:
                stale = conn.execute("DELETE FROM outbox").rowcount
            rows, size = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM outbox"
            ).fetchone()
            return int(rows), int(size), int(stale)
        except (sqlite3.Error, OSError) as exc:
            raise HookStorageError(f"cannot open hooks outbox {self.path}: {exc}") from exc

    def _close_db(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _fetch_db(self, endpoint: str, after: int, limit: int) -> list[OutboxRow]:
        try:
            cursor = self._db().execute(
                "SELECT id, endpoint, event, delivery, body, created FROM outbox"
                " WHERE endpoint = ? AND id > ? ORDER BY id LIMIT ?",
                (endpoint, after, limit),
            )
            return [OutboxRow(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in cursor.fetchall()]
        except sqlite3.Error as exc:
            raise HookStorageError(f"cannot read hooks outbox: {exc}") from exc

    def _commit_db(self, batch: list[_New], done: list[int]) -> tuple[int, int, int]:
        conn = self._db()
        rows, size = self._totals.rows, self._totals.bytes
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if done:
                    for start in range(0, len(done), 500):
                        chunk = done[start : start + 500]
                        marks = ",".join("?" * len(chunk))
                        gone = conn.execute(
                            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM outbox"
                            f" WHERE id IN ({marks})",
                            chunk,
                        ).fetchone()
                        conn.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
                        rows -= int(gone[0])
                        size -= int(gone[1])
                conn.executemany(
                    "INSERT INTO outbox (endpoint, event, delivery, body, created) VALUES (?, ?, ?, ?, ?)",
                    batch,
                )
                rows += len(batch)
                size += sum(len(new[3]) for new in batch)
                dropped = 0
                if rows > self.max_rows or size > self.max_bytes:
                    rows, size, dropped = self._drop_oldest(conn, rows, size)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise HookStorageError(f"cannot write hooks outbox: {exc}") from exc
        # Set here too, so a commit whose waiter was cancelled (shutdown) still counts.
        self._totals = _Totals(rows, size)
        return rows, size, dropped

    def _drop_oldest(self, conn: sqlite3.Connection, rows: int, size: int) -> tuple[int, int, int]:
        victims: list[int] = []
        cursor = conn.execute("SELECT id, LENGTH(body) FROM outbox ORDER BY id")
        # One row is always kept, however large: a single big event cannot be refused forever.
        while rows > 1 and (rows > self.max_rows or size > self.max_bytes):
            record = cursor.fetchone()
            if record is None:
                break
            victims.append(int(record[0]))
            rows -= 1
            size -= int(record[1])
        cursor.close()
        for start in range(0, len(victims), 500):
            chunk = victims[start : start + 500]
            conn.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        return rows, size, len(victims)
