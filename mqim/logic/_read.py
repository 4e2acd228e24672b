"""The `read` request: move the user's read cursor forward, tell the peers and the user's devices."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mqim.logic._conv_access import ConvTarget, conv_target
from mqim.logic._exceptions import RequestRejected
from mqim.logic._limits import LogicLimits
from mqim.logic._membership import GroupAccess
from mqim.logic._replies import Outbound, rejection_reply, unavailable_reply, user_event
from mqim.logic._requests import Uplink
from mqim.logic._validate import parse_request
from mqim.protocol import GroupKind, InboxKind, ReadRequest, Receipt, group_topic, inbox_topic
from mqim.storage import ConvState, Storage, StorageError

_log = logging.getLogger(__name__)


def read_receipt(target: ConvTarget, *, user: str, seq: int) -> Outbound | None:
    """The `read` receipt for the others in the conversation, or None (notes to self). Pure."""
    payload = Receipt(conv=target.conv, seq=seq, user=user, kind="read").to_json()
    if target.group is not None:
        return Outbound(group_topic(target.group, GroupKind.RECEIPT), payload)
    if target.peer is None or target.peer == user:
        return None
    return Outbound(inbox_topic(target.peer, InboxKind.RECEIPT), payload)


class ReadHandler:
    """Handles `im/v1/up/{me}/read` `{"v":1,"conv","seq"}`.

    The read cursor only moves forward and never past the conversation's last seq (storage
    enforces both). Reads of one user in one conversation within a batch count once, at the
    highest seq. When the cursor moved, the peer (direct: `u/{peer}/receipt`; group:
    `g/{group}/receipt`) gets a `kind:"read"` receipt and every device of the reader gets an
    `event` `{"type":"read","conv","seq","unread"}` on `u/{me}/event`, so unread counts follow
    on all of them. A read that moves nothing is answered by nothing (it changed nothing).

    Args:
        storage: Cursors.
        groups: Membership answers.
        limits: Request size limits.
    """

    def __init__(self, *, storage: Storage, groups: GroupAccess, limits: LogicLimits) -> None:
        self._storage = storage
        self._groups = groups
        self._limits = limits

    async def __call__(self, uplinks: Sequence[Uplink]) -> list[Outbound]:
        """Handle the `read` requests of one batch; see the class docstring."""
        out: list[Outbound] = []
        wanted: dict[tuple[str, str], tuple[int, str | None]] = {}
        for up in uplinks:
            try:
                request = parse_request(up.payload, ReadRequest, limits=self._limits)
            except RequestRejected as exc:
                out.append(rejection_reply(up.sender, exc))
                continue
            key = (up.sender, request.conv)
            seq, ref = wanted.get(key, (-1, None))
            wanted[key] = (max(seq, request.seq), request.id if request.id is not None else ref)
        for (user, conv), (seq, ref) in wanted.items():
            try:
                out.extend(await self._read(user, conv, seq, ref))
            except RequestRejected as exc:
                out.append(rejection_reply(user, exc))
            except StorageError:
                _log.exception("moving the read cursor of %r in %r failed", user, conv)
                out.append(unavailable_reply(user, ref=ref))
        return out

    async def _read(self, user: str, conv: str, seq: int, ref: str | None) -> list[Outbound]:
        target = await conv_target(user, conv, groups=self._groups, ref=ref)
        before = await self._storage.conv_states(user, [conv])
        old = before[0].read_seq if before else 0
        state: ConvState = await self._storage.advance_cursor(user, conv, read_seq=seq, delivered_seq=seq)
        if state.read_seq <= old:
            return []
        out: list[Outbound] = []
        receipt = read_receipt(target, user=user, seq=state.read_seq)
        if receipt is not None:
            out.append(receipt)
        out.append(user_event(user, "read", conv=conv, seq=state.read_seq, unread=state.unread))
        return out
