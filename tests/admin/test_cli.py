"""`mqim serve --log-format json` and `mqim status` against it, as processes."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from mqim.storage import SqliteStorage
from tests.conftest import PASSWORD, free_port
from tests.support.mqtt import Paho
from tests.support.procs import kill, start_mqim, wait_for_port


async def mqim(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mqim.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_status_and_json_logs_of_a_running_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    async with SqliteStorage(path=data / "mqim.db") as storage:
        await storage.add_users(["alice", "bob"], password=PASSWORD)
    port, admin_port = free_port(), free_port()
    config = tmp_path / "mqim.toml"
    config.write_text(f'[admin]\nport = {admin_port}\n[log]\nlevel = "DEBUG"\n[web]\nenabled = false\n')
    log = tmp_path / "serve.log"
    proc = await start_mqim(
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data),
        "-c",
        str(config),
        "--log-format",
        "json",
        log=log,
    )
    try:
        await wait_for_port(proc, admin_port)
        alice = Paho(port=port, user="alice", password=PASSWORD, client_id="alice-cli")
        try:
            await alice.connect()
            await alice.publish(
                "im/v1/up/alice/msg", {"v": 1, "id": "trace-1", "to": "bob", "text": "hi"}, qos=1
            )
            code, out, err = await mqim("status", "--json", "-c", str(config))
            assert code == 0, err
            doc = json.loads(out)
            assert doc["mode"] == "standalone"
            assert doc["connections"]["by_listener"] == {"default": {"user": 1}}
            assert doc["messages"]["received"]["up"] == 1
            code, out, err = await mqim("status", "--url", f"http://127.0.0.1:{admin_port}/")
            assert code == 0, err
            assert "connections 1" in out
        finally:
            alice.close()
    finally:
        await kill(proc, signal.SIGTERM)
    records = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))  # every log line is one JSON object
    assert records
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    trace = [r["msg"] for r in records if "id=trace-1" in r["msg"]]
    assert trace
    assert "conv=" in trace[0]
    assert "seq=1" in trace[0]
    assert "to=u/bob" in trace[0]


async def test_status_of_no_server_fails_clearly(tmp_path: Path) -> None:
    code, _, err = await mqim("status", "--url", f"http://127.0.0.1:{free_port()}/")
    assert code == 1
    assert "cannot reach" in err
