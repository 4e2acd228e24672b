"""The `msg` request: validate, check the recipient, persist the batch at once, then reply."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mqim.logic._exceptions import RequestRejected
from mqim.logic._limits import LogicLimits
from mqim.logic._replies import Outbound, direct_replies, error_reply
from mqim.logic._requests import Uplink
from mqim.logic._users import UserDirectory
from mqim.logic._validate import parse_send
from mqim.protocol import ErrorCode, SendRequest, direct_conv
from mqim.storage import NewMessage, Storage, StorageError, UserRecord

_log = logging.getLogger(__name__)

_INTERNAL = "the server could not store the message; retry with the same id"


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A valid send waiting for the batch's storage write."""

    index: int
    sender: str
    peer: str
    message: NewMessage


def message_body(request: SendRequest) -> dict[str, Any]:
    """The stored body of a send: its `text` and `data`, leaving out absent ones."""
    body: dict[str, Any] = {}
    if request.text is not None:
        body["text"] = request.text
    if request.data is not None:
        body["data"] = request.data
    return body


class SendHandler:
    """Handles `im/v1/up/{me}/msg` for direct messages (groups are refused for now).

    For a batch: every payload is validated on its own (a bad one only earns its sender an
    error); recipients are looked up once each; all valid sends are stored with ONE
    `append_messages` call, which dedups by (sender, id) and assigns seqs in batch order; only
    then, per result in order, come the deliveries and the ack (see `direct_replies`).

    Sending to yourself is allowed (notes to self, syncing between one's own devices): the
    conversation is `d:{me}:{me}` and the message is delivered once, to the sender's inbox.

    A disabled recipient is answered exactly like a missing one (`not_found`), so senders cannot
    probe account states.

    Args:
        storage: Where messages are persisted.
        users: Cached account look-ups.
        limits: Size limits of a request.
        clock: Server time in milliseconds since the epoch.
    """

    def __init__(
        self, *, storage: Storage, users: UserDirectory, limits: LogicLimits, clock: Callable[[], int]
    ) -> None:
        self._storage = storage
        self._users = users
        self._limits = limits
        self._clock = clock

    async def __call__(self, uplinks: Sequence[Uplink]) -> list[Outbound]:
        """Handle the `msg` requests of one batch; see the class docstring."""
        replies: list[list[Outbound]] = [[] for _ in uplinks]
        valid: list[tuple[int, str, SendRequest]] = []
        for index, up in enumerate(uplinks):
            try:
                request = parse_send(up.payload, limits=self._limits)
            except RequestRejected as exc:
                replies[index] = [error_reply(up.sender, ref=exc.ref, code=exc.code, message=exc.message)]
                continue
            if request.to is None:  # a group message: parse_send guarantees exactly one target
                replies[index] = [
                    error_reply(
                        up.sender,
                        ref=request.id,
                        code=ErrorCode.BAD_REQUEST,
                        message="group messages are not supported yet",
                    )
                ]
                continue
            valid.append((index, request.to, request))

        recipients = await self._look_up({peer for _, peer, _ in valid})

        now = self._clock()
        accepted: list[_Accepted] = []
        for index, peer, request in valid:
            sender = uplinks[index].sender
            if peer not in recipients:
                replies[index] = [
                    error_reply(sender, ref=request.id, code=ErrorCode.INTERNAL, message=_INTERNAL)
                ]
                continue
            account = recipients[peer]
            if account is None or account.disabled:
                replies[index] = [
                    error_reply(
                        sender, ref=request.id, code=ErrorCode.NOT_FOUND, message=f"user {peer!r} not found"
                    )
                ]
                continue
            message = NewMessage(
                conv=direct_conv(sender, peer),
                sender=sender,
                client_id=request.id,
                ts=now,
                kind="msg",
                body=message_body(request),
            )
            accepted.append(_Accepted(index=index, sender=sender, peer=peer, message=message))

        if accepted:
            for item, outbound in zip(accepted, await self._store(accepted), strict=True):
                replies[item.index] = outbound
        return [outbound for group in replies for outbound in group]

    async def _look_up(self, user_ids: set[str]) -> dict[str, UserRecord | None]:
        """Accounts by id; an id whose look-up failed is left out (its senders get `internal`)."""
        found: dict[str, UserRecord | None] = {}
        for user_id in sorted(user_ids):
            try:
                found[user_id] = await self._users.get(user_id)
            except StorageError:
                _log.exception("looking up recipient %r failed", user_id)
        return found

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
            return [
                [
                    error_reply(
                        item.sender, ref=item.message.client_id, code=ErrorCode.INTERNAL, message=_INTERNAL
                    )
                ]
                for item in accepted
            ]
        return [
            direct_replies(result.record, peer=item.peer, created=result.created)
            for item, result in zip(accepted, results, strict=True)
        ]
