"""Payload models: requests are lenient about extra fields, replies keep their wire names."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from mqim.protocol import Ack, DeliveredMessage, ErrorCode, ErrorPayload, SendRequest


def test_send_request_direct_and_group() -> None:
    direct = SendRequest.model_validate_json(b'{"v":1,"id":"c-1","to":"bob","text":"hi","extra":1}')
    assert (direct.id, direct.to, direct.group, direct.text) == ("c-1", "bob", None, "hi")
    group = SendRequest.model_validate({"v": 1, "id": "c-2", "group": "team", "data": {"t": 1}})
    assert (group.group, group.data) == ("team", {"t": 1})


@pytest.mark.parametrize(
    "payload",
    [
        {"v": 1, "id": "c", "text": "no target"},
        {"v": 1, "id": "c", "to": "a", "group": "g", "text": "both"},
        {"v": 1, "id": "c", "to": "a"},
        {"v": 2, "id": "c", "to": "a", "text": "x"},
        {"v": 1, "id": "bad id", "to": "a", "text": "x"},
        {"v": 1, "id": "c", "to": "a/b", "text": "x"},
        {"v": 1, "to": "a", "text": "x"},
    ],
)
def test_send_request_refuses_broken_requests(payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SendRequest.model_validate(payload)


def test_delivered_message_uses_the_wire_name_from() -> None:
    fields = {"conv": "d:a:b", "seq": 1, "server_id": "s", "id": "c-1", "from": "a", "ts": 5, "text": "hi"}
    msg = DeliveredMessage.model_validate(fields)
    assert msg.sender == "a"
    body = json.loads(msg.to_json())
    assert body == {
        "v": 1,
        "conv": "d:a:b",
        "seq": 1,
        "server_id": "s",
        "id": "c-1",
        "from": "a",
        "ts": 5,
        "text": "hi",
    }


def test_ack_and_error_payloads() -> None:
    ack = json.loads(Ack(id="c-1", conv="d:a:b", seq=3, server_id="s", ts=9).to_json())
    assert ack == {"v": 1, "id": "c-1", "conv": "d:a:b", "seq": 3, "server_id": "s", "ts": 9}
    error = json.loads(ErrorPayload(ref=None, code=ErrorCode.TOO_LARGE, message="big").to_json())
    assert error == {"v": 1, "ref": None, "code": "too_large", "message": "big"}  # ref kept when null
