"""Plain records that cross the storage boundary. Immutable dataclasses; no backend types."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    """A member's role in a group."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"


class AccountKind(StrEnum):
    """What an account is used for."""

    USER = "user"
    SERVICE = "service"
    BRIDGE = "bridge"


@dataclass(frozen=True, slots=True, kw_only=True)
class UserRecord:
    """A user account. The password hash never leaves storage."""

    user_id: str
    kind: AccountKind = AccountKind.USER
    disabled: bool = False
    created_ts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class NewMessage:
    """A message to append to a conversation.

    `client_id` is the sender's idempotency key: (sender, client_id) is stored at most once.
    """

    conv: str
    sender: str
    client_id: str
    ts: int
    kind: str = "msg"
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageRecord:
    """A stored message; `seq` is strictly increasing within `conv`."""

    conv: str
    seq: int
    server_id: str
    sender: str
    client_id: str
    ts: int
    kind: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendResult:
    """What `append_messages` did with one `NewMessage`.

    `created` is False when (sender, client_id) was already stored: `record` is then the
    original message, so a retry gets the same ack and nothing new is delivered.
    """

    record: MessageRecord
    created: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupRecord:
    """A group and its members with their roles."""

    group_id: str
    name: str
    members: dict[str, Role]
    created_ts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ConvState:
    """A user's view of one conversation: last stored seq and the user's cursors."""

    conv: str
    last_seq: int
    read_seq: int
    delivered_seq: int

    @property
    def unread(self) -> int:
        """Unread count, computed from cursors so it can never drift."""
        return max(0, self.last_seq - self.read_seq)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedMessage:
    """An entry of a persistent MQTT session's durable queue.

    `qid` orders the queue of one client id; it is assigned by the broker, not by storage.
    """

    qid: int
    topic: str
    payload: bytes
    qos: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredSession:
    """A persistent (clean_session=0) MQTT session as stored durably."""

    client_id: str
    user: str | None
    subscriptions: dict[str, int]
    disconnected_ts: int | None
    queue: list[QueuedMessage]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetainedRecord:
    """A retained message of the broker."""

    topic: str
    payload: bytes
    qos: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AclRuleRecord:
    """A stored ACL rule: its text in the `mqim.acl` rule syntax, evaluated in `rule_id` order.

    Storage keeps the text as given; parsing and validation are the ACL's business.
    """

    rule_id: int
    text: str
    name: str = ""
    created_ts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleRecord:
    """A role that ACL rules can name (`role:NAME`), with the users holding it (sorted)."""

    name: str
    description: str = ""
    members: tuple[str, ...] = ()
    created_ts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class UserChanges:
    """Accounts changed (updated, disabled, enabled, removed) after a change number.

    Attributes:
        rev: The newest change number covered; pass it as `since` next time.
        users: The changed accounts' ids, each once, oldest change first.
        complete: False when changes after `since` were already pruned from the change log:
            the caller must re-check every account it cares about.
    """

    rev: int
    users: tuple[str, ...] = ()
    complete: bool = True
