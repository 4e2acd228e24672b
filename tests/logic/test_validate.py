"""Unit tests of the pure request validation (mqim.logic._validate)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqim.logic import LogicLimits, RequestRejected
from mqim.logic._validate import decode_request, extract_ref, parse_send, read_ref, unsupported_kind_message
from mqim.protocol import ErrorCode, ProtocolError

LIMITS = LogicLimits()


def enc(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def rejected(payload: bytes, *, limits: LogicLimits = LIMITS) -> RequestRejected:
    with pytest.raises(RequestRejected) as info:
        parse_send(payload, limits=limits)
    return info.value


def test_valid_direct_message() -> None:
    request = parse_send(enc({"v": 1, "id": "c-17", "to": "bob", "text": "hi"}), limits=LIMITS)
    assert (request.id, request.to, request.group, request.text, request.data) == (
        "c-17",
        "bob",
        None,
        "hi",
        None,
    )


def test_valid_data_only_message_and_unknown_fields_ignored() -> None:
    payload = enc({"id": "c-1", "to": "bob", "data": {"temp": 21.5}, "future_field": [1, 2]})
    request = parse_send(payload, limits=LIMITS)
    assert request.data == {"temp": 21.5}
    assert request.text is None


def test_valid_group_message_parses() -> None:
    # Parsing accepts groups; the service decides whether it handles them.
    request = parse_send(enc({"id": "c-1", "group": "team", "text": "hi all"}), limits=LIMITS)
    assert (request.group, request.to) == ("team", None)


def test_null_target_counts_as_absent() -> None:
    request = parse_send(enc({"id": "c-1", "to": "bob", "group": None, "text": "x"}), limits=LIMITS)
    assert request.to == "bob"


def test_rejection_is_a_protocol_error() -> None:
    assert isinstance(rejected(b"{"), ProtocolError)


@pytest.mark.parametrize(
    ("payload", "code", "ref", "fragment"),
    [
        pytest.param(
            b'{"id": "c-1", "to": ', ErrorCode.BAD_REQUEST, None, "not valid JSON", id="malformed-json"
        ),
        pytest.param(b"", ErrorCode.BAD_REQUEST, None, "not valid JSON", id="empty"),
        pytest.param(b"\xff\xfe{", ErrorCode.BAD_REQUEST, None, "", id="not-utf8"),
        pytest.param(b'{"id":"c-1","to":"bob","text":NaN}', ErrorCode.BAD_REQUEST, None, "NaN", id="nan"),
        pytest.param(enc([1, 2]), ErrorCode.BAD_REQUEST, None, "JSON object, got array", id="array"),
        pytest.param(enc("hi"), ErrorCode.BAD_REQUEST, None, "JSON object, got string", id="string"),
        pytest.param(b"null", ErrorCode.BAD_REQUEST, None, "JSON object, got null", id="null"),
        pytest.param(
            enc({"to": "bob", "text": "x"}), ErrorCode.BAD_REQUEST, None, "missing field 'id'", id="no-id"
        ),
        pytest.param(
            enc({"id": 17, "to": "bob", "text": "x"}),
            ErrorCode.BAD_REQUEST,
            None,
            "'id' must be a string",
            id="int-id",
        ),
        pytest.param(
            enc({"id": "c 17!", "to": "bob", "text": "x"}),
            ErrorCode.BAD_REQUEST,
            None,
            "invalid message id",
            id="bad-id",
        ),
        pytest.param(
            enc({"id": "x" * 65, "to": "bob", "text": "x"}), ErrorCode.BAD_REQUEST, None, "", id="long-id"
        ),
        pytest.param(
            enc({"id": "c-1", "to": "bob", "group": "team", "text": "x"}),
            ErrorCode.BAD_REQUEST,
            "c-1",
            "got both",
            id="both-targets",
        ),
        pytest.param(
            enc({"id": "c-1", "text": "x"}), ErrorCode.BAD_REQUEST, "c-1", "got neither", id="no-target"
        ),
        pytest.param(
            enc({"id": "c-1", "to": "bob/x", "text": "x"}),
            ErrorCode.BAD_REQUEST,
            "c-1",
            "invalid user id",
            id="bad-to",
        ),
        pytest.param(
            enc({"id": "c-1", "to": ["bob"], "text": "x"}),
            ErrorCode.BAD_REQUEST,
            "c-1",
            "'to' must be a string",
            id="list-to",
        ),
        pytest.param(
            enc({"id": "c-1", "group": "a+b", "text": "x"}),
            ErrorCode.BAD_REQUEST,
            "c-1",
            "invalid group id",
            id="bad-group",
        ),
        pytest.param(
            enc({"id": "c-1", "to": "bob"}),
            ErrorCode.BAD_REQUEST,
            "c-1",
            "'text' and 'data'",
            id="no-content",
        ),
        pytest.param(
            enc({"id": "c-1", "to": "bob", "text": None, "data": None}),
            ErrorCode.BAD_REQUEST,
            "c-1",
            "'text' and 'data'",
            id="null-content",
        ),
        pytest.param(
            enc({"id": "c-1", "to": "bob", "text": ""}),
            ErrorCode.BAD_REQUEST,
            "c-1",
            "empty",
            id="empty-text",
        ),
        pytest.param(
            enc({"id": "c-1", "to": "bob", "text": 5}),
            ErrorCode.BAD_REQUEST,
            "c-1",
            "'text' must be a string",
            id="int-text",
        ),
        pytest.param(
            enc({"id": "c-1", "to": "bob", "data": [1]}),
            ErrorCode.BAD_REQUEST,
            "c-1",
            "'data' must be an object",
            id="list-data",
        ),
        pytest.param(
            enc({"v": 2, "id": "c-1", "to": "bob", "text": "x"}),
            ErrorCode.BAD_REQUEST,
            "c-1",
            "version v=2",
            id="v2",
        ),
        pytest.param(
            enc({"v": True, "id": "c-1", "to": "bob", "text": "x"}),
            ErrorCode.BAD_REQUEST,
            "c-1",
            "v=true",
            id="v-true",
        ),
        pytest.param(
            b'{"id":"c-1","to":"bob","text":"\\ud800"}',
            ErrorCode.BAD_REQUEST,
            "c-1",
            "lone surrogate",
            id="surrogate",
        ),
        pytest.param(
            enc({"id": "c-1", "to": "bob", "text": "x" * (LIMITS.max_text_chars + 1)}),
            ErrorCode.TOO_LARGE,
            "c-1",
            "characters, limit is",
            id="long-text",
        ),
        pytest.param(
            enc({"id": "c-1", "to": "bob", "data": {"blob": "x" * LIMITS.max_payload_bytes}}),
            ErrorCode.TOO_LARGE,
            "c-1",
            "bytes, limit is",
            id="oversize-with-ref",
        ),
        pytest.param(
            b"x" * (LIMITS.max_payload_bytes + 1),
            ErrorCode.TOO_LARGE,
            None,
            "bytes, limit",
            id="oversize-garbage",
        ),
    ],
)
def test_rejections(payload: bytes, code: ErrorCode, ref: str | None, fragment: str) -> None:
    error = rejected(payload)
    assert error.code is code
    assert error.ref == ref
    assert fragment in error.message


def test_invalid_id_is_not_echoed_as_ref() -> None:
    assert rejected(enc({"id": "bad id", "to": "bob", "text": "x"})).ref is None


def test_too_deep_nesting_is_refused_with_ref() -> None:
    limits = LogicLimits(max_json_depth=4)
    payload = enc({"id": "c-1", "to": "bob", "data": {"a": {"b": {"c": {"d": 1}}}}})
    error = rejected(payload, limits=limits)
    assert (error.code, error.ref) == (ErrorCode.BAD_REQUEST, "c-1")
    assert "deeper than 4" in error.message
    # Depth 4 exactly is fine.
    parse_send(enc({"id": "c-1", "to": "bob", "data": {"a": {"b": {"c": 1}}}}), limits=limits)


def test_pathological_nesting_does_not_crash() -> None:
    payload = b'{"id":"c-1","to":"bob","data":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    error = rejected(payload, limits=LogicLimits(max_payload_bytes=200_000))
    assert error.code is ErrorCode.BAD_REQUEST
    assert "deeper" in error.message


def test_oversize_payload_beyond_scan_limit_takes_its_ref_from_the_head() -> None:
    # Not parsed whole past max_ref_scan_bytes: the id is read from the head, as the broker does.
    limits = LogicLimits(max_payload_bytes=100, max_ref_scan_bytes=200)
    payload = enc({"id": "c-1", "to": "bob", "text": "x" * 300})
    error = rejected(payload, limits=limits)
    assert (error.code, error.ref) == (ErrorCode.TOO_LARGE, "c-1")
    nested_first = enc({"ops": [{"id": "x"}], "id": "c-2", "text": "x" * 300})
    assert rejected(nested_first, limits=limits).ref is None  # a nested id is never the request's
    bad_id = enc({"id": "not an id!", "text": "x" * 300})
    assert rejected(bad_id, limits=limits).ref is None


def test_text_exactly_at_limit_is_accepted() -> None:
    limits = LogicLimits(max_text_chars=5)
    assert parse_send(enc({"id": "c-1", "to": "bob", "text": "héllo"}), limits=limits).text == "héllo"


def test_decode_request_and_refs() -> None:
    assert decode_request(enc({"id": "c-1"}), limits=LIMITS) == {"id": "c-1"}
    assert read_ref({"id": "c-1"}) == "c-1"
    assert read_ref({"id": 1}) is None
    assert read_ref(["c-1"]) is None
    assert extract_ref(enc({"id": "c-9", "junk": True}), limits=LIMITS) == "c-9"
    assert extract_ref(b"{not json", limits=LIMITS) is None
    assert extract_ref(b"[" * 100_000, limits=LIMITS) is None


def test_unknown_and_unsupported_kind_messages() -> None:
    assert unsupported_kind_message("read") == "request kind 'read' is not supported yet"
    message = unsupported_kind_message("frobnicate")
    assert message.startswith("unknown request kind 'frobnicate'; expected one of msg, read")
    assert len(unsupported_kind_message("k" * 10_000)) < 200  # a client cannot inflate the reply


@pytest.mark.parametrize(
    "kwargs",
    [{"max_batch": 0}, {"max_payload_bytes": -1}, {"user_cache_size": 0}, {"user_cache_ttl_s": -1.0}],
)
def test_limits_must_be_positive(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        LogicLimits(**kwargs)


def test_zero_cache_ttl_is_allowed() -> None:
    assert LogicLimits(user_cache_ttl_s=0).user_cache_ttl_s == 0


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_else(payload: bytes) -> None:
    with contextlib.suppress(RequestRejected):
        parse_send(payload, limits=LIMITS)


ids = st.sampled_from(["c-1", "bob", "team", "", "bad id", "x" * 65])
junk = st.none() | st.booleans() | st.integers() | st.lists(st.integers(), max_size=2) | st.just({"k": "v"})
request_objects = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 2, None, "1"]),
        "id": ids | junk,
        "to": ids | junk,
        "group": ids | junk,
        "text": st.text(max_size=5) | junk,
        "data": junk,
    },
)


@given(request_objects)
def test_arbitrary_objects_either_parse_or_are_rejected(obj: dict[str, Any]) -> None:
    error: RequestRejected | None = None
    try:
        request = parse_send(enc(obj), limits=LIMITS)
    except RequestRejected as exc:
        error = exc
    if error is not None:
        assert error.message
        assert error.ref in (None, obj.get("id"))
    else:
        assert request.id == obj["id"]
        assert (request.to is None) != (request.group is None)
        assert request.text is not None or request.data is not None
