"""A cluster node killed right after PUBACKing a stream of uplinks: every acknowledged one is stored.

The sender is a plain paho client on a node process; the node's embedded logic stores each
request in the shared MongoDB before its PUBACK leaves, so SIGKILL of that node loses none of
them, and a surviving node serves the conversation afterwards.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqim.protocol import direct_conv
from tests.cluster.conftest import Cluster
from tests.cluster.nodeproc import node_process
from tests.conftest import PASSWORD

pytestmark = pytest.mark.slow

COUNT = 2_000


async def test_kill_9_of_the_senders_node_after_the_last_puback_loses_nothing(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full-speed stream is above the per-user abuse limit (100/s); this test is about durability.
    monkeypatch.setenv("MQIM_LIMITS__PUBLISH_RATE", "1000000")
    monkeypatch.setenv("MQIM_LIMITS__PUBLISH_BURST", "1000000")
    await cluster.start("n1")
    alice, bob = await cluster.add_user("alice"), await cluster.add_user("bob")
    acked = 0
    done = threading.Event()

    def on_publish(client: object, userdata: object, mid: int, reason: object, props: object) -> None:
        nonlocal acked
        acked += 1
        if acked == COUNT:
            done.set()

    async with node_process(cluster, "n2", tmp_path) as node:
        sender = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{alice}-dev", clean_session=False, protocol=paho.MQTTv311
        )
        sender.username_pw_set(alice, PASSWORD)
        sender.max_inflight_messages_set(100)
        sender.on_publish = on_publish
        sender.connect("127.0.0.1", node.port, keepalive=30)
        sender.loop_start()
        try:
            for n in range(COUNT):
                body = json.dumps({"v": 1, "id": f"m-{n}", "to": bob, "text": f"message {n}"})
                sender.publish(f"im/v1/up/{alice}/msg", body, qos=1)
            assert await asyncio.to_thread(done.wait, 240), f"only {acked} PUBACKs"
        finally:
            node.kill()  # SIGKILL right after the last PUBACK
            sender.loop_stop()
    messages = await cluster.admin.get_messages(direct_conv(alice, bob), after_seq=0, limit=COUNT + 10)
    ids = [m.client_id for m in messages]
    assert len(ids) == len(set(ids)) == COUNT
    # The survivor serves the conversation: bob, connecting to n1, can fetch what was stored.
    bob_c = await cluster.connected("n1", bob)
    await bob_c.publish(f"im/v1/up/{bob}/history", {"v": 1, "id": "h-1", "conv": direct_conv(alice, bob)})
    page = (await bob_c.receive_on("/history", timeout=30)).json()
    assert page["messages"], page
