"""mqim under test: ``python -m mqim.cli serve`` on a fresh data dir, provisioned by its CLI.

Bench users are created through ``mqim user add`` (numbered runs through ``mqim user add-many``),
groups through ``mqim group``. `MqimTarget` holds every command line and provisioning step in one
place.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Literal

from mqim.bench._adapters import IM_RECEIVER, IM_SENDER, AdapterSpec
from mqim.bench._cluster_tools import cluster_unavailable
from mqim.bench._exceptions import TargetError, TargetUnsupported
from mqim.bench._host import LOOPBACK
from mqim.bench._procs import child_env, tail
from mqim.bench._target import ProcessTarget, spawn, stop_processes

CLI_TIMEOUT_S = 60.0
"""How long one provisioning command (`mqim user add`) may run."""

LOGIC_USER = "bench-logic"
"""The service account of the separate `mqim logic` process in the `standalone` scenario."""
LOGIC_READY_TIMEOUT_S = 30.0


async def wait_for_line(proc: asyncio.subprocess.Process, log_path: Path, needle: str, *, what: str) -> None:
    """Wait until `needle` appears in the process's log (bounded); fail if it exits first."""
    deadline = time.monotonic() + LOGIC_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if needle in await asyncio.to_thread(log_path.read_text, errors="replace"):
            return
        if proc.returncode is not None:
            raise TargetError(f"{what} exited with code {proc.returncode}: {tail(log_path)}")
        await asyncio.sleep(0.1)
    raise TargetError(f"{what} not ready within {LOGIC_READY_TIMEOUT_S:.0f} s: {tail(log_path)}")


MEMBERSHIP_FOLLOW_S = 2.0
"""Time a running mqim server takes to notice a group change made by `mqim group`, with margin."""


def _numbered_runs(users: Sequence[str]) -> tuple[list[tuple[str, int, int]], list[str]]:
    """Split ids into contiguous numbered runs (prefix, start, count) of 3+ and the rest."""
    by_prefix: dict[str, list[int]] = {}
    singles: list[str] = []
    for user in users:
        match = re.fullmatch(r"(.*?-)(0|[1-9][0-9]*)", user)
        if match is None:
            singles.append(user)
        else:
            by_prefix.setdefault(match.group(1), []).append(int(match.group(2)))
    runs: list[tuple[str, int, int]] = []
    for prefix, numbers in by_prefix.items():
        numbers.sort()
        start = prev = numbers[0]
        for n in [*numbers[1:], None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            if prev - start + 1 >= 3:
                runs.append((prefix, start, prev - start + 1))
            else:
                singles.extend(f"{prefix}{k}" for k in range(start, prev + 1))
            if n is not None:
                start = prev = n
    return runs, singles


class MqimTarget(ProcessTarget):
    """`mqim serve` on a fresh data dir; bench accounts all share one generated password.

    Everything that depends on mqim's command line is in this class: `command` (serve),
    `user_add_command` and `group_setup_commands`.
    """

    name = "mqim"
    kind: Literal["plain", "im"] = "im"

    USER_ADD_ESTIMATE_S = 0.5
    """Rough cost of one `mqim user add` (interpreter start + scrypt), for the time budget."""
    BULK_ADD_ESTIMATE_S = 0.0002
    """Rough cost per account of `mqim user add-many` (one shared hash, one transaction)."""

    def __init__(self) -> None:
        super().__init__()
        self.password = secrets.token_urlsafe(12)
        self.embedded_logic = True
        self.data_dir: Path | None = None
        self._users: set[str] = set()
        self._groups: set[str] = set()

    CONFIG_NAME = "bench.toml"
    """The configuration `command` writes into the data dir (the group commands read it too)."""

    BENCH_CONFIG = """\
# Written by `mqim bench`: the per-user abuse limits protect a real deployment from one noisy
# account; the benchmark deliberately is that account, so they are raised here, and the group size
# limit (see below), nothing else.
[limits]
max_connections = 60000
publish_rate = 1000000.0
publish_burst = 1000000
connect_rate_per_address = 1000000.0
connect_burst_per_address = 1000000
max_violations = 1000000
# `group --group-size N` makes a group of N members plus its sender (the owner): the default
# limit (10,000) would refuse N = 10,000, the size the Mosquitto comparison is made at.
max_group_members = 1000000
"""

    def command(self, workdir: Path, port: int) -> list[str]:
        data_dir = self._data_dir(workdir)
        config = data_dir / self.CONFIG_NAME
        logic = "" if self.embedded_logic else "\n[logic]\nembedded = false\n"
        config.write_text(self.BENCH_CONFIG + logic)
        return [
            sys.executable, "-m", "mqim.cli", "serve",
            "--port", str(port), "--data-dir", str(data_dir), "--config", str(config),
        ]  # fmt: skip

    def user_add_command(self, user: str) -> list[str]:
        """The command line that creates account `user` with the bench password."""
        assert self.data_dir is not None
        return [
            sys.executable, "-m", "mqim.cli", "user", "add", user,
            "--password", self.password, "--data-dir", str(self.data_dir),
        ]  # fmt: skip

    def users_add_command(self, prefix: str, start: int, count: int) -> list[str]:
        """The command line that creates accounts PREFIX{start}..PREFIX{start+count-1} at once."""
        assert self.data_dir is not None
        return [
            sys.executable, "-m", "mqim.cli", "user", "add-many", prefix, "--count", str(count),
            "--start", str(start), "--password", self.password, "--data-dir", str(self.data_dir),
        ]  # fmt: skip

    def group_setup_commands(
        self, group: str, *, owner: str, members: Sequence[str]
    ) -> list[list[str]] | None:
        """The command lines that create `group` with `owner` and `members` (added in chunks).

        They read the bench configuration, whose group size limit counts the owner too.
        """
        assert self.data_dir is not None
        common = ["--data-dir", str(self.data_dir), "--config", str(self.data_dir / self.CONFIG_NAME)]
        create = [sys.executable, "-m", "mqim.cli", "group", "create", group, "--owner", owner, *common]
        commands = [create]
        rest = [m for m in members if m != owner]
        for offset in range(0, len(rest), 2000):
            chunk = rest[offset : offset + 2000]
            commands.append([sys.executable, "-m", "mqim.cli", "group", "add", group, *chunk, *common])
        return commands

    def _data_dir(self, workdir: Path) -> Path:
        if self.data_dir is None:
            self.data_dir = workdir / "mqim-data"
            self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir

    def adapter_spec(self, run: str) -> AdapterSpec:
        return AdapterSpec(kind="im", run=run, password=self.password)

    async def start(self, workdir: Path) -> None:
        self._data_dir(workdir)
        # The p2p pair exists before the server starts; other accounts are added on demand.
        await self.ensure_users([IM_SENDER, IM_RECEIVER])
        await super().start(workdir)

    def provisioning_estimate_s(self, users: int) -> float:
        new = max(0, users - len(self._users))
        return 2 * self.USER_ADD_ESTIMATE_S + new * self.BULK_ADD_ESTIMATE_S

    async def ensure_users(self, users: Sequence[str]) -> None:
        missing = [u for u in dict.fromkeys(users) if u not in self._users]
        if not missing:
            return
        # Numbered accounts (crowd-0, crowd-1, ...) are created in bulk, one command per
        # contiguous run; the rest one `mqim user add` each, as many at once as there are CPUs.
        runs, singles = _numbered_runs(missing)
        for prefix, start, count in runs:
            await self._run_cli(
                self.users_add_command(prefix, start, count), what=f"mqim user add-many {prefix} ({count})"
            )
            self._users.update(f"{prefix}{n}" for n in range(start, start + count))
        missing = singles
        limit = asyncio.Semaphore(max(1, os.cpu_count() or 1))

        async def add(user: str) -> None:
            async with limit:
                await self._run_cli(self.user_add_command(user), what=f"mqim user add {user}")
                self._users.add(user)

        try:
            async with asyncio.TaskGroup() as tasks:
                for user in missing:
                    tasks.create_task(add(user), name=f"bench-mqim-user-add-{user}")
        except BaseExceptionGroup as group:
            # Report the first failure plainly; the others are usually the same one.
            first = next((e for e in group.exceptions if isinstance(e, TargetError)), None)
            if first is None:
                raise
            raise first from None

    def unsupported(self, scenario: str) -> str | None:
        if scenario == "cluster":
            return cluster_unavailable()
        return None

    @contextlib.asynccontextmanager
    async def standalone_logic(self, workdir: Path, *, workers: int = 1) -> AsyncIterator[None]:
        """Restart `mqim serve` without its embedded logic and run `workers` `mqim logic`
        processes (`--shared` when more than one)."""
        assert self.data_dir is not None
        self.embedded_logic = False
        await self.restart(workdir)
        if LOGIC_USER not in self._users:
            await self._run_cli(
                [*self.user_add_command(LOGIC_USER), "--kind", "service"], what=f"mqim user add {LOGIC_USER}"
            )
            self._users.add(LOGIC_USER)
        url = f"mqtt://{LOGIC_USER}:{self.password}@{LOOPBACK}:{self.port}"
        argv = [sys.executable, "-m", "mqim.cli", "logic", "--broker", url, "--data-dir", str(self.data_dir)]
        if workers > 1:
            argv.append("--shared")
        procs: list[asyncio.subprocess.Process] = []
        try:
            for i in range(workers):
                log_path = workdir / f"mqim-logic-{i}.log"
                with log_path.open("ab") as log:
                    # Each worker its own client id (`--shared` workers split one share group).
                    worker_argv = [*argv, "--client-id", f"{LOGIC_USER}-{i}"] if workers > 1 else argv
                    proc = await spawn(worker_argv, log, what="mqim logic")
                procs.append(proc)
                await wait_for_line(proc, log_path, "logic service connected", what="mqim logic")
            yield
        finally:
            await stop_processes(procs)
            self.embedded_logic = True
            await self.stop()
            # The worker's session is persistent and subscribed to every uplink: kept, the
            # embedded server would queue the next scenarios' requests for the absent worker
            # (held, never acknowledged: `group` and `p2p-crowd` failed after `standalone`).
            # The bench's sessions are disposable; its accounts and messages stay.
            for stale in self.data_dir.glob("sessions.db*"):
                stale.unlink(missing_ok=True)
            await self.start(workdir)

    async def ensure_group(self, group: str, *, owner: str, members: Sequence[str]) -> None:
        if group in self._groups:
            return
        commands = self.group_setup_commands(group, owner=owner, members=members)
        if commands is None:
            raise TargetUnsupported(self.unsupported("group") or "mqim groups cannot be created")
        for argv in commands:
            await self._run_cli(argv, what=" ".join(argv[2:5]))
        # A running server follows membership changes made by the CLI within its poll interval
        # (1 s, see mqim.server._follower); members subscribing before that would be refused.
        await asyncio.sleep(MEMBERSHIP_FOLLOW_S)
        self._groups.add(group)

    async def _run_cli(self, argv: list[str], *, what: str) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=child_env(),
            )
        except OSError as exc:
            raise TargetError(f"cannot run {what}: {exc}") from exc
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise TargetError(f"{what} did not finish within {CLI_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            text = output.decode(errors="replace").strip()[-2000:]
            last = text.splitlines()[-1].strip() if text else ""
            raise TargetError(f"{what} failed (exit code {proc.returncode}): {last}\n{text}")
