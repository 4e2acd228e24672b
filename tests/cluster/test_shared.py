"""Shared subscriptions across the cluster: two `mqim logic` workers split the uplink load."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from mqim.broker import BrokerSettings, Listener
from mqim.logic import LogicService, MqttBus
from mqim.server import EmbeddedServer
from mqim.storage import AccountKind
from tests.cluster.conftest import Cluster
from tests.cluster.test_routing import _wait_routes
from tests.conftest import PASSWORD
from tests.support.mqtt import Paho

SHARED_UP = "$share/logic/im/v1/up/+/+"


@asynccontextmanager
async def worker(cluster: Cluster, node: str, service_user: str, n: int) -> AsyncIterator[LogicService]:
    """A standalone logic worker (as `mqim logic --shared` runs it) connected to `node`."""
    bus = MqttBus(
        host="127.0.0.1",
        port=cluster.nodes[node].port(),
        username=service_user,
        password=PASSWORD,
        client_id=f"{service_user}-{n}",
        topic_filter=SHARED_UP,
    )
    service = LogicService(storage=cluster.admin, bus=bus)
    bus.on_overflow = service.reject_overflow
    async with bus, asyncio.TaskGroup() as tasks:
        task = tasks.create_task(service.run(), name=f"test-logic-worker-{n}")
        try:
            yield service
        finally:
            task.cancel()


async def test_two_logic_workers_split_the_load_without_duplicates(cluster: Cluster) -> None:
    for node in ("n1", "n2", "n3"):
        await cluster.start(node, embedded_logic=False)
    service_user = await cluster.add_user("logic", kind=AccountKind.SERVICE)
    alice, bob = await cluster.add_user("alice"), await cluster.add_user("bob")
    async with worker(cluster, "n2", service_user, 1) as w1, worker(cluster, "n3", service_user, 2) as w2:
        alice_c = await cluster.connected("n1", alice)
        bob_c = await cluster.connected("n3", bob)
        await _wait_routes(cluster, SHARED_UP, ["n2", "n3"], on="n1")
        await _wait_routes(cluster, f"im/v1/u/{bob}/#", ["n3"], on="n2")
        await _wait_routes(cluster, f"im/v1/u/{alice}/#", ["n1"], on="n2")
        await _wait_routes(cluster, f"im/v1/u/{alice}/#", ["n1"], on="n3")

        count = 30
        for n in range(count):
            await alice_c.publish(
                f"im/v1/up/{alice}/msg", {"v": 1, "id": f"s-{n}", "to": bob, "text": f"m{n}"}
            )
        texts = [(await bob_c.receive_on("/msg")).json()["text"] for _ in range(count)]
        assert sorted(texts) == sorted(f"m{n}" for n in range(count))  # each exactly once
        seqs = sorted([(await alice_c.receive_on("/ack")).json()["seq"] for _ in range(count)])
        assert seqs == list(range(1, count + 1))
        await bob_c.nothing(0.3, suffix="/msg")
        # Every request was processed by exactly one worker, and both took a share.
        assert w1.counters.requests + w2.counters.requests == count
        assert w1.counters.requests > 0
        assert w2.counters.requests > 0


@contextmanager
def worker_process(argv: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `mqim logic` process, stopped with SIGTERM (it must exit cleanly, code 0)."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, cwd=log_path.parent, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


async def test_mqim_logic_shared_worker_process_serves_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    for node in ("n1", "n2"):
        await cluster.start(node, embedded_logic=False)
    service_user = await cluster.add_user("logic", kind=AccountKind.SERVICE)
    alice, bob = await cluster.add_user("alice"), await cluster.add_user("bob")
    argv = [
        sys.executable, "-m", "mqim.cli", "logic", "--shared",
        "--mongo", cluster.mongo.url, "--database", cluster.database,
        "--broker", f"mqtt://{service_user}:{PASSWORD}@127.0.0.1:{cluster.nodes['n2'].port()}",
        "--client-id", f"{service_user}-cli", "--data-dir", str(tmp_path / "worker"),
    ]  # fmt: skip
    log_path = tmp_path / "worker.log"
    with worker_process(argv, log_path) as proc:
        await _wait_routes(cluster, SHARED_UP, ["n2"], on="n1")
        alice_c = await cluster.connected("n1", alice)
        bob_c = await cluster.connected("n1", bob)
        await alice_c.publish(
            f"im/v1/up/{alice}/msg", {"v": 1, "id": "cli-1", "to": bob, "text": "via worker"}
        )
        assert (await bob_c.receive_on("/msg", timeout=20)).json()["text"] == "via worker"
    assert proc.returncode == 0, log_path.read_text()[-3000:]


async def test_shared_subscription_on_a_single_node_server(tmp_path: Path) -> None:
    """`$share/...` works without a cluster too: `mqim serve` with two standalone workers."""
    async with EmbeddedServer(
        data_dir=tmp_path / "data",
        listeners=[Listener(name="default", port=0)],
        settings=BrokerSettings(connect_timeout_s=3.0),
        embedded_logic=False,
    ) as server:
        token = uuid.uuid4().hex[:6]
        service_user, alice, bob = (f"{n}-{token}" for n in ("logic", "alice", "bob"))
        await server.storage.add_user(service_user, password=PASSWORD, kind=AccountKind.SERVICE)
        await server.storage.add_user(alice, password=PASSWORD)
        await server.storage.add_user(bob, password=PASSWORD)
        services: list[LogicService] = []
        async with contextlib.AsyncExitStack() as stack:
            for n in (1, 2):
                bus = MqttBus(
                    host="127.0.0.1",
                    port=server.port(),
                    username=service_user,
                    password=PASSWORD,
                    client_id=f"{service_user}-{n}",
                    topic_filter=SHARED_UP,
                )
                service = LogicService(storage=server.storage, bus=bus)
                services.append(service)
                await stack.enter_async_context(bus)
                tasks = await stack.enter_async_context(asyncio.TaskGroup())
                stack.callback(tasks.create_task(service.run(), name=f"test-single-worker-{n}").cancel)
            alice_c = Paho(port=server.port(), user=alice, password=PASSWORD, client_id=f"{alice}-1")
            bob_c = Paho(port=server.port(), user=bob, password=PASSWORD, client_id=f"{bob}-1")
            await alice_c.connect()
            await bob_c.connect()
            try:
                count = 10
                for n in range(count):
                    body = {"v": 1, "id": f"one-{n}", "to": bob, "text": f"m{n}"}
                    await alice_c.publish(f"im/v1/up/{alice}/msg", body)
                texts = [(await bob_c.receive_on("/msg")).json()["text"] for _ in range(count)]
                assert sorted(texts) == sorted(f"m{n}" for n in range(count))
                await bob_c.nothing(0.3, suffix="/msg")
                assert [s.counters.requests for s in services] == [count // 2, count // 2]  # round-robin
            finally:
                alice_c.close()
                bob_c.close()
