"""New direct contacts reach every node: presence permission between users on different nodes."""

from __future__ import annotations

import asyncio

from mqim.protocol import presence_topic
from tests.cluster.conftest import Cluster
from tests.cluster.test_routing import _wait_routes
from tests.support.mqtt import Paho

DENIED = 0x80


async def _granted_eventually(client: Paho, topic: str) -> int:
    """SUBSCRIBE until granted (the contact travels through the cluster), bounded."""
    code = DENIED
    for _ in range(100):
        code = await client.subscribe(topic)
        if code != DENIED:
            return code
        await asyncio.sleep(0.05)
    return code


async def test_a_first_message_lets_both_users_watch_each_other_on_any_node(cluster: Cluster) -> None:
    for node in ("n1", "n2", "n3"):
        await cluster.start(node)
    alice, bob = await cluster.add_user("alice"), await cluster.add_user("bob")
    alice_c = await cluster.connected("n1", alice)
    bob_c = await cluster.connected("n2", bob)
    # Not contacts yet: neither may watch the other.
    assert await bob_c.subscribe(presence_topic(alice)) == DENIED
    await _wait_routes(cluster, f"im/v1/u/{bob}/#", ["n2"], on="n1")

    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "first", "to": bob, "text": "hi"})
    assert (await alice_c.receive_on("/ack")).json()["seq"] == 1
    assert (await bob_c.receive_on("/msg")).json()["text"] == "hi"

    # bob's node never saw alice's ack; it learns the contact from the announcement.
    assert await _granted_eventually(bob_c, presence_topic(alice)) == 1
    assert await alice_c.subscribe(presence_topic(bob)) == 1
    # n3 routed neither the ack nor the message: a device of bob connecting there later may
    # watch alice too.
    bob_tablet = await cluster.connected("n3", bob)
    assert await _granted_eventually(bob_tablet, presence_topic(alice)) == 1
    assert alice in cluster.nodes["n3"].membership.contacts_of(bob)
