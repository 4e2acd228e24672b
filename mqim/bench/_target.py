"""The contract of a broker under test (`Target`) and the base of those started as a child process.

Every started process is stopped at the end: SIGTERM, a bounded wait, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Literal

from mqim.bench._adapters import AdapterSpec
from mqim.bench._exceptions import TargetError, TargetUnsupported
from mqim.bench._host import LOOPBACK, free_port, process_tree_cpu_s, process_tree_rss
from mqim.bench._procs import child_env, tail

START_TIMEOUT_S = 20.0
"""How long a started broker may take to accept TCP connections."""

STOP_TIMEOUT_S = 10.0
"""How long a broker may take to exit after SIGTERM before it is killed."""


class Target(ABC):
    """A broker under test. `start` before use, `stop` at the end (always)."""

    name: str
    kind: Literal["plain", "im"] = "plain"
    restartable = True

    def __init__(self) -> None:
        self.host = LOOPBACK
        self.port = 0

    @property
    def pid(self) -> int | None:
        """The broker's process id, when the harness started it."""
        return None

    @abstractmethod
    async def start(self, workdir: Path) -> None:
        """Start (or reach) the broker; `workdir` is a private scratch directory.

        Raises:
            TargetError: It could not be started or reached.
        """

    @abstractmethod
    async def stop(self) -> None:
        """Stop the broker if the harness started it. Never raises for an already dead process."""

    async def restart(self, workdir: Path) -> None:
        """Stop and start again (a fresh process for a scenario that measures memory)."""
        await self.stop()
        await self.start(workdir)

    def adapter_spec(self, run: str) -> AdapterSpec:
        """How load generators talk to this target in measurement `run`."""
        return AdapterSpec(kind="plain", run=run)

    async def ensure_users(self, users: Sequence[str]) -> None:
        """Make sure the accounts `users` exist (only mqim has accounts)."""
        return None

    async def ensure_group(self, group: str, *, owner: str, members: Sequence[str]) -> None:
        """Make sure `group` exists with `owner` and `members` (only mqim has groups)."""
        return None

    def provisioning_estimate_s(self, users: int) -> float:
        """Rough time `ensure_users` needs for `users` new accounts (for the time budget)."""
        return 0.0

    def unsupported(self, scenario: str) -> str | None:
        """Why this target cannot run `scenario` (yet), or None if it can."""
        if scenario == "standalone":
            return "no separate logic service: its p2p figure is already a bare relay"
        if scenario == "cluster":
            return "cluster mode (nodes sharing Redis and MongoDB) is mqim's own"
        return None

    def standalone_logic(
        self, workdir: Path, *, workers: int = 1
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Run the IM logic as `workers` separate processes for the duration of the block (mqim
        only; more than one share the uplinks)."""
        raise TargetUnsupported(self.unsupported("standalone") or "not supported")

    def rss_bytes(self) -> int | None:
        """The broker's resident memory (its whole process tree), if the harness started it."""
        pid = self.pid
        return process_tree_rss(pid) if pid is not None else None

    def cpu_seconds(self) -> float | None:
        """CPU time the broker (its whole process tree) used so far, if the harness started it."""
        pid = self.pid
        return process_tree_cpu_s(pid) if pid is not None else None

    def describe(self) -> str:
        """`name host:port (pid N)` for progress lines."""
        pid = f" (pid {self.pid})" if self.pid is not None else ""
        return f"{self.name} {self.host}:{self.port}{pid}"


class ProcessTarget(Target):
    """A broker that runs as a child process of the harness."""

    def __init__(self) -> None:
        super().__init__()
        self._proc: asyncio.subprocess.Process | None = None
        self._log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @abstractmethod
    def command(self, workdir: Path, port: int) -> list[str]:
        """The command line that starts the broker listening on LOOPBACK:`port`."""

    async def start(self, workdir: Path) -> None:
        port = free_port()
        argv = self.command(workdir, port)
        self._log_path = workdir / f"{self.name}.log"
        with self._log_path.open("ab") as log:
            self._proc = await spawn(argv, log, what=self.name)
        self.port = port
        await self._wait_listening()

    async def _wait_listening(self) -> None:
        proc = self._proc
        assert proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while True:
            if proc.returncode is not None:
                log = self.log_tail()
                last = next((line for line in reversed(log.splitlines()) if line.strip()), "")
                # First line: the gist (a traceback's last line names the error); then the log.
                raise TargetError(f"{self.name} exited with code {proc.returncode}: {last.strip()}\n{log}")
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 1.0)
            except (OSError, TimeoutError):
                if loop.time() > deadline:
                    await self.stop()
                    raise TargetError(
                        f"{self.name} did not listen on {self.host}:{self.port} within {START_TIMEOUT_S} s: "
                        f"{self.log_tail()}"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    def log_tail(self) -> str:
        """The end of the broker's log (stdout and stderr)."""
        return tail(self._log_path) if self._log_path else ""

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        await stop_processes([proc])


async def stop_processes(procs: Sequence[asyncio.subprocess.Process]) -> None:
    """Terminate `procs` together, then kill each one still running after `STOP_TIMEOUT_S`."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def spawn(argv: Sequence[str], log: IO[bytes], *, what: str) -> asyncio.subprocess.Process:
    """Start `argv` with no stdin and its output in `log`; `TargetError` if it cannot start."""
    try:
        return await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=child_env()
        )
    except OSError as exc:
        raise TargetError(f"cannot start {what} ({argv[0]}): {exc}") from exc
