"""Named limits of the logic service: everything a client can make grow is bounded here."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True, kw_only=True)
class LogicLimits:
    """Limits enforced by `LogicService`.

    Attributes:
        max_payload_bytes: Largest request payload accepted; larger ones get `too_large`.
        max_hold_s: Longest a request is held and retried while storage fails on it; then it
            is failed back to the broker (no PUBACK: the sender's connection closes and the
            client resends it).
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
        max_group_members: Members of one group (owner included); `group.create` and
            `group.add` beyond it get `too_large`.
        max_groups_per_user: Groups one user may belong to; creating or adding beyond it gets
            `too_large`. Each group is one server-managed subscription per session.
        max_group_name_chars: Longest group name, in characters.
        max_cmd_members: Most user ids in one `group.create`/`group.add`/`group.remove`.
        max_event_members: Most user ids listed in a group `event`; a larger change lists only
            its `count` (the event reaches every member, so its size is multiplied by theirs).
        max_info_members: Most members listed by one `group.info` (page with `offset`).
        sync_page_messages: Most messages in one sync page (all conversations together).
        sync_conv_messages: Most messages of one conversation in one sync page.
        sync_page_convs: Most conversations in one sync page.
        page_bytes: Soft bound of a sync or history page's payload; a page stops growing once
            past it (it always holds at least one message, so paging makes progress).
        history_default: Messages in a history page when the request gives no `limit`.
        history_max: Largest `limit` of a history request (larger asks are capped).
        delete_scan_messages: Most entries of a user's own conversation `d:{me}:{me}` read to
            find its delete-for-me events when building a sync or history page.
        typing_per_s: Typing notifications per user per second (token bucket refill).
        typing_burst: Typing notifications a user may send at once (token bucket size).
        rate_table_size: Users tracked by the typing rate limiter (least recently seen leave).
    """

    max_payload_bytes: int = 65_536
    max_hold_s: float = 30.0
    max_batch: int = 256
    max_text_chars: int = 16_384
    max_json_depth: int = 32
    max_ref_scan_bytes: int = 1_048_576
    user_cache_size: int = 10_000
    user_cache_ttl_s: float = 2.0
    max_pending_rejections: int = 10_000
    max_group_members: int = 10_000
    max_groups_per_user: int = 1_000
    max_group_name_chars: int = 128
    max_cmd_members: int = 1_000
    max_event_members: int = 100
    max_info_members: int = 1_000
    sync_page_messages: int = 500
    sync_conv_messages: int = 100
    sync_page_convs: int = 500
    page_bytes: int = 192 * 1024
    history_default: int = 50
    history_max: int = 200
    delete_scan_messages: int = 10_000
    typing_per_s: float = 2.0
    typing_burst: int = 5
    rate_table_size: int = 100_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            # A zero TTL is meaningful (no caching); every other limit must allow something.
            if value < 0 or (value == 0 and f.name != "user_cache_ttl_s"):
                raise ValueError(f"LogicLimits.{f.name} must be positive, got {value!r}")
