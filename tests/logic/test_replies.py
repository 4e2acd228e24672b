"""Unit tests of the pure reply builders (mqim.logic._replies) and the TTL LRU cache."""

from __future__ import annotations

import json

from mqim.logic._cache import TtlLru
from mqim.logic._replies import (
    Outbound,
    ack_payload,
    delivered_payload,
    direct_replies,
    error_payload,
    error_reply,
)
from mqim.protocol import ErrorCode
from mqim.storage import MessageRecord


def record(
    *, sender: str = "alice", conv: str = "d:alice:bob", body: dict[str, object] | None = None
) -> MessageRecord:
    return MessageRecord(
        conv=conv,
        seq=7,
        server_id="srv-1",
        sender=sender,
        client_id="c-17",
        ts=1_764_200_000_123,
        kind="msg",
        body={"text": "hi"} if body is None else body,
    )


def test_delivered_payload_matches_the_wire_contract() -> None:
    assert json.loads(delivered_payload(record())) == {
        "v": 1,
        "conv": "d:alice:bob",
        "seq": 7,
        "server_id": "srv-1",
        "id": "c-17",
        "from": "alice",
        "ts": 1_764_200_000_123,
        "text": "hi",
    }


def test_delivered_payload_carries_data_and_omits_absent_text() -> None:
    wire = json.loads(delivered_payload(record(body={"data": {"t": 1}})))
    assert wire["data"] == {"t": 1}
    assert "text" not in wire


def test_ack_payload() -> None:
    assert json.loads(ack_payload(record())) == {
        "v": 1,
        "id": "c-17",
        "conv": "d:alice:bob",
        "seq": 7,
        "server_id": "srv-1",
        "ts": 1_764_200_000_123,
    }


def test_error_payload_keeps_null_ref() -> None:
    assert json.loads(error_payload(ref=None, code=ErrorCode.BAD_REQUEST, message="nope")) == {
        "v": 1,
        "ref": None,
        "code": "bad_request",
        "message": "nope",
    }


def test_error_reply_goes_to_the_senders_error_topic() -> None:
    reply = error_reply("alice", ref="c-1", code=ErrorCode.NOT_FOUND, message="user 'x' not found")
    assert reply.topic == "im/v1/u/alice/error"
    assert reply.qos == 1
    assert json.loads(reply.payload)["code"] == "not_found"


def test_new_message_goes_to_peer_then_sender_devices_then_ack() -> None:
    replies = direct_replies(record(), peer="bob", created=True)
    assert [r.topic for r in replies] == ["im/v1/u/bob/msg", "im/v1/u/alice/msg", "im/v1/u/alice/ack"]
    assert replies[0].payload == replies[1].payload == delivered_payload(record())
    assert replies[2].payload == ack_payload(record())
    assert all(r.qos == 1 for r in replies)


def test_retry_gets_only_the_same_ack() -> None:
    assert direct_replies(record(), peer="bob", created=False) == [
        Outbound("im/v1/u/alice/ack", ack_payload(record()))
    ]


def test_note_to_self_is_delivered_once() -> None:
    replies = direct_replies(record(conv="d:alice:alice"), peer="alice", created=True)
    assert [r.topic for r in replies] == ["im/v1/u/alice/msg", "im/v1/u/alice/ack"]


def test_ttl_lru_expires_and_evicts_least_recently_used() -> None:
    cache: TtlLru[str, int | None] = TtlLru(maxsize=2, ttl=10.0)
    cache.put("a", 1, now=0.0)
    cache.put("b", None, now=0.0)
    assert cache.get("b", now=1.0) == (True, None)  # absence is cached too
    assert cache.get("a", now=1.0) == (True, 1)  # "a" becomes most recent
    cache.put("c", 3, now=2.0)  # evicts "b"
    assert cache.get("b", now=2.0) == (False, None)
    assert cache.get("a", now=9.9) == (True, 1)
    assert cache.get("a", now=10.0) == (False, None)  # expired
    assert len(cache) == 1
    cache.discard("c")
    cache.discard("missing")
    assert len(cache) == 0
