"""Errors of the client SDK. aiomqtt and pydantic errors never escape: they are translated here.

Hierarchy::

    ClientError               any failure of the SDK
    ├── ConnectError          the broker could not be reached or refused the connection
    │   └── AuthError         the broker refused the credentials (CONNACK 4/5)
    ├── ConnectionLost        the connection dropped and could not be re-established
    ├── ClientClosed          the client was closed while an operation was pending
    ├── InvalidRequest        a request that breaks the wire contract (also a ValueError)
    ├── AckTimeout            no ack arrived for a sent message, even after one retry
    └── SendError             the server refused a sent message; carries the ErrorPayload
"""

from __future__ import annotations

from mqim.protocol import ErrorCode, ErrorPayload


class ClientError(Exception):
    """Any failure of the client SDK."""


class ConnectError(ClientError):
    """The broker could not be reached, or it refused the connection."""


class AuthError(ConnectError):
    """The broker refused the user name or password."""


class ConnectionLost(ClientError):
    """The connection dropped and the reconnect attempts were exhausted."""


class ClientClosed(ClientError):
    """The client was closed while the operation was pending."""


class InvalidRequest(ClientError, ValueError):
    """A request that breaks the wire contract (bad id, no target, no content...)."""


class AckTimeout(ClientError):
    """No ack arrived in time for a sent message, even after retrying it once.

    Args:
        message_id: The `id` of the message that was not acknowledged.
        timeout: Seconds waited per attempt.
    """

    def __init__(self, message_id: str, timeout: float) -> None:
        super().__init__(f"no ack for message {message_id!r} after 2 attempts of {timeout:g}s")
        self.message_id = message_id
        self.timeout = timeout


class SendError(ClientError):
    """The server answered a sent message with an `error` payload.

    Args:
        error: The error payload; `error.ref` is the message id.
    """

    def __init__(self, error: ErrorPayload) -> None:
        super().__init__(f"{error.code.value}: {error.message}")
        self.error = error

    @property
    def code(self) -> ErrorCode:
        """The error code sent by the server."""
        return self.error.code
