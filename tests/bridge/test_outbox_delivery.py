"""The outbound bridge's durable outbox against a real Mosquitto: PUBACK means durably accepted.

A local publisher's PUBACK goes only once its message is committed to the bridge's outbox; the
message leaves the outbox only once the remote acknowledged it. So whatever was acknowledged
locally reaches the remote: after a remote outage, after ``kill -9`` of `mqim serve`, and when
the outbox is full (then new messages are refused: their publishers keep and resend them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from mqim.bridge import (
    BRIDGES_FILENAME,
    STATUS_FILENAME,
    BridgeConfig,
    BridgesFile,
    OutboundBridge,
    outbox_filename,
    save_bridges,
)
from mqim.server import EmbeddedServer
from mqim.storage import SqliteStorage
from tests.bridge.conftest import MosquittoFactory, eventually, mqim_server
from tests.bridge.mosquitto import Mosquitto
from tests.conftest import PASSWORD, free_port
from tests.support.mqtt import Paho

RULE = "allow user:alice publish,subscribe,receive site/#"


def _write_bridge(data_dir: Path, remote: Mosquitto, **extra: Any) -> None:
    bridge = {
        "name": "edge",
        "remote": f"mqtt://127.0.0.1:{remote.port}",
        "topics": ["sensors/# out 1 site/ edge/"],
        "reconnect_min_delay": 0.2,
        "reconnect_max_delay": 1.0,
        **extra,
    }
    save_bridges(data_dir / BRIDGES_FILENAME, BridgesFile(bridges=[BridgeConfig.model_validate(bridge)]))


def _bridge(server: EmbeddedServer) -> OutboundBridge:
    assert server.bridges is not None
    return server.bridges.bridges["edge"]


@pytest.fixture
async def remote(mosquitto_factory: MosquittoFactory) -> Mosquitto:
    return await mosquitto_factory(persistence=True)


async def _far_away(remote: Mosquitto, client_id: str) -> None:
    """Give the remote a persistent subscriber, then take the remote down (it remembers both)."""
    far = Paho(port=remote.port, user=None, client_id=client_id, clean_session=False)
    await far.connect()
    assert await far.subscribe("edge/sensors/#", qos=1) == 1
    far.close()
    await remote.stop()


async def _collect(remote: Mosquitto, client_id: str, count: int, *, timeout: float = 30.0) -> list[bytes]:
    """Reconnect the persistent subscriber; the distinct payloads in arrival order (at least once)."""
    far = Paho(port=remote.port, user=None, client_id=client_id, clean_session=False)
    await far.connect()
    seen: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"the remote got {len(seen)} of {count}: {seen}"
            msg = await far.receive(timeout=left)
            if msg.payload not in seen:
                seen.append(msg.payload)
        return seen
    finally:
        far.close()


def _publish_all(client: paho.Client, payloads: list[bytes]) -> list[paho.MQTTMessageInfo]:
    return [client.publish("site/sensors/t", payload, qos=1) for payload in payloads]


async def _all_acknowledged(infos: list[paho.MQTTMessageInfo], timeout: float = 30.0) -> None:
    for info in infos:
        await asyncio.to_thread(info.wait_for_publish, timeout)
        assert info.is_published(), "a PUBACK is missing"


async def test_published_while_the_remote_is_down_arrive_once_it_is_up(
    tmp_path: Path, remote: Mosquitto
) -> None:
    await _far_away(remote, "far-a")
    data_dir = tmp_path / "mqim"
    data_dir.mkdir()
    _write_bridge(data_dir, remote)
    sent = [f"m{n}".encode() for n in range(200)]
    async with mqim_server(data_dir, free_port(), rules=[RULE], embedded_logic=False) as server:
        await server.storage.add_user("alice", password=PASSWORD)
        bridge = _bridge(server)
        alice = Paho(port=server.port(), user="alice", password=PASSWORD, client_id="alice-a")
        await alice.connect()
        try:
            await _all_acknowledged(_publish_all(alice.client, sent))
        finally:
            alice.close()
        assert not bridge.connected
        # Every acknowledged message is in the outbox file, not only in memory.
        assert bridge.outbox.count == len(sent)
        assert bridge.stats.pending_out == len(sent)
        assert bridge.outbox.path == data_dir / outbox_filename("edge")
        assert bridge.stats.refused_full == bridge.stats.dropped_overflow == 0

        await remote.start()
        assert await _collect(remote, "far-a", len(sent)) == sent  # all of them, in order
        await eventually(lambda: bridge.stats.messages_out == len(sent), what="all confirmed")
        assert bridge.outbox.count == 0


# -- kill -9 of `mqim serve` -----------------------------------------------------------------------
def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _bridge_running(data_dir: Path) -> bool:
    # The status file is written once the bridges (and their consumers) are running.
    try:
        return "edge" in json.loads((data_dir / STATUS_FILENAME).read_text()).get("outbound", {})
    except (OSError, ValueError):
        return False


async def _serve(port: int, data_dir: Path, log: Path) -> asyncio.subprocess.Process:
    """`mqim serve` in its own process, once it listens and its bridges are attached."""
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mqim.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
            stdout=out, stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        if proc.returncode is not None:
            raise AssertionError(f"mqim serve exited with {proc.returncode}:\n{_tail(log)}")
        if _bridge_running(data_dir):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                pass
            else:
                writer.close()
                await writer.wait_closed()
                return proc
        if time.monotonic() > deadline:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"mqim serve did not start:\n{_tail(log)}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def stop_later() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    procs: list[asyncio.subprocess.Process] = []
    yield procs
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.mark.slow
async def test_kill_9_after_the_last_puback_loses_nothing(
    tmp_path: Path, remote: Mosquitto, stop_later: list[asyncio.subprocess.Process]
) -> None:
    await _far_away(remote, "far-k")
    data_dir = tmp_path / "mqim"
    data_dir.mkdir()
    _write_bridge(data_dir, remote)
    async with SqliteStorage(path=data_dir / "mqim.db") as storage:
        await storage.add_user("alice", password=PASSWORD)
        await storage.add_acl_rule(RULE)
    port = free_port()
    log = tmp_path / "serve.log"
    proc = await _serve(port, data_dir, log)
    stop_later.append(proc)
    # Fewer than the publish burst of a limited user (200): a rate-limited publish is dropped.
    sent = [f"k{n}".encode() for n in range(150)]
    alice = Paho(port=port, user="alice", password=PASSWORD, client_id="alice-k")
    await alice.connect()
    try:
        await _all_acknowledged(_publish_all(alice.client, sent))
        proc.send_signal(signal.SIGKILL)  # right after the last PUBACK: no clean stop, no flush
        await proc.wait()
    finally:
        alice.close()
    assert proc.returncode == -signal.SIGKILL

    stop_later.append(await _serve(port, data_dir, log))
    await remote.start()
    assert await _collect(remote, "far-k", len(sent)) == sent
    assert "150 unconfirmed outbound messages to send again" in log.read_text()


# -- the bound -------------------------------------------------------------------------------------
@pytest.mark.slow
async def test_full_outbox_refuses_new_messages_and_keeps_acknowledged_ones(
    tmp_path: Path, remote: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mqim.bridge")
    await _far_away(remote, "far-c")
    data_dir = tmp_path / "mqim"
    data_dir.mkdir()
    _write_bridge(data_dir, remote, max_pending_out=5)
    sent = [f"c{n}".encode() for n in range(8)]
    async with mqim_server(data_dir, free_port(), rules=[RULE], embedded_logic=False) as server:
        await server.storage.add_user("alice", password=PASSWORD)
        bridge = _bridge(server)
        alice = Paho(
            port=server.port(), user="alice", password=PASSWORD, client_id="alice-c", clean_session=False
        )
        alice.client.reconnect_delay_set(1, 2)
        await alice.connect()
        try:
            # Five fill the outbox; each PUBACK came after its commit.
            await _all_acknowledged(_publish_all(alice.client, sent[:5]))
            assert [e.payload for e in bridge.outbox.ready] == sent[:5]
            rest = _publish_all(alice.client, sent[5:])
            await eventually(lambda: bridge.stats.refused_full >= 1, what="a refusal")
            # Refused, not acknowledged: the broker closes the publisher's connection instead of
            # sending the PUBACK, and the publisher sends them again after reconnecting. The
            # acknowledged five stay, in order: nothing accepted is evicted for newer messages.
            await asyncio.sleep(1.5)
            assert [e.payload for e in bridge.outbox.ready] == sent[:5]
            assert not any(info.is_published() for info in rest)
            assert bridge.stats.pending_out == 5

            # A message nobody can send again (QoS 0) is dropped, and counted as such.
            other = Paho(port=server.port(), user="alice", password=PASSWORD, client_id="alice-q0")
            await other.connect()
            await other.publish("site/sensors/t", b"qos0", qos=0)
            await eventually(lambda: bridge.stats.dropped_overflow == 1, what="QoS 0 dropped")
            other.close()
            full = [r for r in caplog.records if "outbox full" in r.getMessage()]
            assert len(full) == 1, "logged once per episode"

            await remote.start()
            got = await _collect(remote, "far-c", len(sent))
            assert got[:5] == sent[:5]  # the acknowledged ones first, in order
            assert set(got) == set(sent)  # and the refused ones once the publisher resent them
            await _all_acknowledged(rest)
        finally:
            alice.close()
        assert any("outbox accepts again" in r.getMessage() for r in caplog.records)
        assert bridge.stats.refused_full >= 1
