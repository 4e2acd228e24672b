"""The publisher role of a load generator: one QoS 1 publisher in open or closed loop."""

from __future__ import annotations

import sys
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from mqim.bench._adapters import make_adapter
from mqim.bench._exceptions import WorkerError
from mqim.bench._messages import DoneEv, GoCmd, PublisherSpec, ReadyEv, ResultEv, StopCmd
from mqim.bench._worker_base import MAX_PUBLISHER_INFLIGHT, Stdin, Worker, emit, new_client, now_ns

PRECISE_WAIT_S = 0.002
"""Below this wait the open-loop publisher sleeps instead of waiting in epoll (1 ms resolution)."""


class PublisherWorker(Worker):
    """One QoS1 publisher in open loop (fixed schedule) or closed loop (bounded window)."""

    def __init__(self, spec: PublisherSpec, stdin: Stdin) -> None:
        super().__init__(stdin)
        self.spec = spec
        self.adapter = make_adapter(spec.adapter)
        self.client = new_client(self.adapter.client(spec.client_set, 0), 0)
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
        self.last_ack_ns = now_ns()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self.lost = f"disconnected: {reason}"

    def run(self) -> None:
        start = now_ns()
        self.client.connect(self.spec.host, self.spec.port, keepalive=self.spec.keepalive)
        deadline = start + int(self.spec.connect_timeout_s * 1e9)
        while self.connack is None and self.lost is None and now_ns() < deadline:
            self.net.poll(0.05)
        if self.connack is None or self.connack.is_failure:
            raise WorkerError(f"publisher could not connect: {self.connack or self.lost or 'timeout'}")
        emit(ReadyEv(connected=1, failed=0, first_ns=start, last_ns=now_ns()))
        self.listen_commands()
        while not self.stdin.eof:
            command = self.next_command()
            if isinstance(command, GoCmd):
                emit(self._go(command))
            elif isinstance(command, StopCmd):
                emit(ResultEv())
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
        start_ns = now_ns()
        end_ns = (
            start_ns + int(go.duration_s * 1e9) if go.duration_s is not None and go.mode == "closed" else None
        )
        sent = 0
        last_sent_ns = start_ns
        issuing = True
        ack_deadline = 0
        error: str | None = None
        while True:
            now = now_ns()
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
                        now = now_ns()
                        self._publish(now)
                        sent += 1
                        last_sent_ns = now
                if sent >= total or (end_ns is not None and now >= end_ns):
                    issuing = False
                    ack_deadline = now_ns() + int(go.ack_timeout_s * 1e9)
            if self.lost is not None:
                error = self.lost
                break
            if not issuing:
                if self.inflight <= 0:
                    break
                if now_ns() >= ack_deadline:
                    error = f"{self.inflight} publishes not acknowledged within {go.ack_timeout_s} s"
                    break
            timeout = 0.05
            if issuing and go.mode == "open" and self.inflight < window:
                wait = (start_ns + sent * period_ns - now_ns()) / 1e9
                if wait < PRECISE_WAIT_S:
                    # epoll waits in whole milliseconds: take what is there, then sleep precisely.
                    self.net.poll(0.0)
                    wait = (start_ns + sent * period_ns - now_ns()) / 1e9
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
