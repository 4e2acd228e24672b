"""The processes of a bench cluster: Redis, SecantusDB (MongoDB wire protocol) and `mqim broker` nodes.

Used by the `cluster` scenario::

    async with open_cluster(workdir, users=["alice", "bob"]) as cluster:
        cluster.nodes[0].port, cluster.nodes[-1].port

Each one is a child process on a free loopback port (a `ProcessTarget`: SIGTERM, a bounded wait,
then SIGKILL). SecantusDB is a test and bench tool: it is only ever started as
``python -m secantus``, never imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mqim.bench._cluster_tools import redis_server_binary
from mqim.bench._exceptions import TargetError
from mqim.bench._host import LOOPBACK
from mqim.bench._mqim_target import MqimTarget, wait_for_line
from mqim.bench._target import ProcessTarget

CLUSTER_DATABASE = "mqim-bench"
"""MongoDB database of the bench cluster (a fresh SecantusDB each run)."""

CLUSTER_PREFIX = "mqim-bench"
"""Redis key prefix of the bench cluster's nodes."""


class RedisProcess(ProcessTarget):
    """A throw-away redis-server: no persistence, data in the work directory."""

    name = "redis"

    def command(self, workdir: Path, port: int) -> list[str]:
        binary = redis_server_binary()
        if binary is None:
            raise TargetError("redis-server is not installed")
        return [
            binary, "--port", str(port), "--bind", LOOPBACK, "--dir", str(workdir),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "",
        ]  # fmt: skip

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"


class SecantusProcess(ProcessTarget):
    """SecantusDB (``python -m secantus``) with its data in the work directory."""

    name = "secantus"

    def command(self, workdir: Path, port: int) -> list[str]:
        # An empty config file: otherwise it would read a `secantusd.toml` of the machine.
        config = workdir / "secantusd.toml"
        config.touch()
        return [
            sys.executable, "-m", "secantus", "--config", str(config), "--host", LOOPBACK,
            "--port", str(port), "--storage-path", str(workdir / "secantus-data"), "--log-level", "WARNING",
        ]  # fmt: skip

    @property
    def url(self) -> str:
        """``mongodb://127.0.0.1:PORT/?directConnection=true``."""
        return f"mongodb://{LOOPBACK}:{self.port}/?directConnection=true"


class ClusterNode(ProcessTarget):
    """One `mqim broker` node with embedded logic, the bench's raised limits and its own data dir.

    Args:
        node_id: The node's id in the cluster.
        redis_url: The cluster's Redis.
        mongo_url: The cluster's MongoDB.
    """

    def __init__(self, *, node_id: str, redis_url: str, mongo_url: str) -> None:
        super().__init__()
        self.name = f"mqim-{node_id}"
        self.node_id = node_id
        self.redis_url = redis_url
        self.mongo_url = mongo_url

    def command(self, workdir: Path, port: int) -> list[str]:
        data_dir = workdir / self.name
        data_dir.mkdir(parents=True, exist_ok=True)
        config = data_dir / "bench.toml"
        config.write_text(MqimTarget.BENCH_CONFIG)
        return [
            sys.executable, "-m", "mqim.cli", "broker", "--node-id", self.node_id,
            "--redis", self.redis_url, "--mongo", self.mongo_url, "--database", CLUSTER_DATABASE,
            "--prefix", CLUSTER_PREFIX, "--port", str(port), "--data-dir", str(data_dir),
            "--config", str(config),
        ]  # fmt: skip

    async def start(self, workdir: Path) -> None:
        await super().start(workdir)
        # The listener opens before the node has joined the cluster; it prints this line after.
        assert self._proc is not None
        assert self._log_path is not None
        await wait_for_line(
            self._proc, self._log_path, f"mqim node {self.node_id} listening", what=f"node {self.node_id}"
        )


@dataclass(frozen=True, kw_only=True)
class RunningCluster:
    """A started bench cluster.

    Attributes:
        nodes: The broker nodes, in start order (`node-1` first).
        redis_url: The cluster's Redis.
        mongo_url: The cluster's MongoDB (SecantusDB).
        password: The password of every bench account.
    """

    nodes: list[ClusterNode]
    redis_url: str
    mongo_url: str
    password: str


async def _add_users(mongo_url: str, users: Sequence[str], password: str) -> None:
    # Deferred: only the cluster scenario needs the MongoDB driver.
    from mqim.storage import MongoStorage, StorageError

    storage = MongoStorage(url=mongo_url, database=CLUSTER_DATABASE)
    try:
        async with asyncio.timeout(MqimTarget.USER_ADD_ESTIMATE_S * 20 + 30.0):
            await storage.open()
            try:
                await storage.add_users(list(users), password=password)
            finally:
                await storage.close()
    except StorageError as exc:
        raise TargetError(f"cannot create the bench accounts in SecantusDB: {exc}") from exc
    except TimeoutError:
        raise TargetError("creating the bench accounts in SecantusDB timed out") from None


async def _start_all(procs: Sequence[ProcessTarget], workdir: Path) -> None:
    """Start `procs` at once; the caller stops them (also those that did start) on failure."""
    try:
        async with asyncio.TaskGroup() as tasks:
            for proc in procs:
                tasks.create_task(proc.start(workdir), name=f"bench-cluster-start-{proc.name}")
    except BaseExceptionGroup as group:
        # Report the first failure plainly; the others are usually the same one.
        first = next((e for e in group.exceptions if isinstance(e, TargetError)), None)
        if first is None:
            raise
        raise first from None


@contextlib.asynccontextmanager
async def open_cluster(
    workdir: Path, *, users: Sequence[str], nodes: int = 3
) -> AsyncIterator[RunningCluster]:
    """Start Redis, SecantusDB and `nodes` broker nodes; create `users`; stop them all on exit.

    Raises:
        TargetError: A process could not be started or the accounts not created.
    """
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        redis, mongo = RedisProcess(), SecantusProcess()
        # Stopped last (callbacks run in reverse): the nodes still talk to them while stopping.
        stack.push_async_callback(mongo.stop)
        stack.push_async_callback(redis.stop)
        await _start_all([redis, mongo], workdir)
        password = secrets.token_urlsafe(12)
        # Before the nodes start, so that the storage schema is created once.
        await _add_users(mongo.url, users, password)
        started = [
            ClusterNode(node_id=f"node-{i}", redis_url=redis.url, mongo_url=mongo.url)
            for i in range(1, nodes + 1)
        ]
        for node in started:
            stack.push_async_callback(node.stop)
        await _start_all(started, workdir)
        yield RunningCluster(nodes=started, redis_url=redis.url, mongo_url=mongo.url, password=password)
