"""`mqim cluster status`: nodes, clients per node, queue depths, stream lag."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from mqim.cluster import ClusterError
from tests.cluster.conftest import Cluster


async def _cli(cluster: Cluster, *extra: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mqim.cli", "cluster", "status", "--redis", cluster.redis.url, *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def _status(cluster: Cluster) -> list[dict[str, object]]:
    doc = json.loads(await _cli(cluster, "--json"))
    nodes = doc["nodes"]
    assert isinstance(nodes, list)
    assert isinstance(doc["deaths"], list)
    return nodes


async def test_status_lists_nodes_with_their_clients(cluster: Cluster) -> None:
    await cluster.start("n1")
    await cluster.start("n2")
    alice = await cluster.add_user("alice")
    await cluster.connected("n2", alice, client_id=f"{alice}-phone", clean_session=False)
    for _ in range(100):  # the next heartbeat carries the connection
        beat = cluster.nodes["n2"].link.info
        if beat.get("connections") == 1:
            break
        await asyncio.sleep(0.05)
    nodes = {n["node_id"]: n for n in await _status(cluster)}
    assert set(nodes) == {"n1", "n2"}
    assert nodes["n1"]["alive"]
    assert nodes["n2"]["alive"]
    n2 = nodes["n2"]
    assert isinstance(n2["heartbeat"], dict)
    assert n2["heartbeat"]["connections"] == 1
    assert n2["owned_sessions"] == 1
    assert n2["pending"] == 0
    table = (await _cli(cluster)).splitlines()
    assert table[0].split()[:3] == ["node", "state", "conns"]
    assert table[2].split()[:3] == ["n2", "up", "1"]


async def test_a_node_id_in_use_is_refused(cluster: Cluster) -> None:
    await cluster.start("n1")
    with pytest.raises(ClusterError, match="in use"):
        await cluster.start("n1")
    assert cluster.nodes["n1"].link.healthy  # the running node is untouched
