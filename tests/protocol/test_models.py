"""Payload models: requests are lenient about extra fields, replies keep their wire names."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from mqim.protocol import Ack, DeliveredMessage, ErrorCode, ErrorPayload, SendRequest
from mqim.protocol._models import ReplyEncoder


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


DELIVERED_CASES: list[dict[str, Any]] = [
    {"conv": "d:a:b", "seq": 1, "server_id": "s", "id": "c-1", "sender": "a", "ts": 5, "text": "hi"},
    {
        "conv": "g:team",
        "seq": 2**40,
        "server_id": "0123456789abcdef",
        "id": "c.2_x",
        "sender": "bob",
        "ts": 1_733_000_000_000,
        "text": 'h\u00e9 \U0001f600 "q" \\ \n\t\u2028',
        "data": {"a": None, "b": [1, 2.5, 1e20, -0.0, None, {"c": None}], "d": True, "e": ""},
    },
    {"conv": "d:a:b", "seq": 3, "server_id": "s", "id": "c-3", "sender": "a", "ts": 5, "data": {}},
    {"conv": "d:a:b", "seq": 4, "server_id": "s", "id": "c-4", "sender": "a", "ts": 5, "text": "new"}
    | {"op": "edit", "ref_seq": 1},
    {"conv": "d:a:b", "seq": 5, "server_id": "s", "id": "c-5", "sender": "a", "ts": 5, "op": "recall"}
    | {"ref_seq": 1},
    {"conv": "d:a:a", "seq": 6, "server_id": "s", "id": "c-6", "sender": "a", "ts": 5, "op": "delete"}
    | {"ref_seq": 2, "ref_conv": "d:a:b"},
    {"conv": "d:a:b", "seq": 7, "server_id": "s", "id": "c-7", "sender": "a", "ts": 5, "deleted": True},
]


@pytest.mark.parametrize("fields", DELIVERED_CASES)
def test_the_reply_encoder_writes_the_models_bytes(fields: dict[str, Any]) -> None:
    encoded = ReplyEncoder(DeliveredMessage)(**fields)
    model = DeliveredMessage(**fields)
    assert encoded == model.to_json()
    assert DeliveredMessage.model_validate_json(encoded) == model  # the contract reads it back


def test_the_reply_encoder_leaves_out_nones_and_refuses_unknown_fields() -> None:
    ack = ReplyEncoder(Ack)
    fields: dict[str, Any] = {"id": "c-1", "conv": "d:a:b", "seq": 3, "server_id": "s", "ts": 9}
    assert ack(**fields) == Ack(**fields).to_json()
    encode = ReplyEncoder(DeliveredMessage)
    plain = DELIVERED_CASES[0]
    assert encode(**plain, data=None, op=None) == encode(**plain)
    with pytest.raises(TypeError, match="no field"):
        ack(**fields, extra=1)
    with pytest.raises(TypeError):
        ReplyEncoder(ErrorPayload)  # keeps a null `ref`: not the encoder's rule
