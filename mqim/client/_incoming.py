"""Decoding what the broker delivers: pure functions from (topic, payload) to `Incoming`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mqim.protocol import (
    Ack,
    Channel,
    DeliveredMessage,
    ErrorPayload,
    InboxKind,
    InvalidTopic,
    parse_topic,
)

_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True, slots=True, kw_only=True)
class Incoming:
    """One message delivered to the client.

    Attributes:
        topic: The MQTT topic it arrived on.
        channel: `u`, `g` or `presence`; None for a topic outside the v1 table.
        owner: The user or group id of the topic; None for a topic outside the v1 table.
        kind: The last topic level (`msg`, `ack`, `event`...); empty for presence and unknown topics.
        payload: A `DeliveredMessage` for a valid `msg`, else the decoded JSON object
            (empty when the payload is not a JSON object, see `problem`).
        raw: The payload bytes as received.
        retain: The MQTT retain flag.
        problem: Why the payload could not be decoded as expected, or None.
    """

    topic: str
    channel: Channel | None
    owner: str | None
    kind: str
    payload: DeliveredMessage | dict[str, Any]
    raw: bytes
    retain: bool = False
    problem: str | None = None

    @property
    def message(self) -> DeliveredMessage | None:
        """The delivered message when this is a valid `msg`, else None."""
        return self.payload if isinstance(self.payload, DeliveredMessage) else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view: topic, kind, payload in wire names (and problem, if any)."""
        payload = (
            self.payload.model_dump(mode="json", by_alias=True, exclude_none=True)
            if isinstance(self.payload, DeliveredMessage)
            else self.payload
        )
        out: dict[str, Any] = {"topic": self.topic, "kind": self.kind, "payload": payload}
        if self.retain:
            out["retain"] = True
        if self.problem is not None:
            out["problem"] = self.problem
        return out


def lenient_validate(model: type[_M], data: dict[str, Any]) -> _M:
    """Validate `data` against a reply `model`, ignoring fields the model does not know.

    Reply models forbid extra fields (the server must not invent names), but the wire contract allows the
    server to add fields later, so a client must keep working when it does.

    Raises:
        pydantic.ValidationError: When a known field is missing or invalid.
    """
    known: set[str] = set()
    for name, field in model.model_fields.items():
        known.add(name)
        if field.alias is not None:
            known.add(field.alias)
    return model.model_validate({k: v for k, v in data.items() if k in known})


def decode(topic: str, raw: bytes, *, retain: bool = False) -> Incoming:
    """Decode one delivered MQTT message. Never raises: problems are reported in `problem`."""
    channel: Channel | None
    owner: str | None
    try:
        parsed = parse_topic(topic)
        channel, owner, kind = parsed.channel, parsed.owner, parsed.kind
    except InvalidTopic:
        channel, owner, kind = None, None, ""
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        return Incoming(
            topic=topic,
            channel=channel,
            owner=owner,
            kind=kind,
            payload={},
            raw=raw,
            retain=retain,
            problem=f"payload is not JSON: {exc}",
        )
    if not isinstance(obj, dict):
        return Incoming(
            topic=topic,
            channel=channel,
            owner=owner,
            kind=kind,
            payload={},
            raw=raw,
            retain=retain,
            problem="payload is not a JSON object",
        )
    payload: DeliveredMessage | dict[str, Any] = obj
    problem: str | None = None
    if kind == "msg" and channel in (Channel.INBOX, Channel.GROUP):
        try:
            payload = lenient_validate(DeliveredMessage, obj)
        except ValidationError as exc:
            problem = f"invalid msg payload: {_first_error(exc)}"
    return Incoming(
        topic=topic,
        channel=channel,
        owner=owner,
        kind=kind,
        payload=payload,
        raw=raw,
        retain=retain,
        problem=problem,
    )


def ack_of(incoming: Incoming, user: str) -> Ack | None:
    """Return the `Ack` carried by `incoming` if it is a valid ack on `user`'s inbox, else None."""
    if incoming.channel is not Channel.INBOX or incoming.owner != user or incoming.kind != InboxKind.ACK:
        return None
    if not isinstance(incoming.payload, dict):
        return None
    try:
        return lenient_validate(Ack, incoming.payload)
    except ValidationError:
        return None


def error_of(incoming: Incoming, user: str) -> ErrorPayload | None:
    """Return the `ErrorPayload` carried by `incoming` if it is a valid error on `user`'s inbox."""
    if incoming.channel is not Channel.INBOX or incoming.owner != user or incoming.kind != InboxKind.ERROR:
        return None
    if not isinstance(incoming.payload, dict):
        return None
    try:
        return lenient_validate(ErrorPayload, incoming.payload)
    except ValidationError:
        return None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(part) for part in err["loc"]) or "payload"
    return f"{loc}: {err['msg']}"
