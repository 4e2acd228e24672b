"""Payload round trips of the target adapters (what publishers send, what subscribers read)."""

from __future__ import annotations

import json

from mqim.bench._adapters import AdapterSpec, Delivery, ImAdapter, PlainAdapter, make_adapter


def test_plain_round_trip_and_foreign_runs_are_ignored() -> None:
    adapter = make_adapter(AdapterSpec(kind="plain", run="r1"))
    assert isinstance(adapter, PlainAdapter)
    topic, payload = adapter.message("p2p-pub", 7, 123_456)
    assert adapter.client("p2p-sub", 0).subscribe == topic
    assert adapter.decode(topic, payload) == Delivery(topic, 7, 123_456, None)
    other = PlainAdapter(AdapterSpec(kind="plain", run="r2"))
    assert other.decode(topic, payload) is None
    assert adapter.decode(topic, b"not json") is None
    assert adapter.decode(topic, b'{"t": true, "n": 1}') is None


def test_crowd_clients_have_distinct_ids_and_topics() -> None:
    adapter = PlainAdapter(AdapterSpec(kind="plain", run="r1", username="u", password="p"))
    clients = [adapter.client("crowd", i) for i in range(3)]
    assert len({c.client_id for c in clients}) == 3
    assert len({c.subscribe for c in clients}) == 3
    assert all(c.username == "u" and c.password == "p" and c.clean_session for c in clients)


def test_im_request_and_delivery() -> None:
    adapter = ImAdapter(AdapterSpec(kind="im", run="r9", password="pw"))
    topic, payload = adapter.message("p2p-pub", 3, 42)
    assert topic == "im/v1/up/alice/msg"
    request = json.loads(payload)
    assert request["to"] == "bob"
    assert request["data"] == {"t": 42, "n": 3, "r": "r9"}
    bob = adapter.client("p2p-sub", 0)
    assert (bob.username, bob.password, bob.clean_session) == ("bob", "pw", False)
    assert bob.subscribe == "im/v1/u/bob/msg"
    # What the server delivers to bob (DESIGN.md section 2), carrying the request's data.
    delivered = {
        "v": 1,
        "conv": "d:alice:bob",
        "seq": 17,
        "server_id": "s",
        "id": request["id"],
        "from": "alice",
        "ts": 1,
        "text": "x",
        "data": request["data"],
    }
    got = adapter.decode("im/v1/u/bob/msg", json.dumps(delivered).encode())
    assert got == Delivery("d:alice:bob", 3, 42, 17)
    stale = {**delivered, "data": {**request["data"], "r": "old"}}
    assert adapter.decode("im/v1/u/bob/msg", json.dumps(stale).encode()) is None
    assert adapter.decode("im/v1/u/bob/ack", json.dumps(delivered).encode()) is None


def test_im_group_message_goes_to_the_group() -> None:
    adapter = ImAdapter(AdapterSpec(kind="im", run="r9", password="pw"))
    _, payload = adapter.message("group-pub", 1, 5)
    assert json.loads(payload)["group"] == "team"
    assert adapter.client("member", 4).username == "member-4"
    assert adapter.client("member", 4).subscribe == "im/v1/g/team/msg"
