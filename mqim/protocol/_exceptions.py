"""Errors of the wire contract.

Hierarchy::

    ProtocolError            a request that breaks the v1 contract; carries an ErrorCode
    ├── InvalidId            a user/group id outside [A-Za-z0-9_.-]{1,64}
    ├── InvalidTopic         a topic outside the v1 table
    └── InvalidPayload       JSON that does not parse or does not fit its model
"""

from __future__ import annotations

from mqim.protocol._codes import ErrorCode


class ProtocolError(Exception):
    """A request that breaks the v1 wire contract.

    Args:
        message: Human-readable explanation, sent back to the client.
        code: The error code sent back to the client.
    """

    def __init__(self, message: str, *, code: ErrorCode = ErrorCode.BAD_REQUEST) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class InvalidId(ProtocolError):
    """A user or group id that breaks the id rule."""


class InvalidTopic(ProtocolError):
    """A topic that is not part of the v1 table."""


class InvalidPayload(ProtocolError):
    """A payload that is not valid JSON or does not fit its model."""
