"""mqim bridging out to a real Mosquitto: both directions, prefixes, no loop, restarts, `mqim bridge list`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mqim.bridge import BRIDGES_FILENAME, BridgeConfig, BridgesFile, OutboundBridge, save_bridges
from mqim.cli import app
from mqim.server import EmbeddedServer
from tests.bridge.conftest import MosquittoFactory, eventually, mqim_server
from tests.bridge.mosquitto import Mosquitto
from tests.conftest import PASSWORD, free_port
from tests.support.mqtt import Paho

# The IM logic is not needed here: these tests are about MQTT topics only.
RULES = [
    "allow user:alice publish,subscribe,receive site/#",
    "allow user:alice publish,subscribe,receive loop/#",
]


def _write_bridges(data_dir: Path, *bridges: dict[str, Any]) -> None:
    save_bridges(
        data_dir / BRIDGES_FILENAME, BridgesFile(bridges=[BridgeConfig.model_validate(b) for b in bridges])
    )


def _bridge(server: EmbeddedServer, name: str) -> OutboundBridge:
    assert server.bridges is not None
    return server.bridges.bridges[name]


@pytest.fixture
async def remote(mosquitto_factory: MosquittoFactory) -> Mosquitto:
    return await mosquitto_factory(persistence=True)


@pytest.fixture
async def server(tmp_path: Path, remote: Mosquitto) -> AsyncIterator[EmbeddedServer]:
    data_dir = tmp_path / "mqim"
    data_dir.mkdir()
    _write_bridges(
        data_dir,
        {
            "name": "edge",
            "remote": f"mqtt://127.0.0.1:{remote.port}",
            "topics": ["sensors/# both 1 site/ edge/", "loop/# both 1"],
            "reconnect_min_delay": 0.2,
            "reconnect_max_delay": 1.0,
        },
    )
    async with mqim_server(data_dir, free_port(), rules=RULES, embedded_logic=False) as srv:
        await srv.storage.add_user("alice", password=PASSWORD)
        await eventually(lambda: _bridge(srv, "edge").connected, what="bridge connected")
        yield srv


async def _clients(
    server: EmbeddedServer, remote: Mosquitto, local_filter: str, remote_filter: str
) -> tuple[Paho, Paho]:
    alice = Paho(port=server.port(), user="alice", password=PASSWORD, client_id="alice-1")
    await alice.connect()
    assert await alice.subscribe(local_filter, qos=1) == 1
    far = Paho(port=remote.port, user=None, client_id="far-1")
    await far.connect()
    await far.subscribe(remote_filter, qos=1)
    return alice, far


async def test_both_ways_with_prefixes_and_no_echo(server: EmbeddedServer, remote: Mosquitto) -> None:
    alice, far = await _clients(server, remote, "site/#", "edge/#")
    bridge = _bridge(server, "edge")
    try:
        # mqim -> remote, with the prefix swapped; the remote's echo is dropped, not delivered again.
        await alice.publish("site/sensors/t1", b"20", qos=1)
        got = await far.receive()
        assert (got.topic, got.payload, got.qos) == ("edge/sensors/t1", b"20", 1)
        assert (await alice.receive()).topic == "site/sensors/t1"
        await eventually(lambda: bridge.stats.dropped_loops == 1, what="the echo dropped")
        await far.nothing(0.5)
        await alice.nothing(0.2)
        assert bridge.stats.messages_out == 1
        assert bridge.stats.messages_in == 0

        # remote -> mqim; it is not exported back to the remote.
        await far.publish("edge/sensors/t2", b"21", qos=1)
        got = await alice.receive()
        assert (got.topic, got.payload, got.qos) == ("site/sensors/t2", b"21", 1)
        assert (await far.receive()).topic == "edge/sensors/t2"  # its own publish, once
        await far.nothing(0.5)
        await alice.nothing(0.2)
        assert bridge.stats.messages_in == 1
        assert bridge.stats.messages_out == 1
        assert bridge.stats.dropped_loops == 2  # the echo, and the re-export that never happened
        assert bridge.stats.errors == 0

        # Topics outside the rules do not cross.
        await alice.publish("site/other", b"x", qos=1)
        await alice.receive()
        await far.nothing(0.3)
    finally:
        alice.close()
        far.close()


async def test_same_topic_both_ways_cannot_loop_even_without_the_echo_guard(
    tmp_path: Path, remote: Mosquitto
) -> None:
    # With a tiny echo window the remote's echo is no longer recognised: it comes back in once,
    # and origin marking still keeps it from going out again. A loop would flood `far`.
    data_dir = tmp_path / "noguard"
    data_dir.mkdir()
    _write_bridges(
        data_dir,
        {
            "name": "plain",
            "remote": f"mqtt://127.0.0.1:{remote.port}",
            "topics": ["loop/# both 1"],
            "echo_window_s": 0.000001,
        },
    )
    async with mqim_server(data_dir, free_port(), rules=RULES, embedded_logic=False) as server:
        await server.storage.add_user("alice", password=PASSWORD)
        bridge = _bridge(server, "plain")
        await eventually(lambda: bridge.connected, what="bridge connected")
        alice, far = await _clients(server, remote, "loop/#", "loop/#")
        try:
            await alice.publish("loop/a", b"once", qos=1)
            assert (await far.receive()).payload == b"once"
            assert (await alice.receive()).payload == b"once"
            assert (await alice.receive()).payload == b"once"  # the unrecognised echo
            await far.nothing(1.0)
            await alice.nothing(0.2)
            assert bridge.stats.messages_out == 1
            assert bridge.stats.messages_in == 1
            assert bridge.stats.dropped_loops == 1
        finally:
            alice.close()
            far.close()


@pytest.mark.slow
async def test_outbound_survives_remote_and_mqim_restarts(tmp_path: Path, remote: Mosquitto) -> None:
    data_dir = tmp_path / "restarts"
    data_dir.mkdir()
    port = free_port()
    _write_bridges(
        data_dir,
        {
            "name": "edge",
            "remote": f"mqtt://127.0.0.1:{remote.port}",
            "topics": ["sensors/# both 1 site/ edge/"],
            "reconnect_min_delay": 0.2,
            "reconnect_max_delay": 1.0,
        },
    )
    far = Paho(port=remote.port, user=None, client_id="far-p", clean_session=False)
    await far.connect()
    await far.subscribe("edge/sensors/#", qos=1)
    server = mqim_server(data_dir, port, rules=RULES, embedded_logic=False)
    await server.__aenter__()
    try:
        await server.storage.add_user("alice", password=PASSWORD)
        await eventually(lambda: _bridge(server, "edge").connected, what="bridge connected")
        alice = Paho(port=port, user="alice", password=PASSWORD, client_id="alice-p", clean_session=False)
        await alice.connect()
        await alice.subscribe("site/sensors/in", qos=1)

        # The remote restarts while mqim publishes: what is pending goes out after the reconnect.
        await remote.stop()
        await eventually(lambda: not _bridge(server, "edge").connected, what="bridge down")
        for n in range(10):
            await alice.publish("site/sensors/out", str(n).encode(), qos=1)
        await remote.start()
        await eventually(lambda: _bridge(server, "edge").stats.reconnects >= 1, timeout=20, what="reconnect")

        # mqim restarts while the remote publishes: its persistent session there keeps them.
        await server.__aexit__(None, None, None)
        pub = Paho(port=remote.port, user=None, client_id="far-pub")
        await pub.connect()
        for n in range(10):
            await pub.publish("edge/sensors/in", str(n).encode(), qos=1)
        pub.close()
        server = mqim_server(data_dir, port, rules=RULES, embedded_logic=False)
        await server.__aenter__()

        async def collect(client: Paho, topic: str) -> set[str]:
            seen: set[str] = set()
            for _ in range(100):
                if len(seen) == 10:
                    break
                msg = await client.receive(timeout=20)
                if msg.topic == topic:
                    seen.add(msg.payload.decode())
            return seen

        want = {str(n) for n in range(10)}
        assert await collect(far, "edge/sensors/out") == want
        assert await collect(alice, "site/sensors/in") == want
        alice.close()
        far.close()
    finally:
        await server.__aexit__(None, None, None)


async def test_cli_defines_a_bridge_the_server_runs_and_lists(tmp_path: Path, remote: Mosquitto) -> None:
    runner = CliRunner()
    data_dir = tmp_path / "cli"
    d = ["--data-dir", str(data_dir)]
    result = runner.invoke(
        app,
        [
            "bridge", "add", "edge", "--remote", f"mqtt://127.0.0.1:{remote.port}",
            "--topic", "sensors/# both 1 site/ edge/", "--topic", '"" in 1 site/cmd edge/cmd', *d,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    bad = runner.invoke(app, ["bridge", "add", "x", "--remote", "http://h", "--topic", "a/#", *d])
    assert bad.exit_code == 2
    bad = runner.invoke(app, ["bridge", "add", "y", "--remote", "mqtt://h", "--topic", "a/# sideways 1", *d])
    assert bad.exit_code == 2
    listed = runner.invoke(app, ["bridge", "list", *d])
    assert "edge" in listed.output
    assert "not running" in listed.output

    async with mqim_server(data_dir, free_port(), rules=RULES, embedded_logic=False) as server:
        await server.storage.add_user("alice", password=PASSWORD)
        bridge = _bridge(server, "edge")
        await eventually(lambda: bridge.connected, what="bridge connected")
        alice = Paho(port=server.port(), user="alice", password=PASSWORD, client_id="alice-cli")
        await alice.connect()
        await alice.publish("site/sensors/x", b"1", qos=1)
        await eventually(lambda: bridge.stats.messages_out == 1, what="forwarded")
        alice.close()

        def status() -> dict[str, Any] | None:
            out = runner.invoke(app, ["bridge", "list", "--json", *d])
            doc = json.loads(out.output)
            st: dict[str, Any] | None = doc["bridges"][0]["status"]
            return st if st and st["messages_out"] == 1 and st["state"] == "connected" else None

        st = await eventually(status, what="status file")
        assert server.broker is not None
        extra = server.broker.hub.counters.extra
        assert extra["bridge_outbound_edge_messages_out"] == 1  # mirrored into the broker's metrics
        assert extra["bridge_outbound_edge_connected"] == 1
        assert st["dropped_loops"] == 1  # the remote's echo
        table = runner.invoke(app, ["bridge", "list", *d]).output
        assert "connected" in table
        assert "sensors/# both 1 site/ edge/" in table

    assert runner.invoke(app, ["bridge", "remove", "edge", *d]).exit_code == 0
    assert runner.invoke(app, ["bridge", "remove", "edge", *d]).exit_code == 1
