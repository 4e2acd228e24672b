"""PUBACK means stored, proven from a plain paho client: kill -9 right after the last PUBACK.

A device with a plain MQTT library (no SDK, no app-level retry) drops its copy of a QoS 1
message when the PUBACK arrives. These tests publish at full speed, kill the server with SIGKILL
the moment the last PUBACK is in, and count what the restarted storage holds: every
acknowledged message, none twice.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqim.protocol import direct_conv
from mqim.storage import AccountKind, SqliteStorage
from tests.conftest import PASSWORD, free_port
from tests.support.procs import kill, start_mqim, start_serve

COUNT = 5_000

# The per-user abuse limits (100/s) would refuse a full-speed stream; this is about durability.
_CONFIG = """
[limits]
publish_rate = 1000000.0
publish_burst = 1000000
"""


class _Publisher:
    """A plain paho client publishing QoS 1 uplinks as fast as its in-flight window allows."""

    def __init__(self, *, port: int, user: str) -> None:
        self.acked = 0
        self.all_acked = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{user}-device",
            clean_session=False,
            protocol=paho.MQTTv311,
        )
        self._client.username_pw_set(user, PASSWORD)
        self._client.max_inflight_messages_set(100)
        self._client.max_queued_messages_set(0)
        self._client.on_publish = self._on_publish
        self._port = port

    def _on_publish(self, client: object, userdata: object, mid: int, reason: object, props: object) -> None:
        self.acked += 1
        if self.acked == COUNT:
            self.all_acked.set()

    async def run(self, user: str, peer: str) -> None:
        self._client.connect("127.0.0.1", self._port, keepalive=30)
        self._client.loop_start()
        for n in range(COUNT):
            body = json.dumps({"v": 1, "id": f"m-{n}", "to": peer, "text": f"message {n}"})
            self._client.publish(f"im/v1/up/{user}/msg", body, qos=1)
        done = await asyncio.to_thread(self.all_acked.wait, 120)
        assert done, f"only {self.acked} of {COUNT} PUBACKs arrived"

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


async def _prepare(data: Path, uid: Callable[[str], str]) -> tuple[str, str, str]:
    await asyncio.to_thread(data.mkdir)
    alice, bob, worker = uid("alice"), uid("bob"), uid("logic")
    async with SqliteStorage(path=data / "mqim.db") as storage:
        await storage.add_user(alice, password=PASSWORD)
        await storage.add_user(bob, password=PASSWORD)
        await storage.add_user(worker, password=PASSWORD, kind=AccountKind.SERVICE)
    return alice, bob, worker


async def _stored(data: Path, alice: str, bob: str) -> int:
    async with SqliteStorage(path=data / "mqim.db") as storage:
        messages = await storage.get_messages(direct_conv(alice, bob), after_seq=0, limit=COUNT + 10)
    ids = [m.client_id for m in messages]
    assert len(ids) == len(set(ids)), "a message was stored twice"
    return len(ids)


@pytest.mark.slow
async def test_kill_9_after_the_last_puback_loses_nothing_embedded(
    tmp_path: Path, uid: Callable[[str], str]
) -> None:
    data = tmp_path / "data"
    alice, bob, _ = await _prepare(data, uid)
    config = tmp_path / "mqim.toml"
    config.write_text(_CONFIG)
    port = free_port()
    proc = await start_serve(port, data, tmp_path / "serve.log", config=config)
    publisher = _Publisher(port=port, user=alice)
    try:
        await publisher.run(alice, bob)
    finally:
        await kill(proc)  # SIGKILL, right after the last PUBACK
        publisher.stop()
    assert await _stored(data, alice, bob) == COUNT


@pytest.mark.slow
async def test_kill_9_after_the_last_puback_loses_nothing_standalone_logic(
    tmp_path: Path, uid: Callable[[str], str]
) -> None:
    data = tmp_path / "data"
    alice, bob, worker = await _prepare(data, uid)
    config = tmp_path / "mqim.toml"
    config.write_text(_CONFIG + "\n[logic]\nembedded = false\n")
    port = free_port()
    log = tmp_path / "mqim.log"
    broker = await start_serve(port, data, log, config=config)
    logic = await start_mqim(
        "logic",
        "--broker",
        f"mqtt://127.0.0.1:{port}",
        "--username",
        worker,
        "--client-id",
        f"{worker}-1",
        "--data-dir",
        str(data),
        "--config",
        str(config),
        log=log,
        env={"MQIM_LOGIC_PASSWORD": PASSWORD},
    )
    publisher = _Publisher(port=port, user=alice)
    try:
        await _worker_subscribed(logic, log)
        await publisher.run(alice, bob)
    finally:
        await kill(logic)  # both killed right after the last PUBACK
        await kill(broker)
        publisher.stop()
    assert await _stored(data, alice, bob) == COUNT


async def _worker_subscribed(logic: asyncio.subprocess.Process, log: Path) -> None:
    """Wait until `mqim logic` reports its subscription (bounded)."""
    for _ in range(600):
        assert logic.returncode is None, "mqim logic exited; see its log"
        if b"logic service connected to" in await asyncio.to_thread(log.read_bytes):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("mqim logic did not connect; see its log")
