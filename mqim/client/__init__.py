"""Asyncio client SDK for mqim (over aiomqtt): send with acks, receive with dedup, reconnect."""

from mqim.client._backoff import backoff_delay
from mqim.client._buffer import IncomingBuffer
from mqim.client._client import MqimClient, new_message_id
from mqim.client._dedup import DedupWindow
from mqim.client._exceptions import (
    AckTimeout,
    AuthError,
    ClientClosed,
    ClientError,
    ConnectError,
    ConnectionLost,
    InvalidRequest,
    SendError,
)
from mqim.client._incoming import Incoming, ack_of, decode, error_of, lenient_validate
from mqim.client._pending import PendingAcks

__all__ = [
    "AckTimeout",
    "AuthError",
    "ClientClosed",
    "ClientError",
    "ConnectError",
    "ConnectionLost",
    "DedupWindow",
    "Incoming",
    "IncomingBuffer",
    "InvalidRequest",
    "MqimClient",
    "PendingAcks",
    "SendError",
    "ack_of",
    "backoff_delay",
    "decode",
    "error_of",
    "lenient_validate",
    "new_message_id",
]
