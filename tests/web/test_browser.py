"""The web client in a real browser (Debian's chromium via playwright-core) against `mqim serve`.

Each test starts nothing but real processes on free loopback ports: `mqim serve` with its
WebSocket and web listeners, and `node tests/web/browser.mjs` driving chromium. Screenshots of
every page are written to `test-output/web/` (git-ignored) and checked to be not blank.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mqim.storage import SqliteStorage
from tests.conftest import free_port
from tests.support.mqtt import Paho
from tests.support.procs import kill, start_mqim, wait_for_port
from tests.web.png import read_gray, variance

ROOT = Path(__file__).resolve().parents[2]
WEB_DIR = ROOT / "web"
STATIC = ROOT / "mqim" / "web" / "static"
SCRIPT = Path(__file__).with_name("browser.mjs")
OUT_DIR = ROOT / "test-output" / "web"
CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "pw-web-123456"
SCENARIO_TIMEOUT_S = 90.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists() or shutil.which("node") is None,
        reason="needs /usr/bin/chromium and node: run `make web` (scripts/install-web)",
    ),
    pytest.mark.skipif(
        not (WEB_DIR / "node_modules" / "playwright-core").is_dir(),
        reason="needs web/node_modules: run `make web` (scripts/install-web)",
    ),
]


@dataclass(frozen=True, slots=True, kw_only=True)
class WebServer:
    mqtt_port: int
    ws_port: int
    base_url: str
    users: dict[str, str]


@pytest.fixture(scope="module")
def built() -> None:
    """The client's build; built here when missing (e.g. pytest run without `make web`)."""
    if not (STATIC / "index.html").is_file():
        subprocess.run(["npm", "run", "--silent", "build"], cwd=WEB_DIR, check=True, timeout=120)


@pytest.fixture
async def web(built: None, tmp_path: Path) -> AsyncIterator[WebServer]:
    token = uuid.uuid4().hex[:6]
    users = {name: f"{name}-{token}" for name in ("alice", "bob", "carol", "dave")}
    data = tmp_path / "data"
    data.mkdir()
    async with SqliteStorage(path=data / "mqim.db") as storage:
        await storage.add_users(list(users.values()), password=PASSWORD)
    mqtt_port, ws_port, web_port = free_port(), free_port(), free_port()
    config = tmp_path / "mqim.toml"
    config.write_text(
        f"[server]\nws_port = {ws_port}\n[web]\nport = {web_port}\n"
        # Pages reconnect and resend in a burst; the default per-user abuse limits stay on.
        '[log]\nlevel = "WARNING"\n'
    )
    log = tmp_path / "serve.log"
    proc = await start_mqim(
        "serve", "--port", str(mqtt_port), "--data-dir", str(data), "--config", str(config), log=log
    )
    try:
        await wait_for_port(proc, web_port)
        await wait_for_port(proc, ws_port)
        yield WebServer(
            mqtt_port=mqtt_port, ws_port=ws_port, base_url=f"http://127.0.0.1:{web_port}/", users=users
        )
    finally:
        await kill(proc, signal.SIGTERM)
        if proc.returncode not in (0, -signal.SIGTERM):
            sys.stderr.write(log.read_text()[-4000:])


async def run_scenario(web: WebServer, scenario: str) -> list[Path]:
    """Run one scenario of browser.mjs; the screenshots it wrote, after checking it passed."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    spec = {
        "scenario": scenario,
        "base_url": web.base_url,
        "ws_port": web.ws_port,
        "out_dir": str(OUT_DIR),
        "web_dir": str(WEB_DIR),
        "users": {name: {"user": user, "password": PASSWORD} for name, user in web.users.items()},
    }
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        env={**os.environ, "MQIM_E2E": json.dumps(spec)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(SCENARIO_TIMEOUT_S):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        pytest.fail(f"{scenario}: browser run timed out\n{err.decode()[-4000:]}")
    sys.stderr.write(err.decode()[-6000:])  # the steps with their times, shown with -s or on failure
    assert proc.returncode == 0, f"{scenario} failed:\n{err.decode()[-6000:]}"
    lines = out.decode().splitlines()
    shots = [Path(line.split(" ", 1)[1]) for line in lines if line.startswith("screenshot ")]
    assert shots, f"{scenario}: no screenshots\n{err.decode()[-2000:]}"
    return shots


def assert_not_blank(shots: list[Path]) -> None:
    for shot in shots:
        width, height, gray = read_gray(shot)
        assert width > 300, shot
        assert height > 300, shot
        # A blank (single-colour) page has variance 0; the chat page has text, bubbles and borders.
        assert variance(gray) > 50.0, f"{shot} looks blank"


async def test_direct_chat_two_users(web: WebServer) -> None:
    """Typing, unread, delivered then read, offline send once, reload via sync, edit/recall/delete."""
    assert_not_blank(await run_scenario(web, "direct"))


async def test_group_of_three(web: WebServer) -> None:
    """Create a group in the page; typing, unread, delivered and read, offline send once, reload."""
    assert_not_blank(await run_scenario(web, "group"))


async def test_page_and_paho_interop(web: WebServer) -> None:
    """A message from the page reaches a plain paho client, and paho's answer reaches the page."""
    dave = Paho(
        port=web.mqtt_port,
        user=web.users["dave"],
        password=PASSWORD,
        client_id=f"{web.users['dave']}-paho",
        clean_session=False,
    )
    await dave.connect()
    try:
        page = asyncio.create_task(run_scenario(web, "interop"))
        got = await dave.receive_on("/msg", timeout=60.0)
        message = got.json()
        assert message["text"] == "from the page"
        assert message["from"] == web.users["alice"]
        await dave.publish(
            f"im/v1/up/{web.users['dave']}/msg",
            json.dumps({"v": 1, "id": "paho-1", "to": web.users["alice"], "text": "from paho"}),
            qos=1,
        )
        assert_not_blank(await page)
    finally:
        dave.close()
