"""What both load-generator roles share: the clock, events on stdout, commands on stdin, paho clients.

The roles are `ClientsWorker` (`mqim/bench/_clients_worker.py`) and `PublisherWorker`
(`mqim/bench/_publisher_worker.py`); `mqim/bench/_worker.py` is the process that plays one.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import ValidationError

from mqim.bench._adapters import ClientSpec
from mqim.bench._exceptions import WorkerError
from mqim.bench._messages import COMMAND_ADAPTER, ConnectCmd, GoCmd, StopCmd
from mqim.bench._netloop import NetLoop

MAX_LINE_BYTES = 1 << 20
"""Longest command line accepted on stdin."""

MAX_PUBLISHER_INFLIGHT = 10_000
"""Unacknowledged publishes a publisher allows itself; open loop stalls (and is charged) beyond."""


def now_ns() -> int:
    """Return CLOCK_MONOTONIC in nanoseconds (system-wide on Linux, comparable across processes)."""
    return time.monotonic_ns()


def emit(event: Any) -> None:
    """Write `event` (a pydantic model) as one JSON line on stdout, flushed."""
    sys.stdout.write(event.model_dump_json() + "\n")
    sys.stdout.flush()


class Stdin:
    """Line reader on file descriptor 0 that never blocks once the first line is read."""

    def __init__(self) -> None:
        self._buf = b""
        self.eof = False

    def read_first_line(self) -> bytes:
        while b"\n" not in self._buf:
            chunk = os.read(0, 65536)
            if not chunk:
                raise WorkerError("stdin closed before the spec line")
            self._buf += chunk
            if len(self._buf) > MAX_LINE_BYTES:
                raise WorkerError("spec line too long")
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def read_lines(self) -> list[bytes]:
        try:
            chunk = os.read(0, 65536)
        except BlockingIOError:
            chunk = None
        if chunk == b"":
            self.eof = True
        elif chunk:
            self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        if len(self._buf) > MAX_LINE_BYTES:
            raise WorkerError("command line too long")
        return [line for line in lines if line.strip()]


class _Client(mqtt.Client):
    """A paho client whose socket connects without binding first.

    paho binds every socket to ('', 0) before connecting; such a bind cannot take a port that a
    socket in TIME_WAIT still holds, so after a few 10,000-client crowds the ephemeral range
    (~28,000 ports) runs dry with EADDRINUSE. A plain connect() picks a port per destination and
    may reuse those ports.
    """

    def _create_socket_connection(self) -> socket.socket:
        return socket.create_connection((self._host, self._port), timeout=self._connect_timeout)


def new_client(spec: ClientSpec, userdata: int) -> mqtt.Client:
    """Return an MQTT 3.1.1 paho client for `spec`, with `userdata` handed to its callbacks."""
    client = _Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=spec.client_id,
        clean_session=spec.clean_session,
        userdata=userdata,
        protocol=MQTTProtocolVersion.MQTTv311,
    )
    if spec.username is not None:
        client.username_pw_set(spec.username, spec.password)
    client.max_inflight_messages_set(MAX_PUBLISHER_INFLIGHT + 1)
    return client


class Worker:
    """What both roles share: the loop, stdin and command parsing."""

    def __init__(self, stdin: Stdin) -> None:
        self.net = NetLoop()
        self.stdin = stdin
        self.commands: deque[ConnectCmd | GoCmd | StopCmd] = deque()

    def listen_commands(self) -> None:
        self.net.add_reader(0, self._read_commands)

    def _read_commands(self) -> None:
        for line in self.stdin.read_lines():
            try:
                self.commands.append(COMMAND_ADAPTER.validate_json(line))
            except ValidationError as exc:
                raise WorkerError(f"bad command {line[:200]!r}: {exc}") from exc
        if self.stdin.eof:
            # The harness went away or wants us gone: no results, just leave.
            self.net.remove_reader(0)

    def next_command(self) -> ConnectCmd | GoCmd | StopCmd | None:
        return self.commands.popleft() if self.commands else None

    def run(self) -> None:
        raise NotImplementedError
