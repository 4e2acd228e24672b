"""Errors of the logic service.

Hierarchy::

    LogicError                  any failure raised by mqim.logic
    ├── BusError                the transport to the broker failed
    │   ├── BusClosed           the bus is not started, or was stopped
    │   └── BusUnavailable      the broker cannot be reached or refused a publish
    │                           (aiomqtt.MqttError and BrokerPort failures are translated to it)
    └── RequestRejected         a client request the service refuses; also a
                                mqim.protocol.ProtocolError, so it carries an ErrorCode, plus
                                `ref`, the request `id` when it could be read

`RequestRejected` never escapes the service loop: it becomes an `error` payload for the sender.
"""

from __future__ import annotations

from mqim.protocol import ErrorCode, ProtocolError


class LogicError(Exception):
    """Any failure raised by the logic package."""


class BusError(LogicError):
    """The transport between the logic service and the broker failed."""


class BusClosed(BusError):
    """The bus was used before `start()` or after `stop()`."""


class BusUnavailable(BusError):
    """The broker cannot be reached, refused the connection, or a publish failed."""


class RequestRejected(LogicError, ProtocolError):
    """A client request the service refuses; answered with an `error` payload.

    Args:
        message: Human-readable explanation, sent back to the client.
        code: The error code sent back to the client.
        ref: The request's `id` when it could be read (even if the rest is invalid), else None.
    """

    def __init__(
        self, message: str, *, code: ErrorCode = ErrorCode.BAD_REQUEST, ref: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.ref = ref
