"""Pure validation of uplink request payloads: bytes in, a model or `RequestRejected` out.

Errors name the request with `ref` whenever its `id` could be read, even if the rest is invalid,
so that a client can tell which of its messages was refused.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError

from mqim.logic._exceptions import RequestRejected
from mqim.logic._limits import LogicLimits
from mqim.protocol import ID_PATTERN, ErrorCode, SendRequest, UpKind, is_valid_id, request_ref

_M = TypeVar("_M", bound=BaseModel)

_OPS = ("edit", "recall", "delete")

_UP_KINDS = frozenset(kind.value for kind in UpKind)
_KNOWN_KINDS = ", ".join(kind.value for kind in UpKind)

_JSON_TYPE_NAMES: dict[type, str] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _reject_constant(name: str) -> NoReturn:
    # json.loads accepts NaN/Infinity by default; they are not JSON and no encoder round-trips them.
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
"""Built once: `json.loads(..., parse_constant=...)` builds a decoder (and its scanner) per call."""


def _loads(payload: bytes) -> Any:
    """`json.loads(payload, parse_constant=_reject_constant)` with the decoder built once.

    The same steps as `json.loads` for bytes: the encoding detected from the first bytes (UTF-8,
    -16 or -32, a UTF-8 BOM skipped), decoded with `surrogatepass`, then parsed.
    """
    return _DECODER.decode(payload.decode(json.detect_encoding(payload), "surrogatepass"))


def _check_structure(obj: object, *, max_depth: int) -> str | None:
    """Return why `obj` cannot be stored and re-encoded, or None if it can.

    Walks iteratively (no recursion, so depth cannot blow the stack): nesting deeper than
    `max_depth`, and strings holding lone surrogates (valid JSON escapes, invalid UTF-8).
    """
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth > max_depth:
                return f"payload nests deeper than {max_depth} levels"
            for key, item in value.items():
                stack.append((key, depth))
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > max_depth:
                return f"payload nests deeper than {max_depth} levels"
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return "payload contains a string that is not valid Unicode (lone surrogate escape)"
    return None


def unsupported_kind_message(kind: str) -> str:
    """The `bad_request` message for an uplink `{kind}` the service has no handler for."""
    if kind in _UP_KINDS:
        return f"request kind {kind!r} is not supported yet"
    return f"unknown request kind {kind[:64]!r}; expected one of {_KNOWN_KINDS}"


def read_ref(obj: object) -> str | None:
    """Return the request `id` of a decoded payload if it is a valid id, else None.

    An id breaking the id rule is never echoed back: it could be anything up to the payload size.
    """
    if isinstance(obj, dict):
        ref = obj.get("id")
        if isinstance(ref, str) and is_valid_id(ref):
            return ref
    return None


def extract_ref(payload: bytes, *, limits: LogicLimits) -> str | None:
    """Best-effort `id` of a raw payload, for replies to requests refused before validation.

    Never raises. Payloads larger than `limits.max_ref_scan_bytes` are not parsed whole; their
    head is looked at (`mqim.protocol.request_ref`, which the broker's refusals use too).
    """
    return request_ref(payload, max_parse_bytes=limits.max_ref_scan_bytes)


def decode_request(payload: bytes, *, limits: LogicLimits) -> dict[str, Any]:
    """Decode a request payload into a JSON object, enforcing size, syntax, depth and version.

    Raises:
        RequestRejected: `too_large` above `limits.max_payload_bytes`, else `bad_request` for
            anything that is not a well-formed v1 JSON object.
    """
    if len(payload) > limits.max_payload_bytes:
        raise RequestRejected(
            f"payload is {len(payload)} bytes, limit is {limits.max_payload_bytes}",
            code=ErrorCode.TOO_LARGE,
            ref=extract_ref(payload, limits=limits),
        )
    try:
        obj = _loads(payload)
    except UnicodeDecodeError:
        raise RequestRejected("payload is not UTF-8 text") from None
    except RecursionError:
        raise RequestRejected(f"payload nests deeper than {limits.max_json_depth} levels") from None
    except ValueError as exc:
        raise RequestRejected(f"payload is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RequestRejected(f"payload must be a JSON object, got {_json_type(obj)}")
    ref = read_ref(obj)
    problem = _check_structure(obj, max_depth=limits.max_json_depth)
    if problem is not None:
        raise RequestRejected(problem, ref=ref)
    version = obj.get("v", 1)
    if version != 1 or isinstance(version, bool):
        raise RequestRejected(f"unsupported protocol version v={json.dumps(version)}, expected 1", ref=ref)
    return obj


def _require_id(obj: dict[str, Any], field: str, *, what: str, ref: str | None) -> str:
    value = obj[field]
    if not isinstance(value, str):
        raise RequestRejected(f"field {field!r} must be a string, got {_json_type(value)}", ref=ref)
    if not is_valid_id(value):
        raise RequestRejected(f"invalid {what} {value[:80]!r} in {field!r}: must match {ID_PATTERN}", ref=ref)
    return value


def parse_send(payload: bytes, *, limits: LogicLimits) -> SendRequest:
    """Validate an `up/{me}/msg` payload.

    Rules: a v1 JSON object; `id` a valid id; exactly one of `to` (a user id) and `group` (a group
    id); `text` a string and/or `data` an object, at least one of them present and not null, and
    `text` not empty when alone; `text` at most `limits.max_text_chars` characters. Unknown
    fields are ignored so newer clients keep working.

    Raises:
        RequestRejected: With `too_large` for size limits, else `bad_request`; `ref` is the
            request `id` when it could be read.
    """
    obj = decode_request(payload, limits=limits)
    ref = read_ref(obj)
    if "id" not in obj:
        raise RequestRejected("missing field 'id' (the client message id)", ref=None)
    _require_id(obj, "id", what="message id", ref=ref)

    has_to = obj.get("to") is not None
    has_group = obj.get("group") is not None
    if has_to and has_group:
        raise RequestRejected("exactly one of 'to' and 'group' is required, got both", ref=ref)
    if not has_to and not has_group:
        raise RequestRejected("exactly one of 'to' and 'group' is required, got neither", ref=ref)
    if has_to:
        _require_id(obj, "to", what="user id", ref=ref)
    else:
        _require_id(obj, "group", what="group id", ref=ref)

    op = obj.get("op")
    if op is not None and op not in _OPS:
        raise RequestRejected(f"unknown op {json.dumps(op)[:40]}; expected one of {', '.join(_OPS)}", ref=ref)
    ref_seq = obj.get("ref_seq")
    if op is not None and (not isinstance(ref_seq, int) or isinstance(ref_seq, bool) or ref_seq < 1):
        raise RequestRejected(f"op {op!r} needs 'ref_seq', the seq of the message it applies to", ref=ref)
    if op is None and ref_seq is not None:
        raise RequestRejected("'ref_seq' is only allowed with an 'op'", ref=ref)

    if op in ("recall", "delete"):
        # These carry no content of their own: whatever was sent with them is not stored.
        obj = {key: value for key, value in obj.items() if key not in ("text", "data")}
    text = obj.get("text")
    data = obj.get("data")
    if text is not None and not isinstance(text, str):
        raise RequestRejected(f"field 'text' must be a string, got {_json_type(text)}", ref=ref)
    if data is not None and not isinstance(data, dict):
        raise RequestRejected(f"field 'data' must be an object, got {_json_type(data)}", ref=ref)
    if op not in ("recall", "delete"):
        if text is None and data is None:
            raise RequestRejected("one of 'text' and 'data' is required", ref=ref)
        if text == "" and data is None:
            raise RequestRejected("message is empty: 'text' is empty and there is no 'data'", ref=ref)
    if text is not None and len(text) > limits.max_text_chars:
        raise RequestRejected(
            f"text is {len(text)} characters, limit is {limits.max_text_chars}",
            code=ErrorCode.TOO_LARGE,
            ref=ref,
        )
    try:
        return SendRequest.model_validate(obj)
    except ValidationError as exc:
        # The checks above mirror the model; this is the model having the last word.
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise RequestRejected(f"invalid {where}: {first['msg']}", ref=ref) from None


def parse_request(payload: bytes, model: type[_M], *, limits: LogicLimits) -> _M:
    """Validate a request payload against `model` (after the checks of `decode_request`).

    Raises:
        RequestRejected: `too_large` above the payload limit, else `bad_request` naming the
            first invalid field; `ref` is the request `id` when it could be read.
    """
    obj = decode_request(payload, limits=limits)
    ref = read_ref(obj)
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise RequestRejected(f"invalid {where}: {first['msg']}", ref=ref) from None
