"""Messages between clients on different nodes: direct, in order; groups across three nodes."""

from __future__ import annotations

import asyncio

from tests.cluster.conftest import Cluster
from tests.e2e._im import cmd_ok


async def _wait_routes(cluster: Cluster, topic_filter: str, nodes: list[str], *, on: str) -> None:
    """Until node `on` knows that every node of `nodes` subscribes to `topic_filter` (bounded)."""
    link = cluster.nodes[on].link
    for _ in range(200):
        if all(topic_filter in link.routes.filters_of(n) for n in nodes):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{on} never learned the routes of {nodes} for {topic_filter}")


async def test_direct_messages_cross_nodes_in_order(cluster: Cluster) -> None:
    for node in ("n1", "n2", "n3"):
        await cluster.start(node)
    alice, bob = await cluster.add_user("alice"), await cluster.add_user("bob")
    alice_c = await cluster.connected("n1", alice)
    bob_c = await cluster.connected("n3", bob)
    await _wait_routes(cluster, f"im/v1/u/{bob}/#", ["n3"], on="n1")

    for n in range(20):
        await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": f"c-{n}", "to": bob, "text": f"hi {n}"})
    texts = [(await bob_c.receive_on("/msg")).json()["text"] for _ in range(20)]
    assert texts == [f"hi {n}" for n in range(20)]
    acks = [(await alice_c.receive_on("/ack")).json() for _ in range(20)]
    assert [a["seq"] for a in acks] == list(range(1, 21))


async def test_group_with_members_on_three_nodes(cluster: Cluster) -> None:
    for node in ("n1", "n2", "n3"):
        await cluster.start(node)
    alice, bob, carol = [await cluster.add_user(n) for n in ("alice", "bob", "carol")]
    alice_c = await cluster.connected("n1", alice)
    bob_c = await cluster.connected("n2", bob)
    carol_c = await cluster.connected("n3", carol)
    group = f"team-{cluster.token}"
    await cmd_ok(alice_c, alice, "group.create", group=group, name="Team", members=[bob, carol])
    await _wait_routes(cluster, f"im/v1/g/{group}/#", ["n2", "n3"], on="n1")

    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "g-1", "group": group, "text": "hi all"})
    for client in (alice_c, bob_c, carol_c):
        msg = await client.receive_on(f"{group}/msg")
        assert msg.json()["text"] == "hi all"
    await bob_c.nothing(0.3, suffix="/msg")  # exactly once
    await carol_c.nothing(0.0, suffix="/msg")
