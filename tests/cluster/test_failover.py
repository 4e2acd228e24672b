"""Failures: `kill -9` of a node during a steady QoS1 stream; a Redis restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.cluster.conftest import Cluster
from tests.cluster.nodeproc import node_process
from tests.cluster.test_routing import _wait_routes
from tests.conftest import PASSWORD
from tests.support.mqtt import Paho, Received

pytestmark = pytest.mark.slow


async def test_kill_9_of_a_node_loses_no_acknowledged_message(cluster: Cluster, tmp_path: Path) -> None:
    await cluster.start("n1")
    await cluster.start("n3")
    alice, bob = await cluster.add_user("alice"), await cluster.add_user("bob")
    async with node_process(cluster, "n2", tmp_path) as node:
        port = node.port
        alice_c = await cluster.connected("n1", alice)
        bob_on_n2 = Paho(
            port=port, user=bob, password=PASSWORD, client_id=f"{bob}-phone", clean_session=False
        )
        await bob_on_n2.connect()
        try:
            await _wait_routes(cluster, f"im/v1/u/{bob}/#", ["n2"], on="n1")
            total, kill_at = 40, 12
            for n in range(total):
                if n == kill_at:
                    node.kill()  # SIGKILL: nothing flushed, nothing acknowledged after this
                # `publish` asserts the PUBACK: every message here was acknowledged to alice.
                await alice_c.publish(
                    f"im/v1/up/{alice}/msg", {"v": 1, "id": f"k-{n}", "to": bob, "text": f"k{n}"}
                )
        finally:
            bob_on_n2.drop()
    seen = set()
    while not bob_on_n2.messages.empty():
        msg = bob_on_n2.messages.get_nowait()
        if msg.topic.endswith("/msg"):
            seen.add(msg.json()["text"])
    # Its client reconnects to another node and resumes its persistent session there.
    bob_back = cluster.client("n1", bob, client_id=f"{bob}-phone", clean_session=False)
    present, rc = await bob_back.connect()
    assert (present, rc) == (True, 0)
    expected = {f"k{n}" for n in range(total)}
    for _ in range(total * 2):
        if expected <= seen:
            break
        seen.add((await bob_back.receive_on("/msg", timeout=15)).json()["text"])
    assert expected <= seen, sorted(expected - seen)
    # The dead node was adopted and left the registry.
    for _ in range(100):
        if "n2" not in cluster.nodes["n1"].link.routes.nodes:
            break
        await asyncio.sleep(0.05)
    assert "n2" not in cluster.nodes["n1"].link.routes.nodes


async def test_redis_restart_is_survived(cluster: Cluster) -> None:
    await cluster.start("n1")
    await cluster.start("n2")
    alice, bob, carol = [await cluster.add_user(n) for n in ("alice", "bob", "carol")]
    alice_c = await cluster.connected("n1", alice)
    bob_c = await cluster.connected("n2", bob, client_id=f"{bob}-phone", clean_session=False)
    await _wait_routes(cluster, f"im/v1/u/{bob}/#", ["n2"], on="n1")
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "r-0", "to": bob, "text": "before"})
    assert (await bob_c.receive_on("/msg")).json()["text"] == "before"

    await asyncio.to_thread(cluster.redis.stop)
    # Meanwhile: a new client is refused clearly (CONNACK 3, server unavailable), not half-served.
    carol_c = cluster.client("n1", carol)
    await carol_c.connect(expect_rc=3)
    carol_c.close()
    # A message sent during the outage: its PUBACK means stored (DESIGN.md section 4), so it is
    # either acknowledged, or the node fences first and closes the connection without the
    # PUBACK; then the client still has it and sends it again (same id) once it is back.
    during = {"v": 1, "id": "r-1", "to": bob, "text": "during"}
    during_info = alice_c.client.publish(f"im/v1/up/{alice}/msg", json.dumps(during), qos=1)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(cluster.redis.start)

    # The outage outlasted the fence window (`cluster/_fence.py`): both nodes stopped serving
    # (closed their connections), and rejoined once Redis answered, n2 reloading bob's session.
    for node in ("n1", "n2"):
        link = cluster.nodes[node].link
        for _ in range(200):
            if link.healthy and link.fence.serving:
                break
            await asyncio.sleep(0.05)
        assert link.healthy
        assert link.fence.serving
        assert link.counters.get("redis_errors", 0) >= 1  # the outage was seen and reported
    seen = [m.json()["text"] for m in _drain(bob_c) if m.topic.endswith("/msg")]
    if cluster.nodes["n2"].link.counters.get("fenced"):
        alice_c.close()
        bob_c.close()
        alice_c = await cluster.connected("n1", alice, client_id=f"{alice}-back")
        bob_c = cluster.client("n2", bob, client_id=f"{bob}-phone", clean_session=False)
        assert (await bob_c.connect()) == (True, 0)
    if not during_info.is_published():
        await alice_c.publish(f"im/v1/up/{alice}/msg", during)
    if "during" not in seen:
        assert (await bob_c.receive_on("/msg", timeout=20)).json()["text"] == "during"
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "r-2", "to": bob, "text": "after"})
    assert (await bob_c.receive_on("/msg")).json()["text"] == "after"
    carol_again = await cluster.connected("n1", carol)
    carol_again.close()
    # Both nodes are still registered and alive, and not adopted by each other.
    assert cluster.nodes["n1"].link.routes.filters_of("n2")
    assert cluster.nodes["n2"].broker is not None
    assert f"{bob}-phone" in cluster.nodes["n2"].broker.hub.sessions


def _drain(client: Paho) -> list[Received]:
    out = []
    while not client.messages.empty():
        out.append(client.messages.get_nowait())
    return out
