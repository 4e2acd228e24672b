"""Where a connection is in its life."""

from __future__ import annotations

from enum import Enum


class State(Enum):
    """Where a connection is: waiting for CONNECT, authenticating, connected, closed."""

    AWAIT_CONNECT = 1
    AUTHENTICATING = 2
    CONNECTED = 3
    CLOSED = 4
