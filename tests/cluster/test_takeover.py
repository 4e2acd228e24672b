"""Failover orders: a double takeover held at a point the test controls, and a paused node.

The adoption is held with the `ClusterKeys.hold_adopt` key (the adopter waits while it exists,
after taking the dead node's sessions over and before draining its stream), so the reconnect of
the recipient lands inside the adoption every time, whichever node wins the adoption lock.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mqim.cluster._keys import ClusterKeys
from tests.cluster.conftest import NODE_TTL_S, Cluster
from tests.cluster.nodeproc import node_process
from tests.cluster.test_routing import _wait_routes
from tests.conftest import PASSWORD
from tests.support.mqtt import Paho, Received

pytestmark = pytest.mark.slow

KEYS = ClusterKeys("mqim")


@pytest.fixture
async def admin_redis(cluster: Cluster) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(cluster.redis.url)
    try:
        yield client
    finally:
        await client.delete(KEYS.hold_adopt)
        await client.aclose()


def _drain(client: Paho) -> list[Received]:
    out = []
    while not client.messages.empty():
        out.append(client.messages.get_nowait())
    return out


def _texts(messages: list[Received]) -> list[str]:
    return [m.json()["text"] for m in messages if m.topic.endswith("/msg")]


def _duplicates(messages: list[Received]) -> dict[str, int]:
    """Texts delivered more than once as a new delivery (DUP 0) on one connection."""
    counts = collections.Counter(m.json()["text"] for m in messages if m.topic.endswith("/msg") and not m.dup)
    return {text: n for text, n in counts.items() if n > 1}


async def _collect(client: Paho, expected: set[str], already: set[str], rounds: int) -> list[Received]:
    got: list[Received] = []
    for _ in range(rounds):
        if expected <= already | set(_texts(got)):
            break
        try:
            got.append(await client.receive(timeout=10))
        except AssertionError:
            break
    await client.nothing(wait=0.5)  # late copies, if any, show up as duplicates
    got.extend(_drain(client))
    return got


class Sender:
    def __init__(self, client: Paho, sender: str, to: str) -> None:
        self.client, self.sender, self.to = client, sender, to
        self.sent: list[str] = []

    async def send(self, n: int = 1) -> None:
        for _ in range(n):
            text = f"m{len(self.sent)}"
            await self.client.publish(
                f"im/v1/up/{self.sender}/msg", {"v": 1, "id": f"id-{text}", "to": self.to, "text": text}
            )
            self.sent.append(text)  # PUBACKed


@pytest.mark.parametrize("reconnect_to", ["adopter", "other"])
async def test_double_takeover_loses_nothing_and_duplicates_nothing(
    cluster: Cluster, tmp_path: Path, admin_redis: aioredis.Redis, reconnect_to: str
) -> None:
    await cluster.start("n1")
    await cluster.start("n2")
    alice, bob = await cluster.add_user("alice"), await cluster.add_user("bob")
    async with node_process(cluster, "n3", tmp_path) as n3:
        alice_c = await cluster.connected("n1", alice)
        bob_on_n3 = Paho(
            port=n3.port, user=bob, password=PASSWORD, client_id=f"{bob}-phone", clean_session=False
        )
        await bob_on_n3.connect()
        await _wait_routes(cluster, f"im/v1/u/{bob}/#", ["n3"], on="n1")
        sender = Sender(alice_c, alice, bob)
        await sender.send(5)
        await admin_redis.set(KEYS.hold_adopt, b"1")
        await asyncio.to_thread(n3.kill)
        await asyncio.to_thread(bob_on_n3.drop)
        adopter = None
        for _ in range(400):  # n1 and n2 race for the lock; the winner holds at the hook
            raw = await admin_redis.get(KEYS.adopt("n3"))
            if raw is not None:
                adopter = raw.decode() if isinstance(raw, bytes) else str(raw)
                break
            await sender.send()  # sent while n3 is dead, before anyone adopted it
            await asyncio.sleep(0.02)
        assert adopter in ("n1", "n2"), adopter
        target = adopter if reconnect_to == "adopter" else ({"n1", "n2"} - {adopter}).pop()
        await sender.send(3)  # during the adoption
        bob_back = cluster.client(target, bob, client_id=f"{bob}-phone", clean_session=False)
        connecting = asyncio.create_task(bob_back.connect())
        await asyncio.sleep(0.3)  # the CONNECT waits for the held adoption
        await sender.send(3)
        await admin_redis.delete(KEYS.hold_adopt)
        await sender.send(3)  # while the adopter drains, and during the handover to `target`
        assert await connecting == (True, 0)
        await sender.send(5)  # after
        before = _texts(_drain(bob_on_n3))
        expected = set(sender.sent)
        after = await _collect(bob_back, expected, set(before), rounds=len(expected) * 3)
        missing = expected - set(before) - set(_texts(after))
        assert not missing, (adopter, target, sorted(missing))
        assert not _duplicates(after), (adopter, target, _duplicates(after))


async def test_paused_node_fences_then_rejoins(
    cluster: Cluster, tmp_path: Path, admin_redis: aioredis.Redis
) -> None:
    await cluster.start("n1")
    alice, bob = await cluster.add_user("alice"), await cluster.add_user("bob")
    async with node_process(cluster, "n3", tmp_path) as n3:
        alice_c = await cluster.connected("n1", alice)
        bob_on_n3 = Paho(
            port=n3.port, user=bob, password=PASSWORD, client_id=f"{bob}-phone", clean_session=False
        )
        await bob_on_n3.connect()
        await _wait_routes(cluster, f"im/v1/u/{bob}/#", ["n3"], on="n1")
        sender = Sender(alice_c, alice, bob)
        await sender.send(5)
        n3.pause()  # SIGSTOP: its heartbeat lapses, n1 adopts it while it still has bob's socket
        link = cluster.nodes["n1"].link
        for _ in range(int(NODE_TTL_S * 40) + 400):
            if link.counters.get("nodes_adopted", 0) >= 1:
                break
            await sender.send()
            await asyncio.sleep(0.02)
        assert link.counters.get("nodes_adopted", 0) >= 1
        await sender.send(5)  # to bob's session, now on n1
        n3.resume()  # SIGCONT: past its deadline, it fences before serving anything
        # The registration keys are written before the rejoin is logged: wait for both.
        for _ in range(400):
            registered = await admin_redis.hexists(KEYS.nodes, "n3") and await admin_redis.exists(
                KEYS.alive("n3")
            )
            if registered and "rejoined the cluster" in n3.log_path.read_text(errors="replace"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"n3 did not rejoin:\n{n3.log_tail()}")
        assert n3.proc.poll() is None
        log_text = n3.log_path.read_text(errors="replace")
        assert "fenced" in log_text
        assert "rejoined the cluster: 0 sessions" in log_text  # it owns nothing any more
        first = _drain(bob_on_n3)
        await asyncio.to_thread(bob_on_n3.drop)
        # bob comes back to the rejoined node: it takes the session from n1.
        bob_back = Paho(
            port=n3.port, user=bob, password=PASSWORD, client_id=f"{bob}-phone", clean_session=False
        )
        assert await bob_back.connect() == (True, 0)
        await sender.send(5)
        expected = set(sender.sent)
        after = await _collect(bob_back, expected, set(_texts(first)), rounds=len(expected) * 3)
        await asyncio.to_thread(bob_back.drop)
        assert not expected - set(_texts(first)) - set(_texts(after)), n3.log_tail()
        assert not _duplicates(first)
        assert not _duplicates(after)
