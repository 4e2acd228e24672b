"""Topic builders and parsers for the v1 topic table (docs/architecture.md, "The wire contract").

| topic                       | publisher      | subscriber          |
|-----------------------------|----------------|---------------------|
| im/v1/up/{user}/{kind}      | the user       | the logic service   |
| im/v1/u/{user}/{kind}       | logic service  | the user            |
| im/v1/g/{group}/{kind}      | logic service  | current members     |
| im/v1/presence/{user}       | broker         | users sharing a conv|
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from mqim.protocol._exceptions import InvalidTopic
from mqim.protocol._ids import is_valid_id, validate_id

PREFIX = "im/v1"
UP_FILTER = f"{PREFIX}/up/+/+"
SHARED_UP_FILTER = f"$share/logic/{UP_FILTER}"
"""What standalone logic workers subscribe to when they split the requests between them."""


class UpKind(StrEnum):
    """Requests a user may send on `im/v1/up/{user}/{kind}`."""

    MSG = "msg"
    READ = "read"
    TYPING = "typing"
    SYNC = "sync"
    HISTORY = "history"
    CMD = "cmd"


class InboxKind(StrEnum):
    """What the service sends on `im/v1/u/{user}/{kind}`."""

    MSG = "msg"
    ACK = "ack"
    RECEIPT = "receipt"
    TYPING = "typing"
    SYNC = "sync"
    HISTORY = "history"
    CMD = "cmd"
    ERROR = "error"
    EVENT = "event"


class GroupKind(StrEnum):
    """What the service sends on `im/v1/g/{group}/{kind}`."""

    MSG = "msg"
    RECEIPT = "receipt"
    TYPING = "typing"
    EVENT = "event"


class Channel(StrEnum):
    """The first level after `im/v1/`."""

    UP = "up"
    INBOX = "u"
    GROUP = "g"
    PRESENCE = "presence"


class ParsedTopic(NamedTuple):
    """A v1 topic split into its parts; `kind` is empty for presence topics."""

    channel: Channel
    owner: str
    kind: str


def up_topic(user: str, kind: UpKind | str) -> str:
    """Return `im/v1/up/{user}/{kind}`."""
    return f"{PREFIX}/up/{validate_id(user, what='user')}/{UpKind(kind).value}"


def inbox_topic(user: str, kind: InboxKind | str) -> str:
    """Return `im/v1/u/{user}/{kind}`."""
    return f"{PREFIX}/u/{validate_id(user, what='user')}/{InboxKind(kind).value}"


def group_topic(group: str, kind: GroupKind | str) -> str:
    """Return `im/v1/g/{group}/{kind}`."""
    return f"{PREFIX}/g/{validate_id(group, what='group')}/{GroupKind(kind).value}"


def presence_topic(user: str) -> str:
    """Return `im/v1/presence/{user}`."""
    return f"{PREFIX}/presence/{validate_id(user, what='user')}"


def inbox_filter(user: str) -> str:
    """Return the filter `im/v1/u/{user}/#` that a user's session is subscribed to."""
    return f"{PREFIX}/u/{validate_id(user, what='user')}/#"


def group_filter(group: str) -> str:
    """Return the filter `im/v1/g/{group}/#` that each member's session is subscribed to."""
    return f"{PREFIX}/g/{validate_id(group, what='group')}/#"


_KINDS: dict[Channel, frozenset[str]] = {
    Channel.UP: frozenset(k.value for k in UpKind),
    Channel.INBOX: frozenset(k.value for k in InboxKind),
    Channel.GROUP: frozenset(k.value for k in GroupKind),
}


def parse_topic(topic: str) -> ParsedTopic:
    """Parse a concrete v1 topic.

    Raises:
        InvalidTopic: When `topic` is not in the v1 table (unknown channel or kind, bad id).
    """
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != "im" or parts[1] != "v1":
        raise InvalidTopic(f"not an im/v1 topic: {topic!r}")
    try:
        channel = Channel(parts[2])
    except ValueError:
        raise InvalidTopic(f"unknown channel {parts[2]!r} in {topic!r}") from None
    owner = parts[3]
    if not is_valid_id(owner):
        raise InvalidTopic(f"invalid id {owner!r} in {topic!r}")
    if channel is Channel.PRESENCE:
        if len(parts) != 4:
            raise InvalidTopic(f"presence topics have no kind: {topic!r}")
        return ParsedTopic(channel, owner, "")
    if len(parts) != 5 or parts[4] not in _KINDS[channel]:
        raise InvalidTopic(f"unknown kind in {topic!r}")
    return ParsedTopic(channel, owner, parts[4])


def parse_up_topic(topic: str) -> tuple[str, str]:
    """Parse `im/v1/up/{user}/{kind}` into `(user, kind)`.

    The kind is returned as sent, even if unknown, so the service can answer with an error.

    Raises:
        InvalidTopic: When `topic` is not an uplink topic with a valid user id.
    """
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "im" or parts[1] != "v1" or parts[2] != "up":
        raise InvalidTopic(f"not an uplink topic: {topic!r}")
    if not is_valid_id(parts[3]):
        raise InvalidTopic(f"invalid user id in {topic!r}")
    return parts[3], parts[4]
