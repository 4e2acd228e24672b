"""Sessions across nodes: a persistent client returns on another node; client-id takeover."""

from __future__ import annotations

import asyncio

from tests.cluster.conftest import Cluster
from tests.cluster.test_routing import _wait_routes


async def test_persistent_client_moves_from_node2_to_node1_and_gets_what_it_missed(cluster: Cluster) -> None:
    for node in ("n1", "n2", "n3"):
        await cluster.start(node)
    alice, bob = await cluster.add_user("alice"), await cluster.add_user("bob")
    alice_c = await cluster.connected("n3", alice)
    bob_away = await cluster.connected("n2", bob, client_id=f"{bob}-phone", clean_session=False)
    await _wait_routes(cluster, f"im/v1/u/{bob}/#", ["n2"], on="n3")
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "m-0", "to": bob, "text": "seen"})
    assert (await bob_away.receive_on("/msg")).json()["text"] == "seen"
    bob_away.close()
    await asyncio.sleep(0.2)

    for n in range(1, 6):
        await alice_c.publish(
            f"im/v1/up/{alice}/msg", {"v": 1, "id": f"m-{n}", "to": bob, "text": f"missed {n}"}
        )
    for _ in range(5):
        await alice_c.receive_on("/ack")  # stored and fanned out (queued for bob on node 2's session)

    bob_back = cluster.client("n1", bob, client_id=f"{bob}-phone", clean_session=False)
    present, rc = await bob_back.connect()
    assert (present, rc) == (True, 0)
    texts = [(await bob_back.receive_on("/msg")).json()["text"] for _ in range(5)]
    assert texts == [f"missed {n}" for n in range(1, 6)]
    # The session now lives on node 1 only: new messages reach it there, once.
    assert f"{bob}-phone" not in cluster.nodes["n2"].broker.hub.sessions  # type: ignore[union-attr]
    await _wait_routes(cluster, f"im/v1/u/{bob}/#", ["n1"], on="n3")
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "m-9", "to": bob, "text": "live"})
    assert (await bob_back.receive_on("/msg")).json()["text"] == "live"
    await bob_back.nothing(0.3, suffix="/msg")


async def test_client_id_takeover_across_nodes(cluster: Cluster) -> None:
    for node in ("n1", "n2", "n3"):
        await cluster.start(node)
    alice, bob = await cluster.add_user("alice"), await cluster.add_user("bob")
    alice_c = await cluster.connected("n1", alice)
    first = await cluster.connected("n2", bob, client_id=f"{bob}-laptop", clean_session=False)
    second = cluster.client("n3", bob, client_id=f"{bob}-laptop", clean_session=False)
    present, rc = await second.connect()
    assert (present, rc) == (True, 0)
    # The old connection on node 2 is closed by node 2 (cluster-wide takeover).
    assert await asyncio.to_thread(first.disconnected.wait, 10)
    n2 = cluster.nodes["n2"].broker
    assert n2 is not None
    assert f"{bob}-laptop" not in n2.hub.sessions

    await _wait_routes(cluster, f"im/v1/u/{bob}/#", ["n3"], on="n1")
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "t-1", "to": bob, "text": "to the new one"})
    assert (await second.receive_on("/msg")).json()["text"] == "to the new one"
    await first.nothing(0.3, suffix="/msg")


async def test_a_node_starts_with_only_the_sessions_it_owns(cluster: Cluster) -> None:
    await cluster.start("n1")
    bob = await cluster.add_user("bob")
    away = await cluster.connected("n1", bob, client_id=f"{bob}-phone", clean_session=False)
    away.close()
    await cluster.start("n2")
    n1, n2 = cluster.nodes["n1"].broker, cluster.nodes["n2"].broker
    assert n1 is not None
    assert n2 is not None
    assert f"{bob}-phone" in n1.hub.sessions
    assert f"{bob}-phone" not in n2.hub.sessions  # loaded on demand, when its client connects
    back = await cluster.connected("n2", bob, client_id=f"{bob}-phone", clean_session=False)
    assert back.connack == (True, 0)
    assert f"{bob}-phone" in n2.hub.sessions
    assert f"{bob}-phone" not in n1.hub.sessions
