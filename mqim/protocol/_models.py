"""Pydantic models of the v1 payloads (DESIGN.md section 2).

Requests ignore unknown fields so that newer clients keep working; replies never rename a field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from mqim.protocol._codes import ErrorCode
from mqim.protocol._ids import ID_PATTERN

Id = Annotated[str, StringConstraints(pattern=f"^{ID_PATTERN}$")]
"""A user, group or client-message id."""

Conv = Annotated[str, StringConstraints(pattern=f"^(d:{ID_PATTERN}:{ID_PATTERN}|g:{ID_PATTERN})$")]
"""A conversation id: `d:{a}:{b}` or `g:{group}`."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = 1


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    v: Literal[1] = 1

    def to_json(self) -> bytes:
        """Serialise with wire names, leaving out absent optional fields."""
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


class SendRequest(_Request):
    """`up/{me}/msg`: a direct (`to`) or group (`group`) message.

    Exactly one of `to` and `group`, and at least one of `text` and `data`.
    """

    id: Id
    to: Id | None = None
    group: Id | None = None
    text: str | None = None
    data: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_target_some_content(self) -> SendRequest:
        if (self.to is None) == (self.group is None):
            raise ValueError("exactly one of 'to' and 'group' is required")
        if self.text is None and self.data is None:
            raise ValueError("one of 'text' and 'data' is required")
        return self


class DeliveredMessage(_Reply):
    """`u/{peer}/msg` or `g/{group}/msg`: a stored message as recipients see it."""

    conv: str
    seq: int
    server_id: str
    id: str
    sender: str = Field(alias="from")
    ts: int
    text: str | None = None
    data: dict[str, Any] | None = None


class Ack(_Reply):
    """`u/{me}/ack`: the server stored the sender's message `id` as `conv`/`seq`."""

    id: str
    conv: str
    seq: int
    server_id: str
    ts: int


class ErrorPayload(_Reply):
    """`u/{me}/error`: a request was refused; `ref` is its `id` when it could be read."""

    ref: str | None
    code: ErrorCode
    message: str

    def to_json(self) -> bytes:
        # `ref` is part of the contract even when null.
        return self.model_dump_json(by_alias=True).encode()
