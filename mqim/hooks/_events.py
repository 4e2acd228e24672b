"""Webhook event bodies (pure): what an application backend gets, as JSON bytes.

`message.offline` (one per stored message and recipient without a connected session)::

    {"v":1,"type":"message.offline","id":"d:alice:bob:7:bob","ts":1764200000123,
     "conv":"d:alice:bob","seq":7,"sender":"alice","recipient":"bob","group":null,
     "message_id":"c-17","server_id":"...","sent_ts":1764200000100,"op":null,"preview":"hi"}

`user.online` / `user.offline`::

    {"v":1,"type":"user.online","id":"presence:bob:online:1764200000123","ts":...,"user":"bob",
     "epoch":1764200000123}

`id` is stable across retries (`X-Mqim-Delivery`), so a receiver can drop repeats: delivery is
at least once.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from mqim.hooks._config import HookEventName


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredMessage:
    """The fields of a delivered message (`u/{peer}/msg`, `g/{group}/msg`) a hook needs."""

    conv: str
    seq: int
    sender: str
    message_id: str | None
    server_id: str | None
    sent_ts: int | None
    op: str | None
    text: str | None


def read_message(payload: bytes) -> StoredMessage | None:
    """Parse a delivered message payload; None when it is not one (never raises)."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    conv, seq, sender = body.get("conv"), body.get("seq"), body.get("from")
    if not isinstance(conv, str) or not isinstance(sender, str):
        return None
    if not isinstance(seq, int) or isinstance(seq, bool):
        return None

    def text_field(key: str) -> str | None:
        value = body.get(key)
        return value if isinstance(value, str) else None

    ts = body.get("ts")
    return StoredMessage(
        conv=conv,
        seq=seq,
        sender=sender,
        message_id=text_field("id"),
        server_id=text_field("server_id"),
        sent_ts=ts if isinstance(ts, int) and not isinstance(ts, bool) else None,
        op=text_field("op"),
        text=text_field("text"),
    )


def preview_of(text: str | None, max_chars: int) -> str | None:
    """The start of a message text, at most `max_chars` characters (an ellipsis marks a cut)."""
    if text is None or max_chars <= 0:
        return None
    if len(text) <= max_chars:
        return text
    return text[: max(max_chars - 1, 0)] + "\u2026"


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def message_event(
    message: StoredMessage,
    *,
    recipient: str,
    group: str | None,
    now_ms: int,
    preview: str | None,
) -> tuple[str, bytes]:
    """`(delivery id, body)` of a `message.offline` event; `preview` None leaves it out."""
    delivery = f"{message.conv}:{message.seq}:{recipient}"
    body: dict[str, Any] = {
        "v": 1,
        "type": "message.offline",
        "id": delivery,
        "ts": now_ms,
        "conv": message.conv,
        "seq": message.seq,
        "sender": message.sender,
        "recipient": recipient,
        "group": group,
        "message_id": message.message_id,
        "server_id": message.server_id,
        "sent_ts": message.sent_ts,
        "op": message.op,
    }
    if preview is not None:
        body["preview"] = preview
    return delivery, _dump(body)


def presence_event(*, user: str, state: str, epoch: int, now_ms: int) -> tuple[HookEventName, str, bytes]:
    """`(event, delivery id, body)` of a `user.online` / `user.offline` event."""
    event: HookEventName = "user.online" if state == "online" else "user.offline"
    delivery = f"presence:{user}:{state}:{epoch}"
    body = {"v": 1, "type": event, "id": delivery, "ts": now_ms, "user": user, "epoch": epoch}
    return event, delivery, _dump(body)


def probe_event(*, endpoint: str, now_ms: int) -> tuple[str, bytes]:
    """`(delivery id, body)` of the event `mqim hooks test` sends."""
    delivery = f"test:{uuid.uuid4().hex}"
    body = {"v": 1, "type": "test", "id": delivery, "ts": now_ms, "endpoint": endpoint}
    return delivery, _dump(body)
