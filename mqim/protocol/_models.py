"""Pydantic models of the v1 payloads (docs/architecture.md, "The wire contract"; the README's topics).

Requests ignore unknown fields so that newer clients keep working; replies never rename a field.
New fields are only ever added, optional, so an older client keeps parsing what it knew.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticUndefined, to_json

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


MessageOp = Literal["edit", "recall", "delete"]
"""What a `msg` request with an `op` does to the message `ref_seq` of the same conversation."""

ReceiptKind = Literal["delivered", "read"]
PresenceState = Literal["online", "offline"]
GroupRole = Literal["owner", "admin", "member"]


class SendRequest(_Request):
    """`up/{me}/msg`: a direct (`to`) or group (`group`) message, or an operation on one.

    Exactly one of `to` and `group`. Without `op` (a new message) and with `op="edit"`, at least
    one of `text` and `data`. With `op` ("edit", "recall", "delete" for me), `ref_seq` names the
    message of that conversation the operation applies to.
    """

    id: Id
    to: Id | None = None
    group: Id | None = None
    text: str | None = None
    data: dict[str, Any] | None = None
    op: MessageOp | None = None
    ref_seq: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _one_target_some_content(self) -> SendRequest:
        if (self.to is None) == (self.group is None):
            raise ValueError("exactly one of 'to' and 'group' is required")
        if self.op in (None, "edit") and self.text is None and self.data is None:
            raise ValueError("one of 'text' and 'data' is required")
        if (self.op is None) != (self.ref_seq is None):
            raise ValueError("'op' and 'ref_seq' go together")
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
    op: MessageOp | None = None
    ref_seq: int | None = None
    ref_conv: str | None = None
    deleted: bool | None = None


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


class ReadRequest(_Request):
    """`up/{me}/read`: I have read `conv` up to `seq` (the cursor only moves forward)."""

    conv: Conv
    seq: Annotated[int, Field(ge=0)]
    id: Id | None = None


class TypingRequest(_Request):
    """`up/{me}/typing`: I am typing in `conv` (QoS 0, never stored)."""

    conv: Conv


class SyncRequest(_Request):
    """`up/{me}/sync`: what happened in my conversations after `since` (conv -> last seen seq).

    A conversation missing from `since` (or every one, without `since`) starts at seq 0. A page
    that could not hold everything says `more` and names `next_conv`; ask again with `since`
    updated and `from_conv` set to it.
    """

    id: Id
    since: dict[Conv, Annotated[int, Field(ge=0)]] | None = None
    from_conv: Conv | None = None
    limit: Annotated[int, Field(ge=1)] | None = None


class HistoryRequest(_Request):
    """`up/{me}/history`: the newest `limit` messages of `conv` below seq `before`."""

    id: Id
    conv: Conv
    before: Annotated[int, Field(ge=1)] | None = None
    limit: Annotated[int, Field(ge=1)] | None = None


class CmdRequest(_Request):
    """`up/{me}/cmd`: a group operation `op` (group.create|add|remove|leave|info|list|rename|role)."""

    id: Id
    op: str
    group: Id | None = None
    members: list[Id] | None = None
    name: str | None = None
    user: Id | None = None
    role: GroupRole | None = None
    offset: Annotated[int, Field(ge=0)] | None = None
    limit: Annotated[int, Field(ge=1)] | None = None


class Receipt(_Reply):
    """`u/{sender}/receipt` (delivered, read) or `g/{group}/receipt` (read).

    For groups, delivery receipts are aggregated: `count` users have `seq`, `user` is the latest.
    """

    conv: str
    seq: int
    user: str
    kind: ReceiptKind
    count: int | None = None


class TypingNotice(_Reply):
    """`u/{peer}/typing` or `g/{group}/typing`: `user` is typing in `conv` (QoS 0)."""

    conv: str
    user: str


class _Part(BaseModel):
    """A nested object of a reply (no version field of its own)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CmdError(_Part):
    """Why a `cmd` failed (inside `CmdReply.error`)."""

    code: ErrorCode
    message: str


class CmdReply(_Reply):
    """`u/{me}/cmd`: the answer to the `cmd` request `ref`: a `result` if `ok`, else an `error`."""

    ref: str
    ok: bool
    result: dict[str, Any] | None = None
    error: CmdError | None = None


class SyncConv(_Part):
    """One conversation of a sync page: my cursors, the unread count and messages after `since`."""

    conv: str
    last_seq: int
    read_seq: int
    unread: int
    messages: list[dict[str, Any]]


class SyncPage(_Reply):
    """`u/{me}/sync`: one page of the answer to sync request `ref`."""

    ref: str
    convs: list[SyncConv]
    more: bool
    next_conv: str | None = None


class HistoryPage(_Reply):
    """`u/{me}/history`: messages of `conv` in ascending seq order; `more` when older ones exist."""

    ref: str
    conv: str
    messages: list[dict[str, Any]]
    more: bool


class Event(_Reply):
    """`u/{me}/event` or `g/{group}/event`: something changed (`type` says what; more fields vary)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str


class Presence(_Reply):
    """`presence/{user}` (retained): online or offline; `epoch` grows with every connection."""

    user: str
    state: PresenceState
    ts: int
    epoch: int


_R = TypeVar("_R", bound=_Reply)


class ReplyEncoder(Generic[_R]):
    """The JSON of reply model `model` from values the server made itself, without the model.

    `encoder(**fields)` gives the same bytes as `model(**fields).to_json()` (wire names, fields
    in the model's order, absent optional fields left out, pydantic-core's JSON writer) at a
    fraction of the cost: nothing is validated or constructed. It is for hot paths whose values
    come from storage records of the right types (tests/protocol checks the bytes against the
    model's); a payload built from anything a client sent goes through the model.

    Args:
        model: A reply model that leaves out None fields (not `ErrorPayload`).
    """

    __slots__ = ("_defaults", "_fields", "_names", "model")

    def __init__(self, model: type[_R]) -> None:
        if model.to_json is not _Reply.to_json:
            raise TypeError(f"{model.__name__} does not serialise like _Reply.to_json")
        self.model = model
        self._fields = tuple((name, info.alias or name) for name, info in model.model_fields.items())
        self._names = frozenset(model.model_fields)
        self._defaults = {
            name: info.default
            for name, info in model.model_fields.items()
            if info.default is not PydanticUndefined and info.default is not None
        }

    def __call__(self, **fields: Any) -> bytes:
        """The reply's JSON (field names as the model's Python names, e.g. `sender`).

        Raises:
            TypeError: A field the model does not have.
        """
        if not self._names.issuperset(fields):
            unknown = ", ".join(sorted(set(fields) - self._names))
            raise TypeError(f"{self.model.__name__} has no field(s) {unknown}")
        wire: dict[str, Any] = {}
        defaults = self._defaults
        for name, alias in self._fields:
            value = fields.get(name)
            if value is None:
                value = defaults.get(name)
                if value is None:
                    continue
            wire[alias] = value
        return to_json(wire)
