"""Error codes sent in `error` payloads (docs/architecture.md, "The wire contract")."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """The `code` field of an `error` payload."""

    BAD_REQUEST = "bad_request"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"
    """Storage is failing: the request is held (its PUBACK too) and retried until it succeeds."""
