"""Bridged device traffic becomes conversation messages; conversation commands go out to devices.

Real Mosquitto bridged into mqim (default bridge settings); the mapping and command routes are
defined in `<data_dir>/bridges.json` and run by the embedded server; the logic service stores,
sequences and acks the mapped messages like any other.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mqim.bridge import (
    BRIDGES_FILENAME,
    BridgesFile,
    CommandRoute,
    ImMapping,
    save_bridges,
    stable_message_id,
)
from mqim.server import EmbeddedServer
from mqim.storage import AccountKind
from tests.bridge.conftest import MosquittoFactory, bridge_config, bridge_session, eventually, mqim_server
from tests.conftest import PASSWORD, free_port
from tests.support.mqtt import Paho

DEVICE = "plant7"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    data_dir = tmp_path / "mqim"
    data_dir.mkdir()
    save_bridges(
        data_dir / BRIDGES_FILENAME,
        BridgesFile(
            mappings=[
                ImMapping(
                    name="plant7-alarms",
                    source=f"bridge/{DEVICE}/alarms/+",
                    sender=DEVICE,
                    to="alice",
                    text="alarm ${last}",
                )
            ],
            commands=[CommandRoute(name="plant7-cmd", user=DEVICE, topic_prefix=f"bridge/{DEVICE}/cmd")],
        ),
    )
    async with mqim_server(data_dir, free_port()) as srv:
        # The device's account is the bridge account: it logs Mosquitto in and is the sender.
        await srv.storage.add_user(DEVICE, password="bridge-pw", kind=AccountKind.BRIDGE)
        await srv.storage.add_user("alice", password=PASSWORD)
        yield srv


@pytest.fixture
async def edge(server: EmbeddedServer, mosquitto_factory: MosquittoFactory) -> AsyncIterator[Paho]:
    config = bridge_config(
        name=DEVICE, port=server.port(), user=DEVICE, password="bridge-pw", topic=f"bridge/{DEVICE}/# both 1"
    )
    mosq = await mosquitto_factory(extra=config)
    await eventually(lambda: bridge_session(server, DEVICE), what="bridge session")
    client = Paho(port=mosq.port, user=None, client_id="plc")
    await client.connect()
    await client.subscribe(f"bridge/{DEVICE}/cmd/#", qos=1)
    yield client
    client.close()


def _collect(server: EmbeddedServer, topic: str) -> list[dict[str, Any]]:
    assert server.broker is not None
    seen: list[dict[str, Any]] = []
    server.broker.attach_listener(topic, lambda _topic, payload: seen.append(json.loads(payload)))
    return seen


async def test_a_bridged_alarm_becomes_a_stored_acked_message(server: EmbeddedServer, edge: Paho) -> None:
    acks = _collect(server, f"im/v1/u/{DEVICE}/ack")
    errors = _collect(server, f"im/v1/u/{DEVICE}/error")
    alice = Paho(port=server.port(), user="alice", password=PASSWORD, client_id="alice-1")
    await alice.connect()
    try:
        alarm = b'{"level":"high","t":1764200000}'
        await edge.publish(f"bridge/{DEVICE}/alarms/boiler", alarm, qos=1)
        msg = (await alice.receive_on("/msg")).json()
        assert msg["conv"] == f"d:alice:{DEVICE}"
        assert msg["seq"] == 1
        assert msg["from"] == DEVICE
        assert msg["text"] == "alarm boiler"
        assert msg["data"] == {
            "topic": f"bridge/{DEVICE}/alarms/boiler",
            "payload": {"level": "high", "t": 1764200000},
        }
        ack = (await eventually(lambda: acks, what="the ack"))[0]
        assert ack["id"] == msg["id"] == stable_message_id(f"bridge/{DEVICE}/alarms/boiler", alarm)
        assert (ack["conv"], ack["seq"], ack["server_id"]) == (msg["conv"], 1, msg["server_id"])

        # The same device message again (a QoS 1 redelivery): the same ack, nothing new stored.
        await edge.publish(f"bridge/{DEVICE}/alarms/boiler", alarm, qos=1)
        await eventually(lambda: len(acks) == 2, what="the second ack")
        assert acks[1] == acks[0]
        # A different alarm is the next message of the conversation.
        await edge.publish(f"bridge/{DEVICE}/alarms/pump", b"dry run", qos=1)
        msg2 = (await alice.receive_on("/msg")).json()
        assert (msg2["seq"], msg2["data"]["payload"]) == (2, "dry run")
        await alice.nothing(0.3, suffix="/msg")
        assert errors == []

        history = await server.storage.get_messages(f"d:alice:{DEVICE}")
        assert [(m.seq, m.sender) for m in history] == [(1, DEVICE), (2, DEVICE)]
        # Topics outside the mapping's source are not turned into messages.
        await edge.publish(f"bridge/{DEVICE}/telemetry/x", b"1", qos=1)
        await alice.nothing(0.5, suffix="/msg")
    finally:
        alice.close()


async def test_a_conversation_command_goes_out_to_the_device(server: EmbeddedServer, edge: Paho) -> None:
    alice = Paho(port=server.port(), user="alice", password=PASSWORD, client_id="alice-2")
    await alice.connect()
    try:
        command = {
            "v": 1,
            "id": "c-1",
            "to": DEVICE,
            "data": {"device_cmd": {"valve": "close"}, "device": "valve3"},
        }
        await alice.publish("im/v1/up/alice/msg", command, qos=1)
        ack = (await alice.receive_on("/ack")).json()
        got = await edge.receive()
        assert got.topic == f"bridge/{DEVICE}/cmd/valve3"
        assert json.loads(got.payload) == {
            "cmd": {"valve": "close"},
            "from": "alice",
            "conv": f"d:alice:{DEVICE}",
            "seq": ack["seq"],
            "id": "c-1",
        }
        # An ordinary message is not a command.
        await alice.publish("im/v1/up/alice/msg", {"v": 1, "id": "c-2", "to": DEVICE, "text": "hello"}, qos=1)
        await alice.receive_on("/ack")
        await edge.nothing(0.5)
    finally:
        alice.close()


async def test_group_alarms_and_group_commands(tmp_path: Path, mosquitto_factory: MosquittoFactory) -> None:
    """The issue's example: `bridge/plant7/alarms/+` -> group `ops`, commands in `ops` -> the device."""
    data_dir = tmp_path / "groups"
    data_dir.mkdir()
    save_bridges(
        data_dir / BRIDGES_FILENAME,
        BridgesFile(
            mappings=[
                ImMapping(name="alarms", source=f"bridge/{DEVICE}/alarms/+", sender=DEVICE, group="ops")
            ],
            commands=[CommandRoute(name="ops-cmd", group="ops", topic_prefix=f"bridge/{DEVICE}/cmd")],
        ),
    )
    async with mqim_server(data_dir, free_port()) as server:
        await server.storage.add_user(DEVICE, password="bridge-pw", kind=AccountKind.BRIDGE)
        await server.storage.add_user("alice", password=PASSWORD)
        await server.storage.create_group("ops", name="Operations", owner="alice", members=["alice", DEVICE])
        group_messages = _collect(server, "im/v1/g/ops/msg")
        acks = _collect(server, f"im/v1/u/{DEVICE}/ack")
        errors = _collect(server, f"im/v1/u/{DEVICE}/error")
        config = bridge_config(
            name=DEVICE,
            port=server.port(),
            user=DEVICE,
            password="bridge-pw",
            topic=f"bridge/{DEVICE}/# both 1",
        )
        mosq = await mosquitto_factory(extra=config)
        await eventually(lambda: bridge_session(server, DEVICE), what="bridge session")
        plc = Paho(port=mosq.port, user=None, client_id="plc-g")
        await plc.connect()
        await plc.subscribe(f"bridge/{DEVICE}/cmd/#", qos=1)
        alice = Paho(port=server.port(), user="alice", password=PASSWORD, client_id="alice-g")
        await alice.connect()
        try:
            await plc.publish(f"bridge/{DEVICE}/alarms/boiler", b'{"level":"high"}', qos=1)
            await eventually(lambda: group_messages and acks, what=f"group message and ack, errors={errors}")
            msg, ack = group_messages[0], acks[0]
            assert (msg["conv"], msg["seq"], msg["from"]) == ("g:ops", 1, DEVICE)
            assert msg["data"]["payload"] == {"level": "high"}
            assert (ack["conv"], ack["seq"], ack["id"]) == ("g:ops", 1, msg["id"])
            stored = await server.storage.get_messages("g:ops")
            assert [(m.seq, m.sender) for m in stored] == [(1, DEVICE)]

            command = {
                "v": 1,
                "id": "g-1",
                "group": "ops",
                "data": {"device_cmd": "reset", "device": "boiler"},
            }
            await alice.publish("im/v1/up/alice/msg", command, qos=1)
            got = await plc.receive()
            assert got.topic == f"bridge/{DEVICE}/cmd/boiler"
            assert json.loads(got.payload) == {
                "cmd": "reset",
                "from": "alice",
                "conv": "g:ops",
                "seq": 2,
                "id": "g-1",
            }
            await plc.nothing(0.5)
            assert errors == []
        finally:
            alice.close()
            plc.close()
