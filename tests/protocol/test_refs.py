"""Request ids read from raw payloads (`peek_request_id`, `request_ref`)."""

from __future__ import annotations

import json

from mqim.protocol import peek_request_id, request_ref


def test_peek_finds_a_leading_id_only() -> None:
    assert peek_request_id(b'{"v":1,"id":"c-1","text":"hi') == "c-1"  # truncated head
    assert peek_request_id(b' {"id" : "c-1"}') == "c-1"
    assert peek_request_id(b'{"ops":[{"id":"x"}],"id":"c-1"}') is None  # after a nested value
    assert peek_request_id(b'{"id":"has space"}') is None  # breaks the id rule
    assert peek_request_id(b"\xff\xfe garbage") is None


def test_request_ref_parses_small_payloads_whole() -> None:
    assert request_ref(json.dumps({"text": "x", "id": "c-1"}).encode()) == "c-1"  # id last
    assert request_ref(json.dumps({"id": "x" * 200}).encode()) is None  # too long an id
    assert request_ref(json.dumps({"id": 7}).encode()) is None
    assert request_ref(b"[1, 2]") is None
    assert request_ref(b"") is None


def test_request_ref_falls_back_to_the_head() -> None:
    deep = b'{"id":"c-1","a":' + b"[" * 5000 + b"]" * 5000 + b"}"  # nested too deep to parse
    assert request_ref(deep) == "c-1"
    truncated = b'{"v":1,"id":"c-2","text":"' + b"x" * 100
    assert request_ref(truncated) == "c-2"
    big = json.dumps({"ops": [{"id": "x"}], "text": "x" * 1000, "id": "c-3"}).encode()
    assert request_ref(big) == "c-3"
    assert request_ref(big, max_parse_bytes=100) is None  # past the bound, only the head rule
    assert request_ref(b'{"id":"c-4","text":"' + b"x" * 1000 + b'"}', max_parse_bytes=100) == "c-4"
