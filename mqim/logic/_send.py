"""The `msg` request: validate, check recipient or membership, persist the batch at once, reply.

Besides new messages, a `msg` may carry an `op` on an earlier message `ref_seq` of the same
conversation, stored as a new event of that conversation (its own seq, visible in sync and
history) so every device applies it in order:

- `edit` (kind `edit`, new `text`/`data`) and `recall` (kind `recall`, no content): only by the
  original sender, only on a plain message; delivered like a message to everyone in the
  conversation.
- `delete` (delete for me): stored in the user's own conversation `d:{me}:{me}` as kind `delete`
  with `ref_conv` and `ref_seq`, so it is private to the user, reaches all its devices, and
  neither adds a seq nor an unread message to the conversation the others see. Sync and history
  then show that message to this user without content and with `"deleted": true`.

Sending marks the conversation read (and delivered) for the sender up to its own message, so its
own messages never count as unread on its devices.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mqim.logic._exceptions import RequestRejected
from mqim.logic._limits import LogicLimits
from mqim.logic._membership import GroupAccess
from mqim.logic._replies import (
    UNAVAILABLE_MESSAGE,
    Outbound,
    direct_replies,
    group_replies,
    rejection_reply,
    unavailable_reply,
)
from mqim.logic._requests import Uplink
from mqim.logic._users import UserDirectory
from mqim.logic._validate import parse_send
from mqim.protocol import ErrorCode, SendRequest, direct_conv, group_conv
from mqim.storage import AppendResult, MessageRecord, NewMessage, Storage, StorageError, UserRecord

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A valid send waiting for the batch's storage write.

    `peer` is the direct recipient (the sender itself for a delete-for-me), `group` the group.
    """

    index: int
    sender: str
    peer: str | None
    group: str | None
    message: NewMessage


def message_body(request: SendRequest) -> dict[str, Any]:
    """The stored body of a send: its `text` and `data`, leaving out absent ones."""
    body: dict[str, Any] = {}
    if request.text is not None:
        body["text"] = request.text
    if request.data is not None:
        body["data"] = request.data
    return body


def op_problem(op: str, original: MessageRecord | None, *, sender: str, ref: str) -> RequestRejected | None:
    """Why `op` may not apply to `original` (the message it names), or None when it may. Pure."""
    if original is None:
        return RequestRejected("no such message in this conversation", code=ErrorCode.NOT_FOUND, ref=ref)
    if op == "delete":
        return None
    if original.sender != sender:
        return RequestRejected(f"only the sender of a message may {op} it", code=ErrorCode.FORBIDDEN, ref=ref)
    if original.kind != "msg":
        return RequestRejected(f"only a message can be {op}ed, not an {original.kind}", ref=ref)
    return None


class SendHandler:
    """Handles `im/v1/up/{me}/msg`: direct and group messages, edits, recalls, deletes for me.

    For a batch: every payload is validated on its own (a bad one only earns its sender an
    error); recipients and memberships are looked up once each; all valid sends are stored with
    ONE `append_messages` call, which dedups by (sender, id) and assigns seqs in batch order; only
    then, per result in order, come the deliveries and the ack (`direct_replies`,
    `group_replies`).

    Sending to yourself is allowed (notes to self, syncing between one's own devices): the
    conversation is `d:{me}:{me}` and the message is delivered once, to the sender's inbox.

    A disabled recipient is answered exactly like a missing one (`not_found`), so senders cannot
    probe account states. A group message from a non-member (or to a group that does not exist)
    is `forbidden`, so non-members cannot probe group ids either.

    Args:
        storage: Where messages are persisted.
        users: Cached account look-ups.
        groups: Membership answers (and the index updates for new direct contacts).
        limits: Size limits of a request.
        clock: Server time in milliseconds since the epoch.
    """

    def __init__(
        self,
        *,
        storage: Storage,
        users: UserDirectory,
        groups: GroupAccess,
        limits: LogicLimits,
        clock: Callable[[], int],
    ) -> None:
        self._storage = storage
        self._users = users
        self._groups = groups
        self._limits = limits
        self._clock = clock

    async def __call__(self, uplinks: Sequence[Uplink]) -> list[Outbound]:
        """Handle the `msg` requests of one batch; see the class docstring."""
        replies: list[list[Outbound]] = [[] for _ in uplinks]
        valid: list[tuple[int, SendRequest]] = []
        for index, up in enumerate(uplinks):
            try:
                valid.append((index, parse_send(up.payload, limits=self._limits)))
            except RequestRejected as exc:
                replies[index] = [rejection_reply(up.sender, exc)]

        peers = {r.to for _, r in valid if r.to is not None and r.op != "delete"}
        recipients = await self._look_up(peers)
        member_pairs = {(uplinks[i].sender, r.group) for i, r in valid if r.group is not None}
        members = await self._memberships(member_pairs)

        now = self._clock()
        accepted: list[_Accepted] = []
        for index, request in valid:
            sender = uplinks[index].sender
            try:
                item = await self._accept(index, sender, request, recipients, members, now)
            except RequestRejected as exc:
                replies[index] = [rejection_reply(sender, exc)]
                continue
            except StorageError:
                _log.exception("checking the target of message %r from %r failed", request.id, sender)
                replies[index] = [unavailable_reply(sender, ref=request.id)]
                continue
            accepted.append(item)

        if accepted:
            for item, outbound in zip(accepted, await self._store(accepted), strict=True):
                replies[item.index] = outbound
        return [outbound for group in replies for outbound in group]

    async def _accept(
        self,
        index: int,
        sender: str,
        request: SendRequest,
        recipients: dict[str, UserRecord | None],
        members: set[tuple[str, str]] | None,
        now: int,
    ) -> _Accepted:
        """Check one valid request against recipients, memberships and its `ref_seq`."""
        ref = request.id
        if request.group is not None:
            if members is None:
                raise RequestRejected(UNAVAILABLE_MESSAGE, code=ErrorCode.UNAVAILABLE, ref=ref)
            if (sender, request.group) not in members:
                raise RequestRejected(
                    f"you are not a member of group {request.group!r}", code=ErrorCode.FORBIDDEN, ref=ref
                )
            conv = group_conv(request.group)
        else:
            assert request.to is not None  # parse_send guarantees exactly one target
            peer = request.to
            if request.op != "delete":
                if peer not in recipients:
                    raise RequestRejected(UNAVAILABLE_MESSAGE, code=ErrorCode.UNAVAILABLE, ref=ref)
                account = recipients[peer]
                if account is None or account.disabled:
                    raise RequestRejected(f"user {peer!r} not found", code=ErrorCode.NOT_FOUND, ref=ref)
            conv = direct_conv(sender, peer)
        kind = "msg"
        body = message_body(request)
        if request.op is not None:
            assert request.ref_seq is not None  # parse_send guarantees it with an op
            originals = await self._storage.get_messages(
                conv, after_seq=request.ref_seq - 1, before_seq=request.ref_seq + 1, limit=1
            )
            problem = op_problem(request.op, originals[0] if originals else None, sender=sender, ref=ref)
            if problem is not None:
                raise problem
            kind = request.op
            body["ref_seq"] = request.ref_seq
            if request.op == "delete":
                # Private to the sender: stored in its own conversation (see the module docstring).
                body = {"ref_conv": conv, "ref_seq": request.ref_seq}
                message = NewMessage(
                    conv=direct_conv(sender, sender),
                    sender=sender,
                    client_id=ref,
                    ts=now,
                    kind=kind,
                    body=body,
                )
                return _Accepted(index=index, sender=sender, peer=sender, group=None, message=message)
        message = NewMessage(conv=conv, sender=sender, client_id=ref, ts=now, kind=kind, body=body)
        return _Accepted(index=index, sender=sender, peer=request.to, group=request.group, message=message)

    async def _look_up(self, user_ids: set[str]) -> dict[str, UserRecord | None]:
        """Accounts by id; an id whose look-up failed is left out (its senders get `internal`)."""
        found: dict[str, UserRecord | None] = {}
        for user_id in sorted(user_ids):
            try:
                found[user_id] = await self._users.get(user_id)
            except StorageError:
                _log.exception("looking up recipient %r failed", user_id)
        return found

    async def _memberships(self, pairs: set[tuple[str, str]]) -> set[tuple[str, str]] | None:
        """The (sender, group) pairs that are memberships; None when storage failed."""
        if not pairs:
            return set()
        try:
            return await self._groups.memberships(pairs)
        except StorageError:
            _log.exception("checking %d group memberships failed", len(pairs))
            return None

    async def _store(self, accepted: list[_Accepted]) -> list[list[Outbound]]:
        """Persist the batch, then return each item's replies (an `internal` error on failure)."""
        try:
            results = await self._storage.append_messages([item.message for item in accepted])
            if len(results) != len(accepted):
                raise StorageError(
                    f"append_messages returned {len(results)} results for {len(accepted)} messages"
                )
        except StorageError:
            _log.exception("storing a batch of %d messages failed", len(accepted))
            return [[unavailable_reply(item.sender, ref=item.message.client_id)] for item in accepted]
        await self._mark_read(results)
        out: list[list[Outbound]] = []
        # The trace of one message from `up/` to `u/`/`g/`: the request id and what it became.
        trace = _log.isEnabledFor(logging.DEBUG)
        for item, result in zip(accepted, results, strict=True):
            record = result.record
            if trace:
                _log.debug(
                    "msg id=%s from=%s stored conv=%s seq=%d %s to=%s",
                    item.message.client_id,
                    item.sender,
                    record.conv,
                    record.seq,
                    "new" if result.created else "duplicate",
                    f"g/{item.group}" if item.group is not None else f"u/{item.peer or item.sender}",
                )
            if item.group is not None:
                out.append(group_replies(record, group=item.group, created=result.created))
                continue
            peer = item.peer if item.peer is not None else item.sender
            if result.created and record.seq == 1 and peer != item.sender:
                # A direct conversation just began: the two may now see each other's presence.
                self._groups.contact(item.sender, peer)
            out.append(direct_replies(record, peer=peer, created=result.created))
        return out

    async def _mark_read(self, results: list[AppendResult]) -> None:
        """Move each sender's read and delivered cursors to its newest own message of the batch."""
        newest: dict[tuple[str, str], int] = {}
        for result in results:
            if result.created:
                key = (result.record.sender, result.record.conv)
                newest[key] = max(newest.get(key, 0), result.record.seq)
        if not newest:
            return
        outcomes = await asyncio.gather(
            *(
                self._storage.advance_cursor(user, conv, read_seq=seq, delivered_seq=seq)
                for (user, conv), seq in newest.items()
            ),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, StorageError):
                # The message is stored and goes out; only the sender's unread count lags.
                _log.error("advancing a sender's cursor failed: %s", outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
