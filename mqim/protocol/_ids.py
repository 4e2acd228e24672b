"""Identifier rules for users and groups, and conversation ids."""

from __future__ import annotations

import json
import re

from mqim.protocol._exceptions import InvalidId

ID_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
_ID_RE = re.compile(ID_PATTERN)


def is_valid_id(value: str) -> bool:
    """Return True if `value` is a valid user or group id."""
    return _ID_RE.fullmatch(value) is not None


_VALID_MEMO: dict[str, None] = {}
_VALID_MEMO_MAX = 65_536  # a memo of recently valid ids, not state: cleared when full


def validate_id(value: str, *, what: str = "id") -> str:
    """Return `value` if it is a valid id, else raise `InvalidId`.

    Every topic builder checks its ids; a hot path builds several topics per message for the
    same few users, so ids that were valid recently skip the regular expression.

    Args:
        value: The candidate id.
        what: What the id names, for the error message ("user", "group").
    """
    if type(value) is str and value in _VALID_MEMO:
        return value
    if not isinstance(value, str) or _ID_RE.fullmatch(value) is None:
        raise InvalidId(f"invalid {what} id {value!r}: must match {ID_PATTERN}")
    if len(_VALID_MEMO) >= _VALID_MEMO_MAX:
        _VALID_MEMO.clear()
    _VALID_MEMO[value] = None
    return value


def direct_conv(a: str, b: str) -> str:
    """Return the conversation id of the direct conversation between users `a` and `b`.

    It is `d:` plus both ids sorted and joined by `:`, so both sides derive the same id.
    """
    first, second = sorted((validate_id(a, what="user"), validate_id(b, what="user")))
    return f"d:{first}:{second}"


def group_conv(group: str) -> str:
    """Return the conversation id of group `group`."""
    return f"g:{validate_id(group, what='group')}"


def parse_conv(conv: str) -> tuple[str, tuple[str, ...]]:
    """Split a conversation id into its kind (`"d"` or `"g"`) and its ids.

    Raises:
        InvalidId: When `conv` is not a well-formed conversation id.
    """
    parts = conv.split(":")
    if len(parts) == 3 and parts[0] == "d":
        a, b = validate_id(parts[1], what="user"), validate_id(parts[2], what="user")
        if a > b:
            raise InvalidId(f"direct conversation id {conv!r} must list its users sorted")
        return "d", (a, b)
    if len(parts) == 2 and parts[0] == "g":
        return "g", (validate_id(parts[1], what="group"),)
    raise InvalidId(f"invalid conversation id {conv!r}")


# `{"id": "..."}` among the first keys of a JSON object, before any nested object or array (so a
# nested "id" is never taken for the request's). For payloads that cannot be parsed whole.
_HEAD_ID_RE = re.compile(rb'\A\s*\{[^{}\[\]]*?"id"\s*:\s*"(' + ID_PATTERN.encode() + rb')"')


def peek_request_id(head: bytes) -> str | None:
    """The request `id` of a JSON payload from its first bytes alone, or None. Never raises.

    For requests refused before they can be parsed (a PUBLISH too large to buffer): the
    `id` is found when it comes before any nested value, as every client library writes it.
    """
    match = _HEAD_ID_RE.match(head)
    return match.group(1).decode("ascii") if match is not None else None


REF_PARSE_BYTES = 65_536
"""Largest payload `request_ref` parses whole; past it only its head is looked at."""


def request_ref(payload: bytes, *, max_parse_bytes: int = REF_PARSE_BYTES) -> str | None:
    """The request `id` of a raw payload, for the reply to a request refused before validation.

    A payload up to `max_parse_bytes` that parses as a JSON object answers its `id`; one that
    does not parse (truncated, nested too deep, not UTF-8) or is larger answers what
    `peek_request_id` finds in its head. An id breaking the id rule is never echoed: it could be
    anything up to the payload size. Never raises.
    """
    if len(payload) <= max_parse_bytes:
        try:
            obj = json.loads(payload)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            obj = None
        if isinstance(obj, dict):
            ref = obj.get("id")
            return ref if isinstance(ref, str) and is_valid_id(ref) else None
    return peek_request_id(payload)
