"""Pure builders of the service's replies: stored records in, (topic, payload) out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mqim.protocol import Ack, DeliveredMessage, ErrorCode, ErrorPayload, InboxKind, inbox_topic
from mqim.storage import MessageRecord


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message the service publishes."""

    topic: str
    payload: bytes
    qos: int = 1


def delivered_payload(record: MessageRecord) -> bytes:
    """The `DeliveredMessage` JSON of a stored message, as recipients see it."""
    fields: dict[str, Any] = {
        "conv": record.conv,
        "seq": record.seq,
        "server_id": record.server_id,
        "id": record.client_id,
        "from": record.sender,  # a Python keyword, hence the dict
        "ts": record.ts,
        "text": record.body.get("text"),
        "data": record.body.get("data"),
    }
    return DeliveredMessage.model_validate(fields).to_json()


def ack_payload(record: MessageRecord) -> bytes:
    """The `Ack` JSON telling the sender where its message `id` was stored."""
    return Ack(
        id=record.client_id, conv=record.conv, seq=record.seq, server_id=record.server_id, ts=record.ts
    ).to_json()


def error_payload(*, ref: str | None, code: ErrorCode, message: str) -> bytes:
    """The `ErrorPayload` JSON refusing request `ref` (null when its id could not be read)."""
    return ErrorPayload(ref=ref, code=code, message=message).to_json()


def error_reply(user: str, *, ref: str | None, code: ErrorCode, message: str) -> Outbound:
    """An error for `user` on `im/v1/u/{user}/error`."""
    return Outbound(inbox_topic(user, InboxKind.ERROR), error_payload(ref=ref, code=code, message=message))


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
