"""Cluster test fixtures: a real Redis, a SecantusDB and broker nodes in-process on loopback."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mqim.broker import BrokerSettings, Listener
from mqim.cluster import ClusterSettings
from mqim.server import ClusterServer
from mqim.storage import AccountKind, MongoStorage
from tests.conftest import PASSWORD
from tests.support.mqtt import Paho
from tests.support.servers import MongoServer, RedisServer, mongo_proc, redis_server

__all__ = ["Cluster", "mongo_proc"]

# Fast failure detection for tests; production defaults are in ClusterSettings.
HEARTBEAT_S = 0.25
NODE_TTL_S = 1.5


def cluster_settings(node_id: str) -> ClusterSettings:
    return ClusterSettings(
        node_id=node_id, heartbeat_s=HEARTBEAT_S, node_ttl_s=NODE_TTL_S, resync_s=2.0, kick_timeout_s=2.0
    )


class Cluster:
    """Nodes of one test cluster (one Redis, one MongoDB database) and their clients."""

    def __init__(self, *, redis: RedisServer, mongo: MongoServer, tmp_path: Path) -> None:
        self.redis = redis
        self.mongo = mongo
        self.database = f"t{uuid.uuid4().hex[:10]}"
        self.tmp_path = tmp_path
        self.nodes: dict[str, ClusterServer] = {}
        self._stacks: dict[str, contextlib.AsyncExitStack] = {}
        self._clients: list[Paho] = []
        self._ids = itertools.count(1)
        self.token = uuid.uuid4().hex[:6]
        self.admin = MongoStorage(url=mongo.url, database=self.database)

    def server(self, node_id: str, *, embedded_logic: bool = True) -> ClusterServer:
        return ClusterServer(
            node_id=node_id,
            redis_url=self.redis.url,
            mongo_url=self.mongo.url,
            database=self.database,
            data_dir=self.tmp_path / node_id,
            listeners=[Listener(name="default", port=0)],
            settings=BrokerSettings(connect_timeout_s=3.0),
            cluster=cluster_settings(node_id),
            embedded_logic=embedded_logic,
        )

    async def start(self, node_id: str, **kwargs: Any) -> ClusterServer:
        stack = contextlib.AsyncExitStack()
        node = await stack.enter_async_context(self.server(node_id, **kwargs))
        self.nodes[node_id] = node
        self._stacks[node_id] = stack
        return node

    async def stop(self, node_id: str) -> None:
        self.nodes.pop(node_id)
        await self._stacks.pop(node_id).aclose()

    async def add_user(self, name: str, *, kind: AccountKind = AccountKind.USER) -> str:
        user = f"{name}-{self.token}"
        await self.admin.add_user(user, password=PASSWORD, kind=kind)
        return user

    def client(self, node_id: str, user: str, *, client_id: str | None = None, **kwargs: Any) -> Paho:
        cid = client_id if client_id is not None else f"{user}-c{next(self._ids)}"
        client = Paho(port=self.nodes[node_id].port(), user=user, password=PASSWORD, client_id=cid, **kwargs)
        self._clients.append(client)
        return client

    async def connected(self, node_id: str, user: str, **kwargs: Any) -> Paho:
        client = self.client(node_id, user, **kwargs)
        await client.connect()
        return client

    async def close(self) -> None:
        for client in self._clients:
            with contextlib.suppress(Exception):  # best-effort cleanup of test clients
                client.close()
        for node_id in list(self._stacks):
            await self.stop(node_id)
        await self.admin.close()


@pytest.fixture
def redis_durable(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with append-only fsync-always persistence (survives restarts)."""
    with redis_server(data_dir=tmp_path / "redis") as server:
        yield server


@pytest.fixture
async def cluster(
    redis_durable: RedisServer, mongo_proc: MongoServer, tmp_path: Path
) -> AsyncIterator[Cluster]:
    c = Cluster(redis=redis_durable, mongo=mongo_proc, tmp_path=tmp_path)
    await c.admin.open()
    try:
        yield c
    finally:
        await c.close()
