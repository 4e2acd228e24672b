"""`kill -9` of `mqim serve` with undelivered webhooks, and the `mqim hooks` commands."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path

from mqim.hooks import OUTBOX_FILENAME
from mqim.storage import SqliteStorage
from tests.conftest import PASSWORD, free_port
from tests.e2e._im import dm
from tests.hooks.receiver import Receiver
from tests.hooks.test_webhooks import SECRET, send
from tests.support.mqtt import Paho
from tests.support.procs import kill, start_serve


def outbox_rows(data: Path) -> int:
    with sqlite3.connect(f"file:{data / OUTBOX_FILENAME}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


async def mqim(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mqim.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_kill_9_with_undelivered_hooks_delivers_them_after_restart(tmp_path: Path) -> None:
    data, hook_port, mqtt_port = tmp_path / "data", free_port(), free_port()
    config = tmp_path / "mqim.toml"
    config.write_text(
        f"""
[hooks]
retry_initial_s = 0.2
retry_max_s = 1.0
[[hooks.endpoints]]
name = "push"
url = "http://127.0.0.1:{hook_port}/hook"
secret = "{SECRET}"
"""
    )
    data.mkdir()
    async with SqliteStorage(path=data / "mqim.db") as storage:
        for user in ("alice", "bob"):
            await storage.add_user(user, password=PASSWORD)
    proc = await start_serve(mqtt_port, data, tmp_path / "serve.log", config=config)
    try:
        alice = Paho(port=mqtt_port, user="alice", password=PASSWORD, client_id="alice-1")
        await alice.connect()
        seqs = [(await send(alice, "alice", to="bob", text=f"m{n}"))["seq"] for n in range(5)]
        alice.drop()
        for _ in range(200):  # the receiver is down: the events wait in the outbox
            if (data / OUTBOX_FILENAME).exists() and await asyncio.to_thread(outbox_rows, data) >= 5:
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(outbox_rows, data) == 5
    finally:
        await kill(proc)
    code, out = await mqim("hooks", "list", "--json", "--config", str(config), "--data-dir", str(data))
    assert code == 0, out
    listed = json.loads(out)["endpoints"]
    assert [(e["name"], e["pending"]) for e in listed] == [("push", 5)]

    rx = await Receiver(port=hook_port).start()
    proc = await start_serve(mqtt_port, data, tmp_path / "serve.log", config=config)
    try:
        got = await rx.wait_for(5, timeout=30)
        bodies = [r.json() for r in got if r.json()["type"] == "message.offline"]
        assert [b["seq"] for b in bodies] == seqs
        assert all(b["conv"] == dm("alice", "bob") and b["recipient"] == "bob" for b in bodies)
        assert all(r.signed_by(SECRET) for r in got)
        code, out = await mqim("hooks", "test", "push", "--config", str(config))
        assert (code, out.strip()) == (0, "push: HTTP 200")
        assert rx.requests[-1].json()["type"] == "test"
        assert rx.requests[-1].signed_by(SECRET)
        rx.status = 503
        code, out = await mqim("hooks", "test", "push", "--config", str(config))
        assert (code, out.strip()) == (1, "push: HTTP 503")
    finally:
        await kill(proc)
        await rx.stop()
