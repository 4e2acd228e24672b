"""Named limits of the logic service: everything a client can make grow is bounded here."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True, kw_only=True)
class LogicLimits:
    """Limits enforced by `LogicService`.

    Attributes:
        max_payload_bytes: Largest request payload accepted; larger ones get `too_large`.
        max_batch: Most requests taken from the bus and processed (one storage write) at once.
        max_text_chars: Longest `text` of a message, in characters; longer gets `too_large`.
        max_json_depth: Deepest nesting of objects/arrays in a request (the request object
            itself is depth 1); deeper gets `bad_request`. Keeps every later encoder safe.
        max_ref_scan_bytes: Largest oversize payload still parsed to find its `id`, so that the
            `too_large` error can name the request; beyond it the error's `ref` is null.
        user_cache_size: Most accounts kept in the recipient cache (least recently used leave).
        user_cache_ttl_s: How long a cached account (or its absence) is trusted, in seconds. A
            disabled or newly created account is seen by the service at most this late.
        max_pending_rejections: Most `rate_limited` replies waiting to be published after the
            bus overflowed; beyond it the rejections are counted and logged, not answered.
    """

    max_payload_bytes: int = 65_536
    max_batch: int = 256
    max_text_chars: int = 16_384
    max_json_depth: int = 32
    max_ref_scan_bytes: int = 1_048_576
    user_cache_size: int = 10_000
    user_cache_ttl_s: float = 2.0
    max_pending_rejections: int = 10_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            # A zero TTL is meaningful (no caching); every other limit must allow something.
            if value < 0 or (value == 0 and f.name != "user_cache_ttl_s"):
                raise ValueError(f"LogicLimits.{f.name} must be positive, got {value!r}")
