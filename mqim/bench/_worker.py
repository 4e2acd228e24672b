"""A load-generator process: `python -m mqim.bench._worker`, spoken to as `_messages` describes.

Generators run in their own processes so that they never share the broker's event loop or the
harness's; each is single-threaded (one `NetLoop`). Timestamps are `time.monotonic_ns()`:
CLOCK_MONOTONIC is system-wide on Linux, so a publisher's timestamp and a subscriber's clock are
directly comparable.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import deque
from typing import Any, NoReturn

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from mqim.bench._adapters import Adapter, ClientSpec, make_adapter
from mqim.bench._exceptions import BenchError, TrackingLimitExceeded, WorkerError
from mqim.bench._histogram import Histogram
from mqim.bench._loss import LossStats, SequenceChecker
from mqim.bench._messages import (
    COMMAND_ADAPTER,
    SPEC_ADAPTER,
    ClientsSpec,
    CompleteEv,
    ConnectCmd,
    CountEv,
    DoneEv,
    ErrorEv,
    GoCmd,
    PublisherSpec,
    ReadyEv,
    ResultEv,
    StartedEv,
    StopCmd,
)
from mqim.bench._netloop import NetLoop

MAX_LINE_BYTES = 1 << 20
"""Longest command line accepted on stdin."""

MAX_FANOUT_PENDING = 100_000
"""Messages a fan-out worker tracks while waiting for every client to receive them."""

MAX_PUBLISHER_INFLIGHT = 10_000
"""Unacknowledged publishes a publisher allows itself; open loop stalls (and is charged) beyond."""

PRECISE_WAIT_S = 0.002
"""Below this wait the open-loop publisher sleeps instead of waiting in epoll (1 ms resolution)."""

COUNT_INTERVAL_NS = 200_000_000
"""How often a clients worker reports its delivery count while it changes."""


def _now() -> int:
    return time.monotonic_ns()


def _emit(event: Any) -> None:
    sys.stdout.write(event.model_dump_json() + "\n")
    sys.stdout.flush()


class _Stdin:
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


def _new_client(spec: ClientSpec, userdata: int) -> mqtt.Client:
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


class _Worker:
    """What both roles share: the loop, stdin and command parsing."""

    def __init__(self, stdin: _Stdin) -> None:
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


class ClientsWorker(_Worker):
    """Many subscribing clients; records latency, loss and fan-out of bench messages."""

    def __init__(self, spec: ClientsSpec, stdin: _Stdin) -> None:
        super().__init__(stdin)
        self.spec = spec
        self.adapter: Adapter = make_adapter(spec.adapter)
        self.clients: dict[int, mqtt.Client] = {}
        self.establishing: set[int] = set()
        self.subscribed: set[int] = set()
        self.failed = 0
        self.error: str | None = None
        self.stopping = False
        self.disconnects = 0
        self.latency = Histogram()
        self.numbers: dict[int, SequenceChecker] = {}
        self.seqs: dict[tuple[int, str], SequenceChecker] = {}
        self.fan: dict[int, list[int]] = {}
        self.received = 0
        self.distinct = 0
        self.stale = 0
        self.first_recv_ns = 0
        self.last_recv_ns = 0
        self.first_ns = 0
        self.last_ns = 0

    # -- paho callbacks ---------------------------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, index: int, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self._fail(index, f"CONNACK refused: {reason}")
            return
        topic = self.adapter.client(self.spec.client_set, self.spec.start + index).subscribe
        if topic is None:
            self._subscribed(index)
        else:
            client.subscribe(topic, qos=1)

    def _on_subscribe(
        self, client: mqtt.Client, index: int, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        if any(r.is_failure for r in reasons):
            self._fail(index, f"SUBACK refused: {reasons}")
        else:
            self._subscribed(index)

    def _on_disconnect(
        self, client: mqtt.Client, index: int, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if index in self.establishing:
            self._fail(index, f"connection closed during CONNECT/SUBSCRIBE: {reason}")
        elif not self.stopping:
            self.disconnects += 1

    def _on_message(self, client: mqtt.Client, index: int, msg: mqtt.MQTTMessage) -> None:
        now = _now()
        if not self.spec.track:
            return
        delivery = self.adapter.decode(msg.topic, msg.payload)
        if delivery is None or delivery.sent_ns > now:
            self.stale += 1
            return
        self.received += 1
        if self.first_recv_ns == 0:
            self.first_recv_ns = now
        self.last_recv_ns = now
        self.latency.record(now - delivery.sent_ns)
        if delivery.seq is not None:
            key = (index, delivery.stream)
            checker = self.seqs.get(key)
            if checker is None:
                checker = self.seqs[key] = SequenceChecker()
            checker.record(delivery.seq)
        if not self.numbers[index].record(delivery.number):
            return
        self.distinct += 1
        if self.spec.fanout:
            self._fanout(delivery.number, delivery.sent_ns, now)

    # -- bookkeeping ------------------------------------------------------------------------
    def _fail(self, index: int, error: str) -> None:
        if index in self.establishing:
            self.establishing.discard(index)
            self.failed += 1
            self.error = self.error or error
            client = self.clients.pop(index, None)
            if client is not None and client.socket() is not None:
                client.disconnect()

    def _subscribed(self, index: int) -> None:
        if index in self.establishing:
            self.establishing.discard(index)
            self.subscribed.add(index)
            self.last_ns = _now()

    def _fanout(self, number: int, sent_ns: int, now: int) -> None:
        entry = self.fan.get(number)
        if entry is None:
            if len(self.fan) >= MAX_FANOUT_PENDING:
                raise TrackingLimitExceeded(f"more than {MAX_FANOUT_PENDING} messages awaiting fan-out")
            entry = self.fan[number] = [0, sent_ns, now]
        entry[0] += 1
        entry[2] = now
        if entry[0] >= len(self.subscribed):
            del self.fan[number]
            _emit(CompleteEv(number=number, sent_ns=sent_ns, last_ns=now))

    def _start_client(self, index: int) -> None:
        spec = self.adapter.client(self.spec.client_set, self.spec.start + index)
        client = _new_client(spec, index)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.net.attach(client)
        self.numbers[index] = SequenceChecker()
        self.clients[index] = client
        self.establishing.add(index)
        try:
            client.connect(self.spec.host, self.spec.port, keepalive=self.spec.keepalive)
        except OSError as exc:
            self._fail(index, f"connect: {exc}")

    # -- phases -----------------------------------------------------------------------------
    def run(self) -> None:
        _emit(StartedEv())
        self.listen_commands()
        while not self.stdin.eof:
            command = self.next_command()
            if isinstance(command, ConnectCmd):
                break
            if isinstance(command, StopCmd):
                self._stop(command)
                return
            self.net.poll(0.2)
        else:
            return
        self._connect_all()
        next_count, last_count = 0, (-1, -1)
        while not self.stdin.eof:
            command = self.next_command()
            if isinstance(command, StopCmd):
                self._stop(command)
                return
            self.net.poll(0.1)
            now = _now()
            if now >= next_count and (self.received, self.distinct) != last_count:
                next_count, last_count = now + COUNT_INTERVAL_NS, (self.received, self.distinct)
                _emit(CountEv(received=self.received, distinct=self.distinct))

    def _connect_all(self) -> None:
        pending = deque(range(self.spec.count))
        self.first_ns = self.last_ns = _now()
        deadline = self.first_ns + int(self.spec.connect_timeout_s * 1e9)
        while (pending or self.establishing) and _now() < deadline and not self.stdin.eof:
            while pending and len(self.establishing) < self.spec.connect_window:
                self._start_client(pending.popleft())
            self.net.poll(0.02)
        for index in list(self.establishing):
            self._fail(index, f"not subscribed within {self.spec.connect_timeout_s} s")
        self.failed += len(pending)
        _emit(
            ReadyEv(
                connected=len(self.subscribed),
                failed=self.failed,
                first_ns=self.first_ns,
                last_ns=self.last_ns,
                error=self.error,
            )
        )

    def _stop(self, command: StopCmd) -> None:
        loss = LossStats()
        for index in self.subscribed if self.spec.track else ():
            loss = loss + self.numbers[index].stats(command.expect_n)
        holes = sum(checker.holes() for checker in self.seqs.values())
        loss = LossStats(**{**loss.__dict__, "holes": holes})
        _emit(
            ResultEv(
                latency=self.latency.snapshot(),
                loss=loss,
                stale=self.stale,
                first_recv_ns=self.first_recv_ns,
                last_recv_ns=self.last_recv_ns,
                disconnects=self.disconnects,
            )
        )
        self.stopping = True
        for client in self.clients.values():
            if client.socket() is not None:
                client.disconnect()


class PublisherWorker(_Worker):
    """One QoS1 publisher in open loop (fixed schedule) or closed loop (bounded window)."""

    def __init__(self, spec: PublisherSpec, stdin: _Stdin) -> None:
        super().__init__(stdin)
        self.spec = spec
        self.adapter = make_adapter(spec.adapter)
        self.client = _new_client(self.adapter.client(spec.client_set, 0), 0)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect
        self.net.attach(self.client)
        self.connack: ReasonCode | None = None
        self.lost: str | None = None
        self.inflight = 0
        self.acked = 0
        self.last_ack_ns = 0
        self.next_number = 1

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self.connack = reason

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        self.inflight -= 1
        self.acked += 1
        self.last_ack_ns = _now()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self.lost = f"disconnected: {reason}"

    def run(self) -> None:
        start = _now()
        self.client.connect(self.spec.host, self.spec.port, keepalive=self.spec.keepalive)
        deadline = start + int(self.spec.connect_timeout_s * 1e9)
        while self.connack is None and self.lost is None and _now() < deadline:
            self.net.poll(0.05)
        if self.connack is None or self.connack.is_failure:
            raise WorkerError(f"publisher could not connect: {self.connack or self.lost or 'timeout'}")
        _emit(ReadyEv(connected=1, failed=0, first_ns=start, last_ns=_now()))
        self.listen_commands()
        while not self.stdin.eof:
            command = self.next_command()
            if isinstance(command, GoCmd):
                _emit(self._go(command))
            elif isinstance(command, StopCmd):
                _emit(ResultEv())
                self.client.disconnect()
                return
            else:
                self.net.poll(0.1)

    def _publish(self, sent_ns: int) -> None:
        topic, payload = self.adapter.message(self.spec.client_set, self.next_number, sent_ns)
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise WorkerError(f"publish failed: {mqtt.error_string(info.rc)}")
        self.next_number += 1
        self.inflight += 1

    def _go(self, go: GoCmd) -> DoneEv:
        window = min(go.window, MAX_PUBLISHER_INFLIGHT)
        if go.mode == "open":
            if go.rate is None:
                raise WorkerError("open loop needs a rate")
            total = go.count if go.count is not None else max(1, round(go.rate * (go.duration_s or 1.0)))
            period_ns = 1e9 / go.rate
        else:
            if go.count is None and go.duration_s is None:
                raise WorkerError("closed loop needs a count or a duration")
            total = go.count if go.count is not None else sys.maxsize
            period_ns = 0.0
        first_number, acked_before = self.next_number, self.acked
        start_ns = _now()
        end_ns = (
            start_ns + int(go.duration_s * 1e9) if go.duration_s is not None and go.mode == "closed" else None
        )
        sent = 0
        last_sent_ns = start_ns
        issuing = True
        ack_deadline = 0
        error: str | None = None
        while True:
            now = _now()
            if issuing:
                if go.mode == "open":
                    while sent < total and self.inflight < window:
                        due = start_ns + int(sent * period_ns)
                        if due > now:
                            break
                        # Latency counts from the scheduled time, so a stalled sender is charged
                        # for the wait (no coordinated omission).
                        self._publish(due)
                        sent += 1
                        last_sent_ns = now
                else:
                    while sent < total and self.inflight < window and (end_ns is None or now < end_ns):
                        now = _now()
                        self._publish(now)
                        sent += 1
                        last_sent_ns = now
                if sent >= total or (end_ns is not None and now >= end_ns):
                    issuing = False
                    ack_deadline = _now() + int(go.ack_timeout_s * 1e9)
            if self.lost is not None:
                error = self.lost
                break
            if not issuing:
                if self.inflight <= 0:
                    break
                if _now() >= ack_deadline:
                    error = f"{self.inflight} publishes not acknowledged within {go.ack_timeout_s} s"
                    break
            timeout = 0.05
            if issuing and go.mode == "open" and self.inflight < window:
                wait = (start_ns + sent * period_ns - _now()) / 1e9
                if wait < PRECISE_WAIT_S:
                    # epoll waits in whole milliseconds: take what is there, then sleep precisely.
                    self.net.poll(0.0)
                    wait = (start_ns + sent * period_ns - _now()) / 1e9
                    if wait > 0:
                        time.sleep(wait)
                    continue
                timeout = min(timeout, wait - PRECISE_WAIT_S / 2)
            elif issuing and self.inflight < window:
                timeout = 0.0
            self.net.poll(timeout)
        return DoneEv(
            sent=sent,
            acked=self.acked - acked_before,
            first_number=first_number,
            last_number=self.next_number - 1,
            start_ns=start_ns,
            last_sent_ns=last_sent_ns,
            end_ns=self.last_ack_ns if self.acked > acked_before else last_sent_ns,
            error=error,
        )


def _exit(code: int) -> NoReturn:
    # Thousands of paho clients make interpreter teardown take seconds; the kernel closes their
    # sockets at once. Nothing else is buffered but stdout and stderr.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> NoReturn:
    """Read the spec from stdin, play the role, exit 0 (or 1 after an `error` event)."""
    stdin = _Stdin()
    try:
        spec = SPEC_ADAPTER.validate_json(stdin.read_first_line())
    except (ValidationError, BenchError) as exc:
        _emit(ErrorEv(message=f"bad spec: {exc}"))
        _exit(1)
    worker: _Worker = (
        ClientsWorker(spec, stdin) if isinstance(spec, ClientsSpec) else PublisherWorker(spec, stdin)
    )
    try:
        worker.run()
    except (BenchError, OSError) as exc:
        _emit(ErrorEv(message=f"{type(exc).__name__}: {exc}"))
        _exit(1)
    except Exception as exc:
        _emit(ErrorEv(message=f"{type(exc).__name__}: {exc} (traceback on the worker's stderr)"))
        raise
    _exit(0)


if __name__ == "__main__":
    main()
