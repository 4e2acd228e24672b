"""A cluster node's /readyz follows its Redis: unready while Redis is stopped, ready once it is back."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from mqim.admin import AdminOptions
from mqim.broker import BrokerSettings, Listener
from mqim.server import ClusterServer
from tests.cluster.conftest import Cluster, cluster_settings
from tests.support.servers import RedisServer


def readyz(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + "readyz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def wait_readyz(url: str, status: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for _ in range(100):
        code, doc = await asyncio.to_thread(readyz, url)
        if code == status:
            return doc
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz never answered {status}: {doc}")


async def test_readyz_follows_redis(cluster: Cluster, redis_durable: RedisServer) -> None:
    node = ClusterServer(
        node_id="r1",
        redis_url=cluster.redis.url,
        mongo_url=cluster.mongo.url,
        database=cluster.database,
        data_dir=cluster.tmp_path / "r1",
        listeners=[Listener(name="default", port=0)],
        settings=BrokerSettings(connect_timeout_s=3.0),
        cluster=cluster_settings("r1"),
        admin=AdminOptions(port=0),
    )
    async with node:
        assert node.observability is not None
        assert node.observability.admin is not None
        url = node.observability.admin.url
        doc = await wait_readyz(url, 200)
        assert set(doc["checks"]) == {"listeners", "mongodb", "redis", "cluster"}
        redis_durable.stop()
        doc = await wait_readyz(url, 503)
        assert not doc["checks"]["redis"]["ok"]
        assert doc["checks"]["mongodb"]["ok"]
        redis_durable.start()
        doc = await wait_readyz(url, 200)
        assert doc["checks"]["redis"]["ok"]
