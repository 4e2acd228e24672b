"""Building blocks shared by the scenarios: one p2p measurement phase, and a crowd of clients."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from mqim.bench._adapters import AdapterSpec
from mqim.bench._exceptions import PhaseError
from mqim.bench._histogram import Histogram
from mqim.bench._loss import LossStats
from mqim.bench._messages import (
    ClientsSpec,
    ConnectCmd,
    DoneEv,
    GoCmd,
    PublisherSpec,
    ReadyEv,
    ResultEv,
    StartedEv,
    StopCmd,
)
from mqim.bench._procs import WorkerProcess
from mqim.bench._target import Target
from mqim.bench.scenarios._base import ScenarioContext

SPAWN_TIMEOUT_S = 30.0
"""How long a generator process may take to start (interpreter and imports) on a busy machine."""

READY_TIMEOUT_S = 40.0
"""How long a single client may take to connect and subscribe."""

ACK_TIMEOUT_S = 10.0
"""How long a publisher waits for its last PUBACKs after it stopped publishing."""

DRAIN_IDLE_S = 3.0
"""Draining ends early when deliveries stop progressing for this long."""


@dataclass(frozen=True, kw_only=True)
class PhaseResult:
    """One publisher -> broker -> subscriber measurement.

    Attributes:
        mode: `closed` (max throughput, `window` in flight) or `open` (fixed `rate`).
        sent: Messages published; acked: PUBACKs received.
        loss: Deliveries checked against the numbers 1..sent.
        stale: Received publishes that were not this run's bench messages.
        latency: Publish (scheduled, in open loop) to delivery, in ns.
        delivered_per_s: Distinct deliveries / (first publish -> last delivery).
        publish_rate: Achieved publish rate (first to last publish).
        elapsed_s: First publish to last delivery (or last ack).
        error: What went wrong on the publisher side, if anything.
        drain: How waiting for the last deliveries ended (see `drain`).
    """

    mode: Literal["open", "closed"]
    rate: float | None
    window: int
    sent: int
    acked: int
    loss: LossStats
    stale: int
    latency: Histogram
    delivered_per_s: float
    publish_rate: float
    elapsed_s: float
    error: str | None
    drain: DrainEnd

    def notes(self) -> list[str]:
        """Caveats a reader of the figures must know."""
        notes = []
        if self.drain == "timeout" and self.loss.missing:
            notes.append(
                f"{self.mode} loop: {self.loss.missing:,} messages were still arriving when the drain window "
                "ended; they count as missing (overload, not necessarily loss)"
            )
        if self.mode == "open" and self.rate and self.publish_rate < 0.95 * self.rate:
            notes.append(
                f"open loop: the publisher managed only {self.publish_rate:,.0f} of {self.rate:,.0f} msg/s "
                f"({self.window} unacknowledged publishes in flight); latency counts from the schedule"
            )
        if self.error:
            notes.append(f"{self.mode} loop publisher: {self.error}")
        return notes

    def to_dict(self) -> dict[str, Any]:
        """Every figure, as JSON-ready data."""
        return {
            "mode": self.mode,
            "rate": self.rate,
            "window": self.window,
            "sent": self.sent,
            "acked": self.acked,
            "loss": self.loss.__dict__,
            "stale": self.stale,
            "latency": self.latency.summary_ms(),
            "delivered_per_s": self.delivered_per_s,
            "publish_rate": self.publish_rate,
            "elapsed_s": self.elapsed_s,
            "error": self.error,
            "drain": self.drain,
        }


DrainEnd = Literal["complete", "stalled", "timeout"]


async def drain(worker: WorkerProcess, *, expected: int, timeout_s: float) -> DrainEnd:
    """Wait until `worker` counted `expected` distinct deliveries (`complete`), deliveries stop
    for `DRAIN_IDLE_S` (`stalled`: the rest is lost), or `timeout_s` passes while they still
    arrive (`timeout`: the rest is late, perhaps not lost)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last, last_change = -1, loop.time()
    while loop.time() < deadline:
        now_count = worker.latest_count.distinct
        if now_count >= expected:
            return "complete"
        if now_count != last:
            last, last_change = now_count, loop.time()
        elif loop.time() - last_change > DRAIN_IDLE_S:
            return "stalled"
        await asyncio.sleep(0.05)
    return "timeout"


async def p2p_phase(
    ctx: ScenarioContext,
    target: Target,
    *,
    mode: Literal["open", "closed"],
    window: int,
    duration_s: float,
    rate: float | None = None,
) -> PhaseResult:
    """One 1:1 QoS1 measurement with a fresh subscriber and publisher process.

    Raises:
        PhaseError: The subscriber could not subscribe.
        WorkerError: A generator process failed.
    """
    return await pair_phase(
        ctx,
        adapter=target.adapter_spec(ctx.new_run()),
        sub_at=(target.host, target.port),
        pub_at=(target.host, target.port),
        mode=mode,
        window=window,
        duration_s=duration_s,
        rate=rate,
        drain_timeout_s=ctx.params.drain_timeout_s,
        label="p2p",
    )


async def pair_phase(
    ctx: ScenarioContext,
    *,
    adapter: AdapterSpec,
    sub_at: tuple[str, int],
    pub_at: tuple[str, int],
    mode: Literal["open", "closed"],
    window: int,
    duration_s: float,
    rate: float | None,
    drain_timeout_s: float,
    label: str,
) -> PhaseResult:
    """One subscriber process at `sub_at` and one publisher process at `pub_at` (host, port).

    Raises:
        PhaseError: The subscriber could not subscribe.
        WorkerError: A generator process failed.
    """
    sub_spec = ClientsSpec(host=sub_at[0], port=sub_at[1], adapter=adapter, client_set="p2p-sub", track=True)
    pub_spec = PublisherSpec(host=pub_at[0], port=pub_at[1], adapter=adapter, client_set="p2p-pub")
    async with ctx.worker(sub_spec, f"{label}-sub") as sub:
        await sub.expect(StartedEv, SPAWN_TIMEOUT_S)
        await sub.send(ConnectCmd())
        ready = await sub.expect(ReadyEv, READY_TIMEOUT_S)
        if ready.connected != 1:
            raise PhaseError(f"the {label} subscriber could not subscribe: {ready.error}")
        async with ctx.worker(pub_spec, f"{label}-pub") as pub:
            await pub.expect(ReadyEv, SPAWN_TIMEOUT_S + READY_TIMEOUT_S)
            await pub.send(
                GoCmd(mode=mode, window=window, rate=rate, duration_s=duration_s, ack_timeout_s=ACK_TIMEOUT_S)
            )
            done = await pub.expect(DoneEv, duration_s + ACK_TIMEOUT_S + 30.0)
            await pub.send(StopCmd())
            await pub.expect(ResultEv, 10.0)
        drained = await drain(sub, expected=done.sent, timeout_s=drain_timeout_s)
        await sub.send(StopCmd(expect_n=done.last_number))
        result = await sub.expect(ResultEv, 30.0)
    return _phase_result(mode, rate, window, done, result, drained)


def _phase_result(
    mode: Literal["open", "closed"],
    rate: float | None,
    window: int,
    done: DoneEv,
    result: ResultEv,
    drained: DrainEnd,
) -> PhaseResult:
    end_ns = max(result.last_recv_ns, done.end_ns)
    elapsed_s = max(end_ns - done.start_ns, 1) / 1e9
    publish_s = max(done.last_sent_ns - done.start_ns, 1) / 1e9
    return PhaseResult(
        mode=mode,
        rate=rate,
        window=window,
        sent=done.sent,
        acked=done.acked,
        loss=result.loss,
        stale=result.stale,
        latency=Histogram.from_snapshot(result.latency),
        delivered_per_s=result.loss.distinct / elapsed_s,
        publish_rate=(done.sent - 1) / publish_s if done.sent > 1 else 0.0,
        elapsed_s=elapsed_s,
        error=done.error,
        drain=drained,
    )


@dataclass(frozen=True, kw_only=True)
class CrowdStats:
    """How a crowd of clients connected (timestamps are monotonic ns)."""

    size: int
    connected: int
    failed: int
    first_ns: int
    last_ns: int
    error: str | None

    @property
    def connect_s(self) -> float:
        """First connect attempt to last SUBACK, across all generator processes."""
        return max(self.last_ns - self.first_ns, 1) / 1e9

    @property
    def connects_per_s(self) -> float:
        """Clients connected and subscribed per second."""
        return self.connected / self.connect_s

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data."""
        return {
            "size": self.size,
            "connected": self.connected,
            "failed": self.failed,
            "connect_s": self.connect_s,
            "connects_per_s": self.connects_per_s,
            "error": self.error,
        }


@contextlib.asynccontextmanager
async def crowd(ctx: ScenarioContext, target: Target, *, size: int) -> AsyncIterator[CrowdStats]:
    """Connect `size` idle clients, each subscribed to its own topic, spread over processes.

    They stay connected until the `async with` ends.
    """
    if size == 0:
        now = time.monotonic_ns()
        yield CrowdStats(size=0, connected=0, failed=0, first_ns=now, last_ns=now, error=None)
        return
    adapter = target.adapter_spec(ctx.new_run())
    per_worker = max(1, ctx.params.clients_per_worker)
    n_workers = math.ceil(size / per_worker)
    timeout_s = ctx.params.connect_timeout_s
    async with contextlib.AsyncExitStack() as stack:
        workers: list[WorkerProcess] = []
        for i in range(n_workers):
            spec = ClientsSpec(
                host=target.host,
                port=target.port,
                adapter=adapter,
                client_set="crowd",
                start=i * per_worker,
                count=min(per_worker, size - i * per_worker),
                connect_timeout_s=timeout_s,
            )
            workers.append(await stack.enter_async_context(ctx.worker(spec, f"crowd-{i}")))
        for worker in workers:
            await worker.expect(StartedEv, SPAWN_TIMEOUT_S)
        ctx.say(f"connecting {size:,} idle clients from {n_workers} processes")
        for worker in workers:
            await worker.send(ConnectCmd())
        readies = [await worker.expect(ReadyEv, timeout_s + 30.0) for worker in workers]
        stats = CrowdStats(
            size=size,
            connected=sum(r.connected for r in readies),
            failed=sum(r.failed for r in readies),
            first_ns=min(r.first_ns for r in readies),
            last_ns=max(r.last_ns for r in readies),
            error=next((r.error for r in readies if r.error), None),
        )
        failed = f", {stats.failed:,} failed ({stats.error})" if stats.failed else ""
        ctx.say(
            f"{stats.connected:,} clients connected in {stats.connect_s:.1f} s "
            f"({stats.connects_per_s:,.0f}/s){failed}"
        )
        yield stats
