"""The clients role of a load generator: many subscribers recording latency, loss and fan-out."""

from __future__ import annotations

from collections import deque
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from mqim.bench._adapters import Adapter, make_adapter
from mqim.bench._exceptions import TrackingLimitExceeded
from mqim.bench._histogram import Histogram
from mqim.bench._loss import LossStats, SequenceChecker
from mqim.bench._messages import (
    ClientsSpec,
    CompleteEv,
    ConnectCmd,
    CountEv,
    ReadyEv,
    ResultEv,
    StartedEv,
    StopCmd,
)
from mqim.bench._worker_base import Stdin, Worker, emit, new_client, now_ns

MAX_FANOUT_PENDING = 100_000
"""Messages a fan-out worker tracks while waiting for every client to receive them."""

COUNT_INTERVAL_NS = 200_000_000
"""How often a clients worker reports its delivery count while it changes."""


class ClientsWorker(Worker):
    """Many subscribing clients; records latency, loss and fan-out of bench messages."""

    def __init__(self, spec: ClientsSpec, stdin: Stdin) -> None:
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
        now = now_ns()
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
            self.last_ns = now_ns()

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
            emit(CompleteEv(number=number, sent_ns=sent_ns, last_ns=now))

    def _start_client(self, index: int) -> None:
        spec = self.adapter.client(self.spec.client_set, self.spec.start + index)
        client = new_client(spec, index)
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
        emit(StartedEv())
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
            now = now_ns()
            if now >= next_count and (self.received, self.distinct) != last_count:
                next_count, last_count = now + COUNT_INTERVAL_NS, (self.received, self.distinct)
                emit(CountEv(received=self.received, distinct=self.distinct))

    def _connect_all(self) -> None:
        pending = deque(range(self.spec.count))
        self.first_ns = self.last_ns = now_ns()
        deadline = self.first_ns + int(self.spec.connect_timeout_s * 1e9)
        while (pending or self.establishing) and now_ns() < deadline and not self.stdin.eof:
            while pending and len(self.establishing) < self.spec.connect_window:
                self._start_client(pending.popleft())
            self.net.poll(0.02)
        for index in list(self.establishing):
            self._fail(index, f"not subscribed within {self.spec.connect_timeout_s} s")
        self.failed += len(pending)
        emit(
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
        emit(
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
