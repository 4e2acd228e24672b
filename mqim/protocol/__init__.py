"""The v1 wire contract: topics, payload models, ids and error codes. Pure: no I/O."""

from mqim.protocol._codes import ErrorCode
from mqim.protocol._exceptions import InvalidId, InvalidPayload, InvalidTopic, ProtocolError
from mqim.protocol._ids import (
    ID_PATTERN,
    direct_conv,
    group_conv,
    is_valid_id,
    parse_conv,
    validate_id,
)
from mqim.protocol._models import Ack, DeliveredMessage, ErrorPayload, SendRequest
from mqim.protocol._topics import (
    PREFIX,
    UP_FILTER,
    Channel,
    GroupKind,
    InboxKind,
    ParsedTopic,
    UpKind,
    group_filter,
    group_topic,
    inbox_filter,
    inbox_topic,
    parse_topic,
    parse_up_topic,
    presence_topic,
    up_topic,
)

__all__ = [
    "ID_PATTERN",
    "PREFIX",
    "UP_FILTER",
    "Ack",
    "Channel",
    "DeliveredMessage",
    "ErrorCode",
    "ErrorPayload",
    "GroupKind",
    "InboxKind",
    "InvalidId",
    "InvalidPayload",
    "InvalidTopic",
    "ParsedTopic",
    "ProtocolError",
    "SendRequest",
    "UpKind",
    "direct_conv",
    "group_conv",
    "group_filter",
    "group_topic",
    "inbox_filter",
    "inbox_topic",
    "is_valid_id",
    "parse_conv",
    "parse_topic",
    "parse_up_topic",
    "presence_topic",
    "up_topic",
    "validate_id",
]
