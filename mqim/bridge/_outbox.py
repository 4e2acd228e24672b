"""`Outbox`: the durable, bounded queue of one outbound bridge (messages for the remote, in order).

Every message an `out` rule matches is offered to the outbox synchronously, inside the broker's
routing. `offer()` only appends it to an in-memory batch and wakes the writer; the writer commits
everything queued in one SQLite transaction (group commit) on its own thread, so the event loop
never waits for the disk. Once the transaction is committed, each message's `Receipt` (the
broker's hold on its publisher's PUBACK) is settled and the message becomes `ready` to be sent.
If the commit fails, the receipts of that batch are failed instead: their publishers were not
acknowledged and send again.

A message leaves the outbox only when the remote acknowledged it (`confirm_through`): it is then
deleted in the next transaction. A crash at any moment therefore keeps every message whose
publisher was acknowledged and not yet confirmed by the remote; `open()` loads them in their
original order, to be sent again (the remote may get one twice: at least once).

The outbox is bounded by `max_messages` and `max_bytes` (payload plus topic length, messages not
yet committed included). When it is full, `offer()` returns False and the caller fails the
message's receipt: nothing already accepted is ever evicted. An empty outbox accepts one
message of any size, so a single large message cannot be refused forever.

The file is `<data_dir>/bridge-<name>-outbox.db` (see `mqim.bridge._config.outbox_filename`):
WAL with ``synchronous=NORMAL`` like mqim's other SQLite files, i.e. a committed transaction
survives ``kill -9`` of the process; an operating-system crash may lose the last ones. Every
sqlite3 and OS error is translated to `BridgeStorageError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mqim._ports import Receipt
from mqim.bridge._exceptions import BridgeStorageError

log = logging.getLogger("mqim.bridge")

APPLICATION_ID: Final = 0x6D71626F
"""`PRAGMA application_id` of an outbox file ("mqbo")."""

SCHEMA_VERSION: Final = 1
"""`PRAGMA user_version` this code writes."""

BUSY_TIMEOUT_S: Final = 5.0
"""How long SQLite waits for a lock held by another connection before failing."""

RETRY_DELAY_S: Final = 1.0
"""Pause after a failed transaction before the next one (the disk may be full)."""

_SCHEMA: Final = (
    "CREATE TABLE outbox ("
    " seq INTEGER PRIMARY KEY,"
    " topic TEXT NOT NULL,"
    " payload BLOB NOT NULL,"
    " qos INTEGER NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One message for the remote: its topic there (already mapped) and QoS (0 or 1)."""

    seq: int
    topic: str
    payload: bytes
    qos: int

    @property
    def size(self) -> int:
        """What the entry counts against `max_bytes`."""
        return len(self.payload) + len(self.topic)


_Row = tuple[int, str, bytes, int]


def _resolve(receipt: Receipt | None, *, ok: bool) -> None:
    if receipt is None:
        return
    try:
        if ok:
            receipt.settle()
        else:
            receipt.fail()
    except Exception:
        # The receipt belongs to the broker; its failure must not stop the outbox.
        log.exception("outbox: resolving a receipt failed")


class Outbox:
    """The durable queue of one outbound bridge. Call `open()` first and `close()` at the end.

    Args:
        path: The SQLite file; created (with its directory) if missing.
        max_messages: Messages held at once (committed or not, until the remote confirms them).
        max_bytes: Payload plus topic length of the messages held at once.
        name: Used in thread names and log lines (the bridge's name).
        on_error: Told of every failed transaction (after it was logged), e.g. to count it.
    """

    def __init__(
        self,
        *,
        path: Path,
        max_messages: int,
        max_bytes: int,
        name: str = "outbox",
        on_error: Callable[[BridgeStorageError], None] | None = None,
    ) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("max_messages and max_bytes must be at least 1")
        self.path = path
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.name = name
        self.on_error = on_error
        self.ready: deque[OutboxEntry] = deque()
        """Committed entries not yet confirmed by the remote, in order (read-only for callers)."""
        self.lost = 0
        """Messages without a receipt (QoS 0, the server's own) whose commit failed."""
        self._count = 0
        self._bytes = 0
        self._next_seq = 1
        self._queued: list[tuple[OutboxEntry, Receipt | None]] = []
        self._delete_through = 0
        self._deleted_through = 0
        self._accepting = False
        self._closing = False
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._ready_event = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._writer: asyncio.Task[None] | None = None
        self._conn: sqlite3.Connection | None = None  # used in the executor's thread only

    @property
    def count(self) -> int:
        """Messages held (committed or being committed), until the remote confirms them."""
        return self._count

    @property
    def size(self) -> int:
        """What the held messages count against `max_bytes`."""
        return self._bytes

    @property
    def accepting(self) -> bool:
        """Whether the outbox is open for new messages."""
        return self._accepting

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        """Open (or create) the file and load the unconfirmed entries into `ready`, in order.

        Raises:
            BridgeStorageError: The file cannot be opened or created, is not an outbox, or was
                written by a newer mqim.
        """
        if self._executor is not None:
            raise RuntimeError(f"outbox {self.path} already opened")
        loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mqim-outbox:{self.name}")
        try:
            rows = await loop.run_in_executor(self._executor, self._open_db)
        except BaseException:
            self._shutdown_executor()
            raise
        for seq, topic, payload, qos in rows:
            entry = OutboxEntry(seq, topic, bytes(payload), qos)
            self.ready.append(entry)
            self._count += 1
            self._bytes += entry.size
        if rows:
            self._next_seq = rows[-1][0] + 1
            self._delete_through = self._deleted_through = rows[0][0] - 1
            self._ready_event.set()
            log.info("bridge %s: %d unconfirmed outbound messages to send again", self.name, len(rows))
        self._accepting = True
        self._writer = loop.create_task(self._write_loop(), name=f"mqim-outbox:{self.name}")

    async def close(self) -> None:
        """Stop accepting, commit what is queued (settling its receipts) and close the file."""
        if self._executor is None:
            return
        self._accepting = False
        self._closing = True
        self._stopping.set()
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                self._wake.set()
                await asyncio.shield(writer)
        finally:
            self._shutdown_executor()

    def _shutdown_executor(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        with contextlib.suppress(RuntimeError):
            executor.submit(self._close_db)  # runs after whatever the thread is doing
        executor.shutdown(wait=False)

    # -- the event loop side ---------------------------------------------------------------------
    def offer(self, topic: str, payload: bytes, qos: int, receipt: Receipt | None) -> bool:
        """Queue a message for the next commit; False when the outbox is full or closed.

        Synchronous and cheap (called inside the broker's routing). On True the outbox owns
        `receipt` and resolves it after the commit; on False the caller still owns it.
        """
        if not self._accepting:
            return False
        entry = OutboxEntry(self._next_seq, topic, payload, qos)
        size = entry.size
        if self._count >= self.max_messages or (self._count and self._bytes + size > self.max_bytes):
            return False
        self._next_seq += 1
        self._count += 1
        self._bytes += size
        self._queued.append((entry, receipt))
        self._wake.set()
        return True

    def confirm_through(self, seq: int) -> int:
        """The remote acknowledged every ready entry up to `seq`: drop them; returns how many.

        Their rows are deleted in the next transaction (a crash before it sends them again).
        """
        ready = self.ready
        removed = 0
        while ready and ready[0].seq <= seq:
            entry = ready.popleft()
            self._count -= 1
            self._bytes -= entry.size
            removed += 1
        if removed and seq > self._delete_through:
            self._delete_through = seq
            self._wake.set()
        return removed

    async def wait_ready(self) -> None:
        """Return once `ready` is not empty."""
        while not self.ready:
            self._ready_event.clear()
            await self._ready_event.wait()

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queued and self._delete_through <= self._deleted_through:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._queued = self._queued, []
            delete_through = self._delete_through
            rows = [(entry.seq, entry.topic, entry.payload, entry.qos) for entry, _ in batch]
            deletes = delete_through if delete_through > self._deleted_through else None
            executor = self._executor
            try:
                if executor is None:
                    raise BridgeStorageError(f"outbox {self.path} is closed")
                await asyncio.shield(loop.run_in_executor(executor, self._commit, rows, deletes))
            except BridgeStorageError as exc:
                self._lose(batch, exc)
                if self._closing:
                    self._lose(self._take_queued(), exc)
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RETRY_DELAY_S):
                        await self._stopping.wait()  # a stop retries at once, then gives up
                continue
            except asyncio.CancelledError:
                # Not known to be durable: the publishers keep these and send them again.
                self._lose(batch + self._take_queued(), None)
                raise
            self._deleted_through = max(self._deleted_through, delete_through)
            for entry, _ in batch:
                self.ready.append(entry)
            if batch:
                self._ready_event.set()
            for _, receipt in batch:
                _resolve(receipt, ok=True)

    def _take_queued(self) -> list[tuple[OutboxEntry, Receipt | None]]:
        queued, self._queued = self._queued, []
        return queued

    def _lose(self, batch: list[tuple[OutboxEntry, Receipt | None]], exc: BridgeStorageError | None) -> None:
        """A batch could not be committed: its entries leave, their receipts fail."""
        without = 0
        for entry, receipt in batch:
            self._count -= 1
            self._bytes -= entry.size
            if receipt is None:
                without += 1
            _resolve(receipt, ok=False)
        self.lost += without
        if exc is None:
            return
        log.error(
            "bridge %s: %s (%d messages refused to their publishers, %d without one lost)",
            self.name,
            exc,
            len(batch) - without,
            without,
        )
        if self.on_error is not None:
            self.on_error(exc)

    # -- the executor's thread -------------------------------------------------------------------
    def _open_db(self) -> list[_Row]:
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_S)
        except (sqlite3.Error, OSError) as exc:
            raise BridgeStorageError(f"cannot open outbox {path}: {exc}") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise BridgeStorageError(f"outbox {path}: cannot switch to WAL (got {mode!r})")
            conn.execute("PRAGMA synchronous = NORMAL")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if app_id == 0:
                if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise BridgeStorageError(f"{path} is an SQLite file but not a bridge outbox")
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(_SCHEMA)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            elif app_id != APPLICATION_ID:
                raise BridgeStorageError(f"{path} is not a bridge outbox (application_id {app_id:#x})")
            elif version > SCHEMA_VERSION:
                raise BridgeStorageError(
                    f"outbox {path} has schema version {version}, newer than this mqim's {SCHEMA_VERSION}"
                )
            rows: list[_Row] = conn.execute(
                "SELECT seq, topic, payload, qos FROM outbox ORDER BY seq"
            ).fetchall()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise BridgeStorageError(f"cannot open outbox {path}: {exc}") from exc
            raise
        self._conn = conn
        return rows

    def _commit(self, rows: list[_Row], delete_through: int | None) -> None:
        conn = self._conn
        if conn is None:
            raise BridgeStorageError(f"outbox {self.path} is not open")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if rows:
                    conn.executemany(
                        "INSERT INTO outbox (seq, topic, payload, qos) VALUES (?, ?, ?, ?)", rows
                    )
                if delete_through is not None:
                    conn.execute("DELETE FROM outbox WHERE seq <= ?", (delete_through,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise BridgeStorageError(
                f"outbox {self.path}: cannot commit {len(rows)} new messages: {exc}"
            ) from exc

    def _close_db(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
