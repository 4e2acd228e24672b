"""A thread that owns one sqlite3 connection and runs jobs from the event loop in batches.

The event loop never touches SQLite: a coroutine queues a job (a plain function of the
connection) and awaits a future. The thread takes everything queued (up to `batch_max`) and runs
it in ONE transaction, so N concurrent writers cost one commit (group commit). Each job of a
writing batch runs inside its own SAVEPOINT: a job that fails is rolled back alone and only its
future gets the error. Futures are resolved only after COMMIT, so a caller that sees success
knows its write is durable (see `mqim.storage._sqlite_schema` for what durable means).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from mqim.storage._exceptions import StorageError, Unavailable
from mqim.storage._sqlite_schema import connect, translate

_log = logging.getLogger(__name__)

T = TypeVar("T")

Job = Callable[[sqlite3.Connection], Any]
# (future, result, error) for one job, delivered on the event loop.
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


@dataclass(slots=True)
class _Request:
    job: Job
    what: str
    future: asyncio.Future[Any]


_STOP = object()


def _with_cause(err: StorageError, exc: BaseException) -> StorageError:
    # The error crosses a thread, so `raise ... from` is spelled out on the instance.
    if err is not exc:
        err.__cause__ = exc
    return err


def _deliver(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():  # the caller was cancelled; the job ran anyway
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


class SqliteWorker:
    """One thread, one connection, batched jobs.

    Args:
        name: Thread name (shows in tracebacks and `threading.enumerate()`).
        path: The database file.
        read_only: Open the connection with ``query_only``; batches then run in a read transaction
            (one consistent snapshot) without savepoints.
        batch_max: Most jobs run in one transaction.
        init: Run once in the thread right after connecting (e.g. migrations); its result is
            returned by `start()`.
    """

    def __init__(
        self,
        *,
        name: str,
        path: Path,
        read_only: bool,
        batch_max: int,
        init: Callable[[sqlite3.Connection], Any] | None = None,
    ) -> None:
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        self._name = name
        self._path = path
        self._read_only = read_only
        self._batch_max = batch_max
        self._init = init
        self._queue: queue.SimpleQueue[_Request | object] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._started: asyncio.Future[Any] | None = None

    async def start(self) -> Any:
        """Start the thread, connect, run `init`; return what `init` returned.

        Raises:
            StorageError: Connecting or `init` failed (the thread has then exited).
        """
        if self._thread is not None:
            raise RuntimeError(f"{self._name} already started")
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.create_future()
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()
        try:
            result = await asyncio.shield(self._started)
        except BaseException:
            # Startup failed or we were cancelled: make sure the thread goes away.
            self._queue.put(_STOP)
            raise
        self._accepting = True
        return result

    async def run(self, job: Callable[[sqlite3.Connection], T], *, what: str) -> T:
        """Run `job(connection)` in the thread and return its result.

        Args:
            job: Runs in the worker thread inside the batch's transaction.
            what: Short description used in error messages.

        Raises:
            Unavailable: The worker is stopped.
            StorageError: The job failed (sqlite3 and unexpected errors are translated).
        """
        if not self._accepting or self._loop is None:
            raise Unavailable(f"{self._name}: storage is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put(_Request(job, what, future))
        return cast(T, await future)

    async def stop(self, *, join_timeout_s: float) -> None:
        """Finish every queued job, close the connection and join the thread.

        Args:
            join_timeout_s: Seconds to wait for the thread; on expiry a warning is logged.
        """
        thread = self._thread
        if thread is None:
            return
        self._accepting = False
        self._queue.put(_STOP)
        await asyncio.to_thread(thread.join, join_timeout_s)
        if thread.is_alive():
            _log.warning("%s did not stop within %.1f s", self._name, join_timeout_s)

    # -- the thread ----------------------------------------------------------------------------
    def _post(self, outcomes: list[_Outcome]) -> None:
        if not outcomes or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(_deliver, outcomes)
        except RuntimeError:
            # The loop is closed: nobody is left to wait for these results.
            _log.warning("%s: event loop closed, %d results dropped", self._name, len(outcomes))

    def _main(self) -> None:
        assert self._started is not None
        conn: sqlite3.Connection | None = None
        try:
            conn = connect(self._path, read_only=self._read_only)
            init_result = self._init(conn) if self._init is not None else None
        except BaseException as exc:
            if conn is not None:
                conn.close()
            err = translate(exc, f"{self._name}: cannot start")
            self._post([(self._started, None, _with_cause(err, exc))])
            return
        self._post([(self._started, init_result, None)])
        try:
            self._serve(conn)
        except BaseException as exc:  # a bug in this module; never leave callers hanging
            _log.exception("%s died", self._name)
            if self._loop is not None:
                # On the loop thread, so no `run()` can slip a request in after the drain.
                # RuntimeError: the loop is closed and nobody is waiting any more.
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._died, exc)
            raise
        finally:
            conn.close()

    def _died(self, exc: BaseException) -> None:
        self._accepting = False
        self._fail_queued(Unavailable(f"{self._name} died: {exc!r}"))

    def _fail_queued(self, error: StorageError) -> None:
        outcomes: list[_Outcome] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Request):
                outcomes.append((item.future, None, error))
        self._post(outcomes)

    def _serve(self, conn: sqlite3.Connection) -> None:
        stop = False
        while not stop:
            batch: list[_Request] = []
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stop = True
                    break
                assert isinstance(item, _Request)
                batch.append(item)
                if len(batch) >= self._batch_max:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if not batch:
                continue
            try:
                outcomes = self._run_reads(conn, batch) if self._read_only else self._run_writes(conn, batch)
            except BaseException as exc:
                self._post([(r.future, None, Unavailable(f"{self._name} died: {exc!r}")) for r in batch])
                raise
            self._post(outcomes)
        # Anything queued after the stop marker raced with stop(): fail it rather than drop it.
        self._fail_queued(Unavailable(f"{self._name}: storage is closed"))

    @staticmethod
    def _run_reads(conn: sqlite3.Connection, batch: list[_Request]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        try:
            conn.execute("BEGIN")  # one snapshot for the batch: multi-query reads are consistent
        except sqlite3.Error as exc:
            err = translate(exc, "begin read")
            return [(r.future, None, _with_cause(err, exc)) for r in batch]
        try:
            for request in batch:
                try:
                    outcomes.append((request.future, request.job(conn), None))
                except Exception as exc:
                    outcomes.append((request.future, None, _with_cause(translate(exc, request.what), exc)))
        finally:
            if conn.in_transaction:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error:
                    conn.execute("ROLLBACK")
        return outcomes

    @staticmethod
    def _run_writes(conn: sqlite3.Connection, batch: list[_Request]) -> list[_Outcome]:
        errors: dict[int, StorageError] = {}
        results: dict[int, Any] = {}
        # Jobs that succeeded inside the open transaction; they fail too if it cannot commit.
        uncommitted: list[int] = []

        def lose_transaction(exc: BaseException, what: str) -> None:
            err = _with_cause(translate(exc, what), exc)
            for i in uncommitted:
                results.pop(i, None)
                errors[i] = err
            uncommitted.clear()
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    _log.exception("rollback failed")

        for i, request in enumerate(batch):
            try:
                if not conn.in_transaction:
                    # IMMEDIATE takes the write lock now, so the batch cannot fail half-way
                    # with SQLITE_BUSY against another process.
                    conn.execute("BEGIN IMMEDIATE")
                conn.execute("SAVEPOINT job")
            except sqlite3.Error as exc:
                lose_transaction(exc, request.what)
                errors[i] = _with_cause(translate(exc, request.what), exc)
                continue
            try:
                result = request.job(conn)
            except Exception as exc:
                errors[i] = _with_cause(translate(exc, request.what), exc)
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back (I/O error, full disk...).
                    lose_transaction(exc, "transaction rolled back")
                    continue
                try:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                except sqlite3.Error as exc2:
                    lose_transaction(exc2, "rollback to savepoint")
                continue
            try:
                conn.execute("RELEASE job")
            except sqlite3.Error as exc:
                errors[i] = _with_cause(translate(exc, request.what), exc)
                lose_transaction(exc, "release savepoint")
                continue
            results[i] = result
            uncommitted.append(i)
        if conn.in_transaction:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                lose_transaction(exc, "commit")
        uncommitted.clear()
        return [(request.future, results.get(i), errors.get(i)) for i, request in enumerate(batch)]
