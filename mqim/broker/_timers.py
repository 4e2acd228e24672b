"""CONNECT time-outs and keepalives (MQTT-3.1.2-24) by deadline: a sweep costs what is due.

Each connection has one deadline in a heap (`mqim._util.Deadlines`): at open, its CONNECT
time-out; once accepted, its last packet plus 1.5x its keepalive. A sweep pops only the
connections whose deadline has come; one that received something since gets its next deadline
and waits again, so each is looked at about once per keepalive instead of at every tick.
"""

from __future__ import annotations

import logging

from mqim._util import Deadlines
from mqim.broker._connection import MqttConnection, State
from mqim.broker._settings import BrokerSettings

log = logging.getLogger("mqim.broker")


class ConnectionTimers:
    """The deadlines of the open connections.

    Args:
        settings: Where the CONNECT time-out comes from.
    """

    def __init__(self, *, settings: BrokerSettings) -> None:
        self._settings = settings
        self._deadlines: Deadlines[MqttConnection] = Deadlines()

    def __len__(self) -> int:
        return len(self._deadlines)

    def opened(self, conn: MqttConnection) -> None:
        """A new socket: it must send CONNECT within the time-out."""
        self._deadlines.set(conn, conn.opened_at + self._settings.connect_timeout_s)

    def established(self, conn: MqttConnection) -> None:
        """An accepted CONNECT: watch its keepalive (none when 0)."""
        if conn.keepalive > 0:
            self._deadlines.set(conn, conn.last_rx + conn.keepalive)
        else:
            self._deadlines.discard(conn)

    def closed(self, conn: MqttConnection) -> None:
        """A closed socket: nothing to watch any more."""
        self._deadlines.discard(conn)

    def sweep(self, now: float) -> int:
        """Close the connections whose CONNECT time-out or keepalive has expired at `now`.

        Returns how many connections were looked at.
        """
        due = self._deadlines.pop_due(now)
        timeout = self._settings.connect_timeout_s
        for conn in due:
            if conn.state in (State.AWAIT_CONNECT, State.AUTHENTICATING):
                limit = conn.opened_at + timeout
                if now > limit:
                    conn.close("no CONNECT in time", abort=True)
                else:
                    self._deadlines.set(conn, limit)
            elif conn.state is State.CONNECTED and conn.keepalive > 0:
                limit = conn.last_rx + conn.keepalive
                if now > limit:
                    log.info(
                        "keepalive expired for %s", conn.session.client_id if conn.session else conn.peer
                    )
                    conn.close("keepalive expired", abort=True)
                else:
                    self._deadlines.set(conn, limit)
        return len(due)
