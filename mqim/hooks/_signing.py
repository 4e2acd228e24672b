"""Signing of webhook requests (pure).

Every POST carries `X-Mqim-Timestamp` (Unix seconds at the time of the attempt) and
`X-Mqim-Signature: sha256=<hex>`, the HMAC-SHA256 with the endpoint's secret of
``<timestamp> + "." + <body>``. Signing the timestamp with the body lets a receiver refuse a
replayed request: it recomputes the HMAC and rejects a timestamp too far from its own clock.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

SIGNATURE_HEADER: Final = "X-Mqim-Signature"
"""Header holding `sha256=<hex HMAC-SHA256>` of the signed material."""

TIMESTAMP_HEADER: Final = "X-Mqim-Timestamp"
"""Header holding the Unix time (seconds) that is part of the signed material."""

EVENT_HEADER: Final = "X-Mqim-Event"
"""Header naming the event type (`message.offline`, `user.online`, ...)."""

DELIVERY_HEADER: Final = "X-Mqim-Delivery"
"""Header with the event's stable id: the same on every retry, so a receiver can drop repeats."""

DEFAULT_TOLERANCE_S: Final = 300
"""How far a receiver should accept a timestamp from its own clock (see `verify`)."""


def signed_material(timestamp: int, body: bytes) -> bytes:
    """What is signed: the decimal timestamp, a dot, then the body."""
    return str(timestamp).encode("ascii") + b"." + body


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Mqim-Signature` value of a request body sent at `timestamp`."""
    digest = hmac.new(secret.encode("utf-8"), signed_material(timestamp, body), hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(
    secret: str,
    *,
    signature: str,
    timestamp: str,
    body: bytes,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """What a receiver checks: a well-formed, recent timestamp and a matching signature.

    Args:
        secret: The endpoint's shared secret.
        signature: The `X-Mqim-Signature` header as received.
        timestamp: The `X-Mqim-Timestamp` header as received.
        body: The raw request body.
        now: The receiver's clock, Unix seconds.
        tolerance_s: Largest accepted distance between `timestamp` and `now`.
    """
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    ts = int(timestamp)
    if abs(now - ts) > tolerance_s:
        return False
    # Constant-time compare: the signature must not leak through timing.
    return hmac.compare_digest(sign(secret, ts, body), signature)
