"""The `sync` and `history` requests: what a device missed, and older pages of one conversation.

Both answer on the requester's inbox (`u/{me}/sync`, `u/{me}/history`) with messages in
ascending seq order, in the same shape as live messages, in pages bounded by message count and
payload size. Messages the user deleted for itself come without content and with
`"deleted": true` (the seq stays, so clients see no gap).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from mqim.logic._conv_access import conv_target
from mqim.logic._exceptions import RequestRejected
from mqim.logic._limits import LogicLimits
from mqim.logic._membership import GroupAccess
from mqim.logic._replies import Outbound, message_dict, rejection_reply, unavailable_reply
from mqim.logic._requests import Uplink
from mqim.logic._validate import extract_ref, parse_request
from mqim.protocol import (
    HistoryPage,
    HistoryRequest,
    InboxKind,
    SyncConv,
    SyncPage,
    SyncRequest,
    direct_conv,
    inbox_topic,
)
from mqim.storage import ConvState, MessageRecord, Storage, StorageError

_R = TypeVar("_R", SyncRequest, HistoryRequest)

_log = logging.getLogger(__name__)

_STATE_BYTES = 120
"""Rough payload size of one conversation entry without messages, for the page bound."""


def _size(message: dict[str, Any]) -> int:
    return len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode())


async def deleted_for(storage: Storage, user: str, *, limits: LogicLimits) -> dict[str, set[int]]:
    """conv -> seqs `user` deleted for itself, from its newest delete-for-me events.

    They live in the user's own conversation `d:{user}:{user}`; at most
    `limits.delete_scan_messages` of its newest entries are read.
    """
    own = direct_conv(user, user)
    records = await storage.get_messages(own, limit=limits.delete_scan_messages, newest=True)
    hidden: dict[str, set[int]] = {}
    for record in records:
        if record.kind != "delete":
            continue
        conv, seq = record.body.get("ref_conv"), record.body.get("ref_seq")
        if isinstance(conv, str) and isinstance(seq, int):
            hidden.setdefault(conv, set()).add(seq)
    return hidden


def render(records: Sequence[MessageRecord], hidden: set[int]) -> list[dict[str, Any]]:
    """Wire dicts of `records`; those in `hidden` without content. Pure."""
    return [message_dict(record, deleted=record.seq in hidden) for record in records]


class SyncHandler:
    """Handles `im/v1/up/{me}/sync` `{"v":1,"id","since":{conv:seq},"from_conv","limit"}`.

    The answer covers every conversation the user takes part in now (direct ones it has
    messages in, groups it is a member of), in conversation id order: for each its `last_seq`,
    the user's `read_seq`, the computed `unread`, and the messages after `since[conv]` (0 when
    absent: everything, for a new device). Messages per page are bounded
    (`limits.sync_page_messages` in all, `limits.sync_conv_messages` per conversation,
    `limits.page_bytes`), conversations too (`limits.sync_page_convs`). A page that could not
    hold everything says `"more": true` and names `next_conv`, where the next page starts; the
    client asks again with `since` updated by what it received and `"from_conv": next_conv`.

    Args:
        storage: Messages and cursors.
        limits: Page bounds.
    """

    def __init__(self, *, storage: Storage, limits: LogicLimits) -> None:
        self._storage = storage
        self._limits = limits

    async def __call__(self, uplinks: Sequence[Uplink]) -> list[Outbound]:
        """Handle the `sync` requests of one batch, one after the other."""
        return await _one_by_one(uplinks, SyncRequest, self._page, what="sync", limits=self._limits)

    async def _page(self, user: str, request: SyncRequest) -> Outbound:
        limits = self._limits
        states: list[ConvState] = await self._storage.conv_states(user)
        own = direct_conv(user, user)
        hidden: dict[str, set[int]] = {}
        if any(state.conv == own and state.last_seq > 0 for state in states):
            hidden = await deleted_for(self._storage, user, limits=limits)
        since = request.since or {}
        budget = min(request.limit or limits.sync_page_messages, limits.sync_page_messages)
        used = 0
        sent = 0
        convs: list[SyncConv] = []
        more = False
        next_conv: str | None = None
        for state in states:
            if request.from_conv is not None and state.conv < request.from_conv:
                continue
            start = since.get(state.conv, 0)
            if len(convs) >= limits.sync_page_convs or (
                start < state.last_seq and (budget <= 0 or used >= limits.page_bytes)
            ):
                more, next_conv = True, state.conv
                break
            messages: list[dict[str, Any]] = []
            complete = True
            if start < state.last_seq:
                take = min(budget, limits.sync_conv_messages)
                records = await self._storage.get_messages(state.conv, after_seq=start, limit=take)
                for message in render(records, hidden.get(state.conv, set())):
                    size = _size(message)
                    if sent and used + size > limits.page_bytes:
                        break  # the page always keeps one message, so paging makes progress
                    messages.append(message)
                    used += size
                    sent += 1
                    budget -= 1
                last = messages[-1]["seq"] if messages else start
                complete = not records or last >= state.last_seq
            used += _STATE_BYTES
            convs.append(
                SyncConv(
                    conv=state.conv,
                    last_seq=state.last_seq,
                    read_seq=state.read_seq,
                    unread=state.unread,
                    messages=messages,
                )
            )
            if not complete:
                more, next_conv = True, state.conv
                break
        page = SyncPage(ref=request.id, convs=convs, more=more, next_conv=next_conv)
        return Outbound(inbox_topic(user, InboxKind.SYNC), page.to_json())


class HistoryHandler:
    """Handles `im/v1/up/{me}/history` `{"v":1,"id","conv","before","limit"}`.

    Answers the newest `limit` messages (default `limits.history_default`, at most
    `limits.history_max`, and within `limits.page_bytes`) of `conv` with a seq below `before`
    (all when absent), in ascending order, with `"more": true` when older ones exist. Only
    for a user who takes part in `conv` now (a group: a current member).

    Args:
        storage: Messages.
        groups: Membership answers.
        limits: Page bounds.
    """

    def __init__(self, *, storage: Storage, groups: GroupAccess, limits: LogicLimits) -> None:
        self._storage = storage
        self._groups = groups
        self._limits = limits

    async def __call__(self, uplinks: Sequence[Uplink]) -> list[Outbound]:
        """Handle the `history` requests of one batch, one after the other."""
        return await _one_by_one(uplinks, HistoryRequest, self._page, what="history", limits=self._limits)

    async def _page(self, user: str, request: HistoryRequest) -> Outbound:
        limits = self._limits
        await conv_target(user, request.conv, groups=self._groups, ref=request.id)
        limit = min(request.limit or limits.history_default, limits.history_max)
        records = await self._storage.get_messages(
            request.conv, before_seq=request.before, limit=limit, newest=True
        )
        hidden: set[int] = set()
        if records and await self._storage.last_seq(direct_conv(user, user)) > 0:
            hidden = (await deleted_for(self._storage, user, limits=limits)).get(request.conv, set())
        kept: list[dict[str, Any]] = []
        used = 0
        for message in reversed(render(records, hidden)):  # newest first: the page keeps the newest
            size = _size(message)
            if kept and used + size > limits.page_bytes:
                break
            kept.append(message)
            used += size
        kept.reverse()
        more = bool(kept) and kept[0]["seq"] > 1
        page = HistoryPage(ref=request.id, conv=request.conv, messages=kept, more=more)
        return Outbound(inbox_topic(user, InboxKind.HISTORY), page.to_json())


async def _one_by_one(
    uplinks: Sequence[Uplink],
    model: type[_R],
    page: Callable[[str, _R], Awaitable[Outbound]],
    *,
    what: str,
    limits: LogicLimits,
) -> list[Outbound]:
    """Answer each request with `page`, one after the other; a refusal or a storage failure
    costs only its own request an `error`."""
    out: list[Outbound] = []
    for up in uplinks:
        try:
            out.append(await page(up.sender, parse_request(up.payload, model, limits=limits)))
        except RequestRejected as exc:
            out.append(rejection_reply(up.sender, exc))
        except StorageError:
            _log.exception("%s for %r failed", what, up.sender)
            ref = extract_ref(up.payload, limits=limits)
            out.append(unavailable_reply(up.sender, ref=ref))
    return out
