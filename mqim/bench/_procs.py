"""The harness's side of a load-generator process: spawn, command, await events, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections import deque
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from mqim.bench._exceptions import WorkerError, WorkerTimeout
from mqim.bench._messages import (
    EVENT_ADAPTER,
    ClientsSpec,
    CompleteEv,
    ConnectCmd,
    CountEv,
    DoneEv,
    ErrorEv,
    GoCmd,
    PublisherSpec,
    ReadyEv,
    ResultEv,
    StartedEv,
    StopCmd,
)

MAX_EVENT_LINE_BYTES = 16 << 20
"""Longest event line read from a worker (a result carries a histogram)."""

MAX_BACKLOG = 100_000
"""Events kept aside while waiting for another kind; more means a worker is misbehaving."""

EXIT_GRACE_S = 5.0
"""How long a worker may take to exit after its stdin closes before it is killed."""

_E = TypeVar("_E", StartedEv, ReadyEv, CompleteEv, DoneEv, ResultEv)
_Event = StartedEv | ReadyEv | CountEv | CompleteEv | DoneEv | ResultEv | ErrorEv


def child_env() -> Mapping[str, str]:
    """The environment of every child process: ours, minus proxy settings (loopback only), with
    plain Python tracebacks from typer programs (their last line then names the error)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["_TYPER_STANDARD_TRACEBACK"] = "1"
    return env


def tail(path: Path, limit: int = 2000) -> str:
    """The last `limit` characters of a log file, or "" if there is none."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace").strip()


class WorkerProcess:
    """One `python -m mqim.bench._worker` child; use `open_worker`."""

    def __init__(self, *, name: str, proc: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.name = name
        self._proc = proc
        self._stderr_path = stderr_path
        self._queue: asyncio.Queue[_Event | None] = asyncio.Queue()
        self._backlog: deque[_Event] = deque()
        self._ended = False
        self.latest_count = CountEv(received=0, distinct=0)
        self._reader = asyncio.create_task(self._read(), name=f"bench-worker-{name}")

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self._proc.pid

    def _failure(self, what: str, kind: type[WorkerError] = WorkerError) -> WorkerError:
        details = tail(self._stderr_path)
        return kind(f"worker {self.name}: {what}" + (f"\n{details}" if details else ""))

    async def _read(self) -> None:
        assert self._proc.stdout is not None
        try:
            while line := await self._proc.stdout.readline():
                try:
                    event = EVENT_ADAPTER.validate_json(line)
                except ValidationError:
                    event = ErrorEv(message=f"unreadable event {line[:200]!r}")
                if isinstance(event, CountEv):
                    self.latest_count = event
                else:
                    self._queue.put_nowait(event)
        except (ValueError, OSError) as exc:  # ValueError: a line longer than the stream limit
            self._queue.put_nowait(ErrorEv(message=f"reading events: {exc}"))
        finally:
            self._queue.put_nowait(None)

    async def send(self, command: ConnectCmd | GoCmd | StopCmd) -> None:
        """Write one command line to the worker."""
        stdin = self._proc.stdin
        if stdin is None or stdin.is_closing():
            raise self._failure("stdin is closed")
        try:
            stdin.write(command.model_dump_json().encode() + b"\n")
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise self._failure("exited early") from exc

    async def expect(self, kind: type[_E], within_s: float) -> _E:
        """Return the next event of type `kind`, keeping others aside for later calls.

        Raises:
            WorkerError: The worker reported an error or exited.
            WorkerTimeout: `within_s` seconds passed first.
        """
        for event in self._backlog:
            if isinstance(event, kind):
                self._backlog.remove(event)
                return event
        try:
            async with asyncio.timeout(within_s):
                while True:
                    got = await self._queue.get()
                    if got is None:
                        self._queue.put_nowait(None)  # later calls see the end too
                        raise self._failure(f"exited (code {await self._proc.wait()}) before {kind.__name__}")
                    if isinstance(got, ErrorEv):
                        raise self._failure(got.message)
                    if isinstance(got, kind):
                        return got
                    if len(self._backlog) >= MAX_BACKLOG:
                        raise self._failure(f"more than {MAX_BACKLOG} unexpected events")
                    self._backlog.append(got)
        except TimeoutError as exc:
            raise self._failure(f"no {kind.__name__} within {within_s:.0f} s", WorkerTimeout) from exc

    async def close(self) -> None:
        """Close the worker's stdin (it disconnects and exits), killing it if it lingers."""
        if self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), EXIT_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
        await self._reader


@contextlib.asynccontextmanager
async def open_worker(
    spec: ClientsSpec | PublisherSpec, *, name: str, log_dir: Path
) -> AsyncIterator[WorkerProcess]:
    """Start a worker with `spec`; it is stopped (and if need be killed) on exit.

    Raises:
        WorkerError: The process could not be started.
    """
    stderr_path = log_dir / f"worker-{name}.log"
    with stderr_path.open("wb") as stderr:
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "mqim.bench._worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=child_env(),
                limit=MAX_EVENT_LINE_BYTES,
            )
        except OSError as exc:
            raise WorkerError(f"cannot start worker {name}: {exc}") from exc
    worker = WorkerProcess(name=name, proc=proc, stderr_path=stderr_path)
    try:
        assert proc.stdin is not None
        proc.stdin.write(spec.model_dump_json().encode() + b"\n")
        yield worker
    finally:
        await worker.close()
