"""Two `mqim logic --shared` workers on one broker: they split the requests, none is processed twice,
and a worker that dies mid-stream leaves its unacknowledged requests to the other one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from mqim.broker import BrokerSettings, Listener
from mqim.logic import LogicService, MqttBus
from mqim.protocol import SHARED_UP_FILTER, direct_conv
from mqim.server import EmbeddedServer
from mqim.storage import AccountKind
from tests.conftest import PASSWORD
from tests.support.mqtt import Paho

COUNT = 400


@contextlib.asynccontextmanager
async def _worker(server: EmbeddedServer, user: str, n: int) -> AsyncIterator[tuple[LogicService, MqttBus]]:
    bus = MqttBus(
        host="127.0.0.1",
        port=server.port(),
        username=user,
        password=PASSWORD,
        client_id=f"{user}-{n}",
        topic_filter=SHARED_UP_FILTER,
        clean_session=True,
    )
    service = LogicService(storage=server.storage, bus=bus)
    async with bus, asyncio.TaskGroup() as tasks:
        task = tasks.create_task(service.run(), name=f"test-shared-worker-{n}")
        try:
            yield service, bus
        finally:
            task.cancel()


@pytest.fixture
async def broker_only(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    async with EmbeddedServer(
        data_dir=tmp_path / "data",
        listeners=[Listener(name="default", port=0)],
        settings=BrokerSettings(connect_timeout_s=3.0, publish_rate=1e6, publish_burst=1_000_000),
        embedded_logic=False,
    ) as server:
        yield server


async def _stream(server: EmbeddedServer, alice: str, bob: str) -> Paho:
    sender = Paho(port=server.port(), user=alice, password=PASSWORD, client_id=f"{alice}-dev")
    sender.client.max_inflight_messages_set(50)
    await sender.connect()
    for n in range(COUNT):
        body = json.dumps({"v": 1, "id": f"m-{n}", "to": bob, "text": str(n)})
        sender.client.publish(f"im/v1/up/{alice}/msg", body, qos=1)
    return sender


async def _all_acked(sender: Paho) -> list[str]:
    """Acks until every request has one (a request retried after a worker died may get two)."""
    ids: list[str] = []
    while len(set(ids)) < COUNT:
        ids.append((await sender.receive_on("/ack", timeout=30)).json()["id"])
    return ids


@pytest.mark.slow
async def test_two_shared_workers_split_the_requests_and_process_none_twice(
    broker_only: EmbeddedServer, uid: Callable[[str], str]
) -> None:
    server = broker_only
    worker, alice, bob = uid("logic"), uid("alice"), uid("bob")
    await server.storage.add_user(worker, password=PASSWORD, kind=AccountKind.SERVICE)
    await server.storage.add_user(alice, password=PASSWORD)
    await server.storage.add_user(bob, password=PASSWORD)
    async with _worker(server, worker, 1) as (w1, _), _worker(server, worker, 2) as (w2, _):
        sender = await _stream(server, alice, bob)
        try:
            acked = await _all_acked(sender)
        finally:
            sender.close()
    assert sorted(acked) == sorted(f"m-{n}" for n in range(COUNT))  # one ack each
    assert w1.counters.requests + w2.counters.requests == COUNT  # none processed twice
    assert 0.4 * COUNT <= w1.counters.requests <= 0.6 * COUNT
    stored = await server.storage.get_messages(direct_conv(alice, bob), after_seq=0, limit=COUNT + 10)
    assert len({m.client_id for m in stored}) == len(stored) == COUNT


@pytest.mark.slow
async def test_a_worker_that_dies_leaves_its_requests_to_the_other(
    broker_only: EmbeddedServer, uid: Callable[[str], str]
) -> None:
    server = broker_only
    worker, alice, bob = uid("logic"), uid("alice"), uid("bob")
    await server.storage.add_user(worker, password=PASSWORD, kind=AccountKind.SERVICE)
    await server.storage.add_user(alice, password=PASSWORD)
    await server.storage.add_user(bob, password=PASSWORD)
    async with _worker(server, worker, 1) as (w1, _):
        async with _worker(server, worker, 2) as (_, bus2):
            # Worker 2 never settles (it "dies before its commit"): its requests stay held.
            bus2.settle = lambda items: None  # type: ignore[method-assign]
            sender = await _stream(server, alice, bob)
            # The sender's PUBACKs leave in order, so its window (50) soon waits on worker 2.
            async with asyncio.timeout(30):
                while w1.counters.requests < 20:  # noqa: ASYNC110 - counters only
                    await asyncio.sleep(0.02)
        # Worker 2 is gone without acknowledging: the broker hands its held requests to worker 1.
        try:
            acked = await _all_acked(sender)
        finally:
            sender.close()
    assert sorted(set(acked)) == sorted(f"m-{n}" for n in range(COUNT))
    stored = await server.storage.get_messages(direct_conv(alice, bob), after_seq=0, limit=COUNT + 10)
    assert len({m.client_id for m in stored}) == len(stored) == COUNT  # stored once each
