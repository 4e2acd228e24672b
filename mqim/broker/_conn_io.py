"""The socket side of a connection: batched writes, closing, reading paused for back-pressure.

`ConnectionIO` is the base of `MqttConnection` (through `ConnectHandshake`). Everything written
in one loop tick leaves in one send. Reading stops, for as long as any reason holds, while the
client reads slower than we write, while the broker holds too many publishes for the logic
(`Hub` back-pressure) or while the connection is owed too many acknowledgements.
"""

from __future__ import annotations

import asyncio
from typing import Self

from mqim import mqtt as c
from mqim.broker._conn_state import State
from mqim.broker._host import ConnectionHost
from mqim.broker._hub import Hub
from mqim.broker._session import Session

PAUSE_WRITE = 1  # the client reads slower than we write
PAUSE_HELD = 2  # the broker holds too many publishes for the logic (Hub back-pressure)
PAUSE_OWED = 4  # this connection is owed too many acknowledgements
HOLD_BACK = PAUSE_HELD | PAUSE_OWED  # reasons to stop handling packets already read


class ConnectionIO(asyncio.Protocol):
    """The transport side of `MqttConnection`.

    The attributes it sets are slots of this class; the others it reads, and `_run_backlog`,
    are its subclasses'.
    """

    __slots__ = ("_out", "_read_paused", "close_reason", "closing", "transport", "writable")

    host: ConnectionHost[Self]
    hub: Hub
    state: State
    session: Session | None
    transport: asyncio.BaseTransport | None
    writable: bool
    closing: bool
    close_reason: str
    _out: list[bytes] | None
    _read_paused: int
    _backlog: list[c.Frame]

    def _run_backlog(self) -> None:
        raise NotImplementedError  # MqttConnection._run_backlog

    def pause_writing(self) -> None:
        # The client reads slower than we write: stop writing to it (messages stay queued,
        # QoS 0 is dropped) and stop reading from it so it cannot make us buffer without bound.
        self.writable = False
        self._pause_reading(PAUSE_WRITE)

    def resume_writing(self) -> None:
        self.writable = True
        self._resume_reading(PAUSE_WRITE)
        if self.session is not None and self.session.conn is self:
            self.session.pump()

    def _pause_reading(self, why: int) -> None:
        was = self._read_paused
        self._read_paused = was | why
        if not was and isinstance(self.transport, asyncio.ReadTransport):
            self.transport.pause_reading()

    def _resume_reading(self, why: int) -> None:
        was = self._read_paused
        self._read_paused = was & ~why
        if was and not self._read_paused and self.state is State.CONNECTED:
            if self._backlog:
                self.host.loop.call_soon(self._run_backlog)
            if isinstance(self.transport, asyncio.ReadTransport):
                self.transport.resume_reading()

    def resume_publishing(self) -> None:
        """The broker holds few enough publishes again (`Hub` back-pressure)."""
        self._resume_reading(PAUSE_HELD)

    # -- output --------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue bytes for the socket; everything written in one loop tick leaves in one send.

        A send() per packet was the largest single cost under load (PUBACKs, fan-out); the
        flush runs at the end of the current tick, so latency does not change.
        """
        if self.transport is None or self.state is State.CLOSED:
            return
        out = self._out
        if out is None:
            self._out = [data]
            self.host.loop.call_soon(self._flush)
        else:
            out.append(data)

    def _flush(self) -> None:
        out, self._out = self._out, None
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            data = out[0] if len(out) == 1 else b"".join(out)
            self.hub.traffic.bytes_sent += len(data)
            transport.write(data)  # type: ignore[attr-defined]

    def close(self, reason: str, *, abort: bool = False) -> None:
        """Close the connection; `reason` is logged."""
        if self.state is State.CLOSED and self.transport is None:
            return
        self.close_reason = self.close_reason or reason
        self.closing = True
        self._flush()  # what was written before closing (a refusing CONNACK, say) still leaves
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if abort:
                transport.abort()  # type: ignore[attr-defined]
            else:
                transport.close()
