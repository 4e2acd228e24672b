"""Pure builders of the service's replies: stored records in, (topic, payload) out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mqim.logic._exceptions import RequestRejected
from mqim.protocol import (
    Ack,
    DeliveredMessage,
    ErrorCode,
    ErrorPayload,
    Event,
    GroupKind,
    InboxKind,
    ReplyEncoder,
    group_topic,
    inbox_topic,
)
from mqim.storage import MessageRecord

OPS = frozenset({"edit", "recall", "delete"})
"""Stored message kinds that are operations on an earlier message (`op` on the wire)."""


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message the service publishes.

    `retry` is set on the answer to a request that storage could not serve (code
    `unavailable`): `(sender, ref)` of that request, which the service holds and retries.
    """

    topic: str
    payload: bytes
    qos: int = 1
    retry: tuple[str, str | None] | None = None


def delivered_model(record: MessageRecord, *, deleted: bool = False) -> DeliveredMessage:
    """The `DeliveredMessage` of a stored message, as recipients see it.

    An operation (kind `edit`, `recall`, `delete`) carries `op` and `ref_seq` (and `ref_conv`
    for a delete-for-me, stored in the user's own conversation). With `deleted=True` the content
    is left out: the user deleted this message for itself.
    """
    body = record.body
    fields: dict[str, Any] = {
        "conv": record.conv,
        "seq": record.seq,
        "server_id": record.server_id,
        "id": record.client_id,
        "from": record.sender,  # a Python keyword, hence the dict
        "ts": record.ts,
    }
    if deleted:
        fields["deleted"] = True
    else:
        fields["text"] = body.get("text")
        fields["data"] = body.get("data")
    if record.kind in OPS:
        fields["op"] = record.kind
        fields["ref_seq"] = body.get("ref_seq")
        fields["ref_conv"] = body.get("ref_conv")
    return DeliveredMessage.model_validate(fields)


_DELIVERED = ReplyEncoder(DeliveredMessage)
_ACK = ReplyEncoder(Ack)


def delivered_payload(record: MessageRecord) -> bytes:
    """The `DeliveredMessage` JSON of a stored message, as recipients see it.

    The bytes of `delivered_model(record).to_json()`, encoded without building the model (two
    of them per message sent were a tenth of the logic service's time): the record comes from
    storage, which only holds what a validated `SendRequest` put there.
    """
    body = record.body
    if record.kind in OPS:
        return _DELIVERED(
            conv=record.conv,
            seq=record.seq,
            server_id=record.server_id,
            id=record.client_id,
            sender=record.sender,
            ts=record.ts,
            text=body.get("text"),
            data=body.get("data"),
            op=record.kind,
            ref_seq=body.get("ref_seq"),
            ref_conv=body.get("ref_conv"),
        )
    return _DELIVERED(
        conv=record.conv,
        seq=record.seq,
        server_id=record.server_id,
        id=record.client_id,
        sender=record.sender,
        ts=record.ts,
        text=body.get("text"),
        data=body.get("data"),
    )


def message_dict(record: MessageRecord, *, deleted: bool = False) -> dict[str, Any]:
    """The `DeliveredMessage` of a stored message as a JSON-ready dict (for sync and history)."""
    return delivered_model(record, deleted=deleted).model_dump(mode="json", by_alias=True, exclude_none=True)


def ack_payload(record: MessageRecord) -> bytes:
    """The `Ack` JSON telling the sender where its message `id` was stored (encoded like the model)."""
    return _ACK(
        id=record.client_id, conv=record.conv, seq=record.seq, server_id=record.server_id, ts=record.ts
    )


UNAVAILABLE_MESSAGE = (
    "storage is unavailable; the request is held and will be processed when it recovers (no need to resend)"
)
"""The text of every `unavailable` error."""


def error_payload(*, ref: str | None, code: ErrorCode, message: str) -> bytes:
    """The `ErrorPayload` JSON refusing request `ref` (null when its id could not be read)."""
    return ErrorPayload(ref=ref, code=code, message=message).to_json()


def error_reply(user: str, *, ref: str | None, code: ErrorCode, message: str) -> Outbound:
    """An error for `user` on `im/v1/u/{user}/error` (`unavailable` marks the request for retry)."""
    return Outbound(
        inbox_topic(user, InboxKind.ERROR),
        error_payload(ref=ref, code=code, message=message),
        retry=(user, ref) if code is ErrorCode.UNAVAILABLE else None,
    )


def unavailable_reply(user: str, *, ref: str | None) -> Outbound:
    """The `unavailable` error for a request storage could not serve (held and retried)."""
    return error_reply(user, ref=ref, code=ErrorCode.UNAVAILABLE, message=UNAVAILABLE_MESSAGE)


def rejection_reply(user: str, exc: RequestRejected) -> Outbound:
    """The `error` telling `user` why its request was refused."""
    return error_reply(user, ref=exc.ref, code=exc.code, message=exc.message)


def event(topic: str, type_: str, /, **fields: Any) -> Outbound:
    """An `event` of type `type_` on `topic` (QoS 1); None-valued fields are left out."""
    return Outbound(topic, Event.model_validate({"type": type_, **fields}).to_json())


def user_event(user: str, type_: str, /, **fields: Any) -> Outbound:
    """An `event` for all devices of `user` on `im/v1/u/{user}/event`."""
    return event(inbox_topic(user, InboxKind.EVENT), type_, **fields)


def group_event(group: str, type_: str, /, **fields: Any) -> Outbound:
    """An `event` for every member of `group` on `im/v1/g/{group}/event`."""
    return event(group_topic(group, GroupKind.EVENT), type_, **fields)


def group_replies(record: MessageRecord, *, group: str, created: bool) -> list[Outbound]:
    """What to publish, in order, for one result of a group send by `record.sender`.

    A newly stored message is published once on `g/{group}/msg` (every member's session is
    subscribed to it, the sender's other devices included), then the sender gets its ack.
    A retry (`created=False`) gets the same ack again and nothing else.
    """
    ack = Outbound(inbox_topic(record.sender, InboxKind.ACK), ack_payload(record))
    if not created:
        return [ack]
    return [Outbound(group_topic(group, GroupKind.MSG), delivered_payload(record)), ack]


def direct_replies(record: MessageRecord, *, peer: str, created: bool) -> list[Outbound]:
    """What to publish, in order, for one result of a direct send by `record.sender` to `peer`.

    A newly stored message goes to the peer's inbox, then to the sender's own inbox (so the
    sender's other devices see what it sent; once only when sending to oneself), then the ack.
    A retry (`created=False`) gets the same ack again and nothing else: nobody sees it twice.
    """
    sender = record.sender
    ack = Outbound(inbox_topic(sender, InboxKind.ACK), ack_payload(record))
    if not created:
        return [ack]
    delivered = delivered_payload(record)
    out = [Outbound(inbox_topic(peer, InboxKind.MSG), delivered)]
    if peer != sender:
        out.append(Outbound(inbox_topic(sender, InboxKind.MSG), delivered))
    out.append(ack)
    return out
