"""`mqim logic`: where it connects, and a real worker process serving a broker without logic."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from mqim.broker import BrokerSettings, Listener
from mqim.cli import ConfigError, load_config
from mqim.cli._logic_cmd import LogicTarget, resolve_target
from mqim.client import MqimClient
from mqim.server import EmbeddedServer
from mqim.storage import AccountKind
from tests.conftest import PASSWORD

MQIM = Path(sys.executable).parent / "mqim"


def test_target_defaults_to_server_section_and_service_password() -> None:
    config = load_config(
        None,
        {},
        environ={
            "MQIM_SERVER__HOST": "0.0.0.0",
            "MQIM_SERVER__PORT": "2883",
            "MQIM_LOGIC__SERVICE_PASSWORD": "s",
        },
    )
    target = resolve_target(config, broker=None, username=None, password=None)
    assert target == LogicTarget(host="127.0.0.1", port=2883, tls=False, username="mqim-logic", password="s")


def test_target_precedence_flag_then_url_then_config() -> None:
    config = load_config(
        None,
        {},
        environ={
            "MQIM_LOGIC__BROKER_URL": "mqtt://cfg:cfgpw@cfg-host:1",
            "MQIM_LOGIC__SERVICE_PASSWORD": "s",
        },
    )
    assert resolve_target(config, broker=None, username=None, password=None) == LogicTarget(
        host="cfg-host", port=1, tls=False, username="cfg", password="cfgpw"
    )
    assert resolve_target(config, broker="mqtts://h", username=None, password=None) == LogicTarget(
        host="h", port=8883, tls=True, username="mqim-logic", password="s"
    )
    assert resolve_target(config, broker="mqtt://u:p@h:5", username="flag", password="flagpw") == LogicTarget(
        host="h", port=5, tls=False, username="flag", password="flagpw"
    )


def test_target_needs_a_password_and_a_valid_url() -> None:
    config = load_config(None, {}, environ={})
    with pytest.raises(ConfigError, match="no password for the logic service user 'mqim-logic'"):
        resolve_target(config, broker=None, username=None, password=None)
    with pytest.raises(ConfigError, match="--broker"):
        resolve_target(config, broker="tcp://x", username=None, password="p")


async def test_logic_worker_process_serves_the_broker(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with EmbeddedServer(
        data_dir=data,
        listeners=[Listener(name="default", port=0)],
        settings=BrokerSettings(connect_timeout_s=3.0),
        embedded_logic=False,
    ) as server:
        await server.storage.add_user("svc", password=PASSWORD, kind=AccountKind.SERVICE)
        for user in ("alice", "bob"):
            await server.storage.add_user(user, password=PASSWORD)
        url = f"mqtt://svc:{PASSWORD}@127.0.0.1:{server.port()}"
        worker = await asyncio.create_subprocess_exec(
            str(MQIM),
            "logic",
            "--broker",
            url,
            "--data-dir",
            str(data),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert worker.stderr is not None
            # The worker logs once it is connected and subscribed.
            line = await asyncio.wait_for(worker.stderr.readline(), 30)
            assert b"logic service connected" in line, line
            async with MqimClient(
                port=server.port(), user="alice", password=PASSWORD, ack_timeout=10
            ) as alice:
                ack = await alice.send(to="bob", text="via the worker")
            assert ack.conv == "d:alice:bob"
            assert ack.seq == 1
            stored = await server.storage.get_messages("d:alice:bob")
            assert [m.client_id for m in stored] == [ack.id]
        finally:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(worker.communicate(), 30)
        assert worker.returncode == 0, err.decode()
        assert b"logic service stopped" in err


async def test_logic_worker_wrong_password_fails_with_one_line(tmp_path: Path) -> None:
    async with EmbeddedServer(
        data_dir=tmp_path / "data",
        listeners=[Listener(name="default", port=0)],
        settings=BrokerSettings(connect_timeout_s=3.0),
        embedded_logic=False,
    ) as server:
        proc = await asyncio.create_subprocess_exec(
            str(MQIM),
            "logic",
            "--broker",
            f"mqtt://svc:wrong@127.0.0.1:{server.port()}",
            "--data-dir",
            str(tmp_path / "worker"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert err.decode().splitlines()[-1].startswith("error: logic service cannot use the broker")
