"""MqttBus against a real Mosquitto on a free loopback port (the broker is only a transport here)."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import pytest

from mqim.logic import BusClosed, BusUnavailable, Inbound, LogicService, MqttBus
from mqim.storage import SqliteStorage

MOSQUITTO = Path("/usr/sbin/mosquitto")

pytestmark = pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(predicate: Callable[[], bool]) -> None:
    """Wait (bounded) until `predicate()` holds; for state changed by background tasks."""
    async with asyncio.timeout(15):
        while not predicate():  # noqa: ASYNC110 - polls state the bus exposes no event for
            await asyncio.sleep(0.02)


class Mosquitto:
    """A Mosquitto process that can be stopped and started again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self._conf = directory / "mosquitto.conf"
        self._conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            str(MOSQUITTO),
            "-c",
            str(self._conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                await writer.wait_closed()
                return

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            async with asyncio.timeout(10):
                await proc.wait()


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


def make_bus(broker: Mosquitto, **kwargs: object) -> MqttBus:
    options: dict[str, object] = {
        "host": "127.0.0.1",
        "port": broker.port,
        "username": None,
        "password": None,
        "client_id": f"logic-{uuid.uuid4().hex[:8]}",
        "reconnect_min_delay": 0.05,
        "reconnect_max_delay": 0.2,
        **kwargs,
    }
    return MqttBus(**options)  # type: ignore[arg-type]


def client(broker: Mosquitto) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", broker.port, identifier=f"test-{uuid.uuid4().hex[:8]}")


async def test_receive_and_publish(mosquitto: Mosquitto) -> None:
    async with make_bus(mosquitto) as bus, client(mosquitto) as user:
        assert bus.connected
        await user.subscribe("im/v1/u/alice/#", qos=1)
        await user.publish("im/v1/up/alice/msg", b'{"id":"c-1"}', qos=1)
        await user.publish("im/v1/up/alice/typing", b"{}", qos=0)
        await user.publish("im/v1/u/alice/msg", b"not for the service", qos=1)
        received: list[Inbound] = []
        async with asyncio.timeout(10):
            while len(received) < 2:
                received += await bus.receive_batch(10)
        assert received == [
            Inbound("im/v1/up/alice/msg", b'{"id":"c-1"}'),
            Inbound("im/v1/up/alice/typing", b"{}"),
        ]

        await bus.publish("im/v1/u/alice/ack", b'{"seq":1}', qos=1)
        async with asyncio.timeout(10):
            async for message in user.messages:
                if message.topic.value == "im/v1/u/alice/ack":
                    assert message.payload == b'{"seq":1}'
                    break


async def test_start_fails_when_the_broker_is_unreachable() -> None:
    bus = MqttBus(host="127.0.0.1", port=free_port(), username=None, password=None)
    with pytest.raises(BusUnavailable, match="cannot connect") as info:
        await bus.start()
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(BusClosed):
        await bus.receive_batch(1)
    with pytest.raises(BusClosed):
        await bus.publish("im/v1/u/a/msg", b"x")


async def test_a_request_is_acknowledged_only_when_settled(mosquitto: Mosquitto) -> None:
    worker = f"logic-{uuid.uuid4().hex[:8]}"
    async with make_bus(mosquitto, client_id=worker) as bus:
        async with client(mosquitto) as user:
            await user.publish("im/v1/up/alice/msg", b"first", qos=1)
            await user.publish("im/v1/up/alice/msg", b"second", qos=1)
        async with asyncio.timeout(10):
            batch: list[Inbound] = []
            while len(batch) < 2:
                batch += await bus.receive_batch(10)
        bus.settle(batch[:1])  # "second" is never settled (the worker died before its commit)
        await eventually(lambda: bus.acked == 1)
    # The broker kept the unsettled one for this worker's session and sends it again.
    async with make_bus(mosquitto, client_id=worker) as again, asyncio.timeout(10):
        redelivered = await again.receive_batch(10)
    assert [m.payload for m in redelivered] == [b"second"]


async def test_reconnects_and_resubscribes_after_the_broker_restarts(mosquitto: Mosquitto) -> None:
    async with make_bus(mosquitto) as bus:
        await mosquitto.stop()
        await eventually(lambda: not bus.connected)
        await mosquitto.start()
        await eventually(lambda: bus.reconnects >= 1 and bus.connected)
        async with client(mosquitto) as user:
            await user.publish("im/v1/up/bob/msg", b"after restart", qos=1)
        async with asyncio.timeout(10):
            assert await bus.receive_batch(10) == [Inbound("im/v1/up/bob/msg", b"after restart")]


async def test_publish_fails_cleanly_while_the_broker_is_down(mosquitto: Mosquitto) -> None:
    async with make_bus(mosquitto, publish_timeout=0.2) as bus:
        await mosquitto.stop()
        await eventually(lambda: not bus.connected)
        with pytest.raises(BusUnavailable):
            await bus.publish("im/v1/u/alice/ack", b"x")


async def test_overflow_is_handed_over_not_dropped(mosquitto: Mosquitto) -> None:
    refused: list[tuple[str, bytes]] = []
    total = 6
    async with make_bus(mosquitto, max_queued=1, on_overflow=lambda t, p: refused.append((t, p))) as bus:
        async with client(mosquitto) as user:
            for i in range(total):
                await user.publish("im/v1/up/alice/msg", b"%d" % i, qos=1)
        # Nothing reads yet: at most 3 are held (our queue, the reader, aiomqtt's queue).
        await eventually(lambda: len(refused) >= total - 3)
        received: list[Inbound] = []
        async with asyncio.timeout(10):
            while len(received) + len(refused) < total:
                received += await bus.receive_batch(10)
    assert bus.overflowed == len(refused) >= 1
    payloads = sorted([m.payload for m in received] + [p for _, p in refused])
    assert payloads == [b"%d" % i for i in range(total)]


async def test_stop_wakes_a_waiting_receiver(mosquitto: Mosquitto) -> None:
    bus = make_bus(mosquitto)
    await bus.start()
    waiter = asyncio.create_task(bus.receive_batch(10), name="test-receive")
    await asyncio.sleep(0)
    await bus.stop()
    async with asyncio.timeout(10):
        with pytest.raises(BusClosed):
            await waiter


async def test_service_over_mqtt_delivers_and_acks(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with SqliteStorage(path=tmp_path / "im.db") as storage:
        for user in ("alice", "bob"):
            await storage.add_user(user, password="pw-123456")
        async with make_bus(mosquitto) as bus, client(mosquitto) as alice, client(mosquitto) as bob:
            service = LogicService(storage=storage, bus=bus)
            bus.on_overflow = service.reject_overflow
            await alice.subscribe("im/v1/u/alice/#", qos=1)
            await bob.subscribe("im/v1/u/bob/#", qos=1)
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(service.run(), name="logic-service")
                await alice.publish(
                    "im/v1/up/alice/msg", json.dumps({"id": "c-1", "to": "bob", "text": "hi"}), qos=1
                )
                async with asyncio.timeout(10):
                    message = await anext(aiter(bob.messages))
                    assert message.topic.value == "im/v1/u/bob/msg"
                    assert json.loads(message.payload)["text"] == "hi"
                    topics = []
                    async for own in alice.messages:
                        topics.append(own.topic.value)
                        if own.topic.value == "im/v1/u/alice/ack":
                            assert json.loads(own.payload)["seq"] == 1
                            break
                    assert topics == ["im/v1/u/alice/msg", "im/v1/u/alice/ack"]
                task.cancel()
