"""Device messages into uplink requests, conversation commands out to devices (pure)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from mqim.bridge import CommandRoute, ImMapping, command_for, stable_message_id, uplink_for
from mqim.logic import LogicLimits
from mqim.logic._validate import parse_send


def test_uplink_is_a_valid_group_send_with_a_stable_id() -> None:
    mapping = ImMapping(
        name="m", source="bridge/plant7/alarms/+", sender="plant7", group="ops", text="${last}: ${payload}"
    )
    topic, payload = uplink_for(mapping, "bridge/plant7/alarms/boiler", b'{"level":"high"}')
    assert topic == "im/v1/up/plant7/msg"
    body = json.loads(payload)
    assert body["group"] == "ops"
    assert "to" not in body
    assert body["data"] == {"topic": "bridge/plant7/alarms/boiler", "payload": {"level": "high"}}
    assert body["text"] == 'boiler: {"level":"high"}'
    assert body["id"] == stable_message_id("bridge/plant7/alarms/boiler", b'{"level":"high"}')
    again = json.loads(uplink_for(mapping, "bridge/plant7/alarms/boiler", b'{"level":"high"}')[1])
    assert again["id"] == body["id"]
    other = json.loads(uplink_for(mapping, "bridge/plant7/alarms/boiler", b'{"level":"low"}')[1])
    assert other["id"] != body["id"]
    request = parse_send(payload, limits=LogicLimits())
    assert request.group == "ops"


def test_uplink_payload_forms() -> None:
    mapping = ImMapping(name="m", source="d/#", sender="dev", to="alice")
    text = json.loads(uplink_for(mapping, "d/x", b"not json")[1])
    assert text["to"] == "alice"
    assert text["data"]["payload"] == "not json"
    raw = json.loads(uplink_for(mapping, "d/x", b"\xff\x00")[1])
    assert raw["data"]["payload_b64"] == "/wA="
    assert parse_send(uplink_for(mapping, "d/x", b"1")[1], limits=LogicLimits()).to == "alice"


@pytest.mark.parametrize(
    "bad",
    [
        {"source": "d/#", "sender": "dev"},
        {"source": "d/#", "sender": "dev", "group": "g", "to": "u"},
        {"source": "im/v1/up/x/msg", "sender": "dev", "group": "g"},
        {"source": "$SYS/#", "sender": "dev", "group": "g"},
        {"source": "d/#/x", "sender": "dev", "group": "g"},
        {"source": "d/#", "sender": "not valid", "group": "g"},
    ],
)
def test_invalid_mappings(bad: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        ImMapping.model_validate({"name": "m", **bad})


def test_command_for_messages_with_device_cmd_only() -> None:
    route = CommandRoute(name="c", group="ops", topic_prefix="bridge/plant7/cmd")
    msg = {"v": 1, "conv": "g:ops", "seq": 7, "server_id": "s", "id": "c-1", "from": "alice", "ts": 1}
    with_cmd = {**msg, "data": {"device_cmd": {"valve": "close"}, "device": "valve/3"}}
    topic, payload = command_for(route, json.dumps(with_cmd).encode()) or ("", b"")
    assert topic == "bridge/plant7/cmd/valve/3"
    assert json.loads(payload) == {
        "cmd": {"valve": "close"},
        "from": "alice",
        "conv": "g:ops",
        "seq": 7,
        "id": "c-1",
    }
    default = command_for(route, json.dumps({**msg, "data": {"device_cmd": "reboot"}}).encode())
    assert default is not None
    assert default[0] == "bridge/plant7/cmd/all"
    assert command_for(route, json.dumps({**msg, "text": "hi"}).encode()) is None
    assert command_for(route, json.dumps({**msg, "data": {"other": 1}}).encode()) is None
    assert command_for(route, b"not json") is None
    assert command_for(route, b"[1]") is None
    for device in ("a/+", "#", "../x", "", 5, "a" * 65):
        bad = {**msg, "data": {"device_cmd": 1, "device": device}}
        assert command_for(route, json.dumps(bad).encode()) is None


def test_invalid_command_routes() -> None:
    for bad in (
        {"topic_prefix": "bridge/x/cmd"},
        {"topic_prefix": "bridge/x/cmd", "group": "g", "user": "u"},
        {"topic_prefix": "bridge/+/cmd", "group": "g"},
        {"topic_prefix": "im/v1/u/x", "group": "g"},
        {"topic_prefix": "bridge/x/", "group": "g"},
    ):
        with pytest.raises(ValidationError):
            CommandRoute.model_validate({"name": "c", **bad})
