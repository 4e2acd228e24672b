"""A full disk under load: nothing is acknowledged that was not stored, and the server recovers.

The data directory is a small tmpfs, filled with ballast so it runs out while a plain paho
client streams QoS 1 messages. Requests storage cannot take are held (their PUBACKs with them)
and answered `unavailable` once; when the ballast is removed they are stored and acknowledged
without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqim.protocol import direct_conv
from mqim.storage import SqliteStorage
from tests.conftest import PASSWORD, free_port
from tests.support.procs import kill, start_serve

COUNT = 1_500
TEXT = "x" * 600

_CONFIG = """
[limits]
publish_rate = 1000000.0
publish_burst = 1000000
"""


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    # Root is the project's test environment (CI runs as root); a failure here fails the test.
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class _Stream:
    """A plain paho client sending COUNT messages and collecting what comes back on its inbox."""

    def __init__(self, *, port: int, user: str) -> None:
        self.acked_mids: set[int] = set()
        self.replies: dict[str, list[str]] = {}  # request id -> codes (`ack` or the error code)
        self.lock = threading.Lock()
        self.all_acked = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{user}-dev", clean_session=False, protocol=paho.MQTTv311
        )
        self.client.username_pw_set(user, PASSWORD)
        self.client.max_inflight_messages_set(50)
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.port = port

    def _on_publish(self, client: object, userdata: object, mid: int, reason: object, props: object) -> None:
        with self.lock:
            self.acked_mids.add(mid)
            if len(self.acked_mids) == COUNT:
                self.all_acked.set()

    def _on_message(self, client: object, userdata: object, msg: paho.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        if msg.topic.endswith("/ack"):
            key, code = body["id"], "ack"
        elif msg.topic.endswith("/error"):
            key, code = body["ref"], body["code"]
        else:
            return
        with self.lock:
            self.replies.setdefault(key, []).append(code)

    def answered(self, code: str) -> int:
        with self.lock:
            return sum(1 for codes in self.replies.values() if code in codes)


def _fill(path: Path, leave: int) -> Path:
    """Fill the filesystem of `path` with a ballast file, leaving about `leave` bytes free."""
    ballast = path / "ballast"
    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize
    with ballast.open("wb") as out:
        out.write(b"\0" * max(0, free - leave))
    return ballast


async def _start(
    data: Path, tmp_path: Path, log: Path, alice: str, bob: str
) -> tuple[asyncio.subprocess.Process, _Stream]:
    """Accounts in a new data directory, `mqim serve` on it, and alice's (unconnected) stream."""
    await asyncio.to_thread(data.mkdir)
    async with SqliteStorage(path=data / "mqim.db") as storage:
        await storage.add_user(alice, password=PASSWORD)
        await storage.add_user(bob, password=PASSWORD)
    config = tmp_path / "mqim.toml"
    config.write_text(_CONFIG)
    port = free_port()
    return await start_serve(port, data, log, config=config), _Stream(port=port, user=alice)


@pytest.mark.slow
async def test_full_disk_acknowledges_only_what_is_stored_and_recovers(
    tmp_path: Path, uid: Callable[[str], str]
) -> None:
    alice, bob = uid("alice"), uid("bob")
    with _tmpfs(tmp_path / "fs", "12m") as fs:
        data, log = fs / "data", tmp_path / "serve.log"
        proc, stream = await _start(data, tmp_path, log, alice, bob)
        try:
            stream.client.connect("127.0.0.1", stream.port, keepalive=30)
            stream.client.loop_start()
            ballast = _fill(fs, leave=200_000)
            for n in range(COUNT):
                body = json.dumps({"v": 1, "id": f"m-{n}", "to": bob, "text": TEXT})
                stream.client.publish(f"im/v1/up/{alice}/msg", body, qos=1)
            async with asyncio.timeout(60):
                while stream.answered("unavailable") == 0:  # noqa: ASYNC110 - paho runs in its thread
                    await asyncio.sleep(0.05)
            # The disk is full: what is acknowledged so far must all be stored.
            with stream.lock:
                acked_while_full = len(stream.acked_mids)
            assert acked_while_full < COUNT
            ballast.unlink()  # space again: the held requests go through without a restart
            assert await asyncio.to_thread(stream.all_acked.wait, 90), f"{len(stream.acked_mids)} acked"
            async with asyncio.timeout(30):
                while stream.answered("ack") < COUNT:  # noqa: ASYNC110 - paho runs in its thread
                    await asyncio.sleep(0.05)
        finally:
            stream.client.loop_stop()
            stream.client.disconnect()
            await kill(proc)
        async with SqliteStorage(path=data / "mqim.db") as storage:
            stored = await storage.get_messages(direct_conv(alice, bob), after_seq=0, limit=COUNT + 10)
    ids = [m.client_id for m in stored]
    assert len(ids) == len(set(ids)) == COUNT  # every PUBACKed one stored, once
    assert stream.answered("ack") == COUNT  # every request answered, finally with its ack
    text = log.read_text()
    assert "storage unavailable" in text
    assert "storage recovered" in text


@pytest.mark.slow
async def test_kill_9_on_a_full_disk_keeps_every_acknowledged_message(
    tmp_path: Path, uid: Callable[[str], str]
) -> None:
    alice, bob = uid("alice"), uid("bob")
    with _tmpfs(tmp_path / "fs", "12m") as fs:
        data = fs / "data"
        proc, stream = await _start(data, tmp_path, tmp_path / "serve.log", alice, bob)
        try:
            stream.client.connect("127.0.0.1", stream.port, keepalive=30)
            stream.client.loop_start()
            ballast = _fill(fs, leave=200_000)
            for n in range(COUNT):
                body = json.dumps({"v": 1, "id": f"m-{n}", "to": bob, "text": TEXT})
                stream.client.publish(f"im/v1/up/{alice}/msg", body, qos=1)  # mid n + 1
            async with asyncio.timeout(60):
                while stream.answered("unavailable") == 0:  # noqa: ASYNC110 - paho runs in its thread
                    await asyncio.sleep(0.05)
        finally:
            await kill(proc)  # SIGKILL while the disk is full
            stream.client.loop_stop()
        with stream.lock:
            acked = {f"m-{mid - 1}" for mid in stream.acked_mids}
        ballast.unlink()
        async with SqliteStorage(path=data / "mqim.db") as storage:
            stored = await storage.get_messages(direct_conv(alice, bob), after_seq=0, limit=COUNT + 10)
    assert acked, "nothing was acknowledged before the disk filled"
    assert len(acked) < COUNT
    assert acked <= {m.client_id for m in stored}  # every PUBACKed message is on disk
