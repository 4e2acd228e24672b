"""`group`: one message fanned out to `group_size` subscribers of one topic.

First `group_reps` single messages, each waited for until the last member has it (fan-out time);
then `group_burst` messages back to back (deliveries/s). Delivery latency and loss per member
are recorded throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics

from mqim.bench._adapters import IM_GROUP, IM_SENDER, member_user
from mqim.bench._exceptions import PhaseError, WorkerTimeout
from mqim.bench._histogram import Histogram
from mqim.bench._loss import LossStats
from mqim.bench._messages import (
    ClientsSpec,
    CompleteEv,
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
from mqim.bench.scenarios._base import Column, Figure, Outcome, Scenario, ScenarioContext
from mqim.bench.scenarios._phases import ACK_TIMEOUT_S, READY_TIMEOUT_S, SPAWN_TIMEOUT_S

MEMBERS_PER_WORKER = 500
"""Group members one generator process holds (fewer than a crowd: they all receive)."""

FANOUT_TIMEOUT_S = 15.0
"""How long the harness waits for the last member to receive a message (or a burst)."""


async def _completions(
    workers: list[WorkerProcess], numbers: set[int], timeout_s: float
) -> dict[int, list[CompleteEv]]:
    """Collect `complete` events for `numbers` from every worker until all came or time is up."""
    got: dict[int, list[CompleteEv]] = {n: [] for n in numbers}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    for worker in workers:
        wanted = set(numbers)
        while wanted:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return got
            try:
                event = await worker.expect(CompleteEv, remaining)
            except WorkerTimeout:
                return got
            if event.number in wanted:
                wanted.discard(event.number)
                got[event.number].append(event)
    return got


async def run_group(ctx: ScenarioContext, target: Target) -> Outcome:
    """Measure fan-out time and deliveries/s to a group of subscribers."""
    p = ctx.params
    members = [member_user(i) for i in range(p.group_size)]
    await target.ensure_users([IM_SENDER, *members])
    await target.ensure_group(IM_GROUP, owner=IM_SENDER, members=members)
    adapter = target.adapter_spec(ctx.new_run())
    n_workers = math.ceil(p.group_size / MEMBERS_PER_WORKER)
    async with contextlib.AsyncExitStack() as stack:
        workers: list[WorkerProcess] = []
        for i in range(n_workers):
            spec = ClientsSpec(
                host=target.host,
                port=target.port,
                adapter=adapter,
                client_set="member",
                start=i * MEMBERS_PER_WORKER,
                count=min(MEMBERS_PER_WORKER, p.group_size - i * MEMBERS_PER_WORKER),
                track=True,
                fanout=True,
                connect_timeout_s=p.connect_timeout_s,
            )
            workers.append(await stack.enter_async_context(ctx.worker(spec, f"member-{i}")))
        for worker in workers:
            await worker.expect(StartedEv, SPAWN_TIMEOUT_S)
        for worker in workers:
            await worker.send(ConnectCmd())
        readies = [await worker.expect(ReadyEv, p.connect_timeout_s + 30.0) for worker in workers]
        connected = sum(r.connected for r in readies)
        ctx.say(f"{connected:,} of {p.group_size:,} members subscribed")
        if connected == 0:
            raise PhaseError(f"no group member could subscribe: {readies[0].error}")
        pub_spec = PublisherSpec(host=target.host, port=target.port, adapter=adapter, client_set="group-pub")
        pub = await stack.enter_async_context(ctx.worker(pub_spec, "group-pub"))
        await pub.expect(ReadyEv, SPAWN_TIMEOUT_S + READY_TIMEOUT_S)

        fanout_ms: list[float] = []
        incomplete = 0
        for _ in range(p.group_reps):
            await pub.send(GoCmd(mode="closed", window=1, count=1, ack_timeout_s=ACK_TIMEOUT_S))
            done = await pub.expect(DoneEv, ACK_TIMEOUT_S + 30.0)
            got = await _completions(workers, {done.first_number}, FANOUT_TIMEOUT_S)
            events = got[done.first_number]
            if len(events) == len(workers):
                fanout_ms.append((max(e.last_ns for e in events) - events[0].sent_ns) / 1e6)
            else:
                incomplete += 1
        burst_numbers: set[int] = set()
        deliveries_s: float | None = None
        if p.group_burst > 0:
            await pub.send(
                GoCmd(
                    mode="closed",
                    window=min(p.window, p.group_burst),
                    count=p.group_burst,
                    ack_timeout_s=ACK_TIMEOUT_S,
                )
            )
            burst = await pub.expect(DoneEv, ACK_TIMEOUT_S + 60.0)
            burst_numbers = set(range(burst.first_number, burst.last_number + 1))
            got = await _completions(workers, burst_numbers, FANOUT_TIMEOUT_S + p.group_burst)
            complete = [events for events in got.values() if len(events) == len(workers)]
            incomplete += len(burst_numbers) - len(complete)
            if complete:
                last_ns = max(e.last_ns for events in complete for e in events)
                deliveries_s = connected * len(complete) / (max(last_ns - burst.start_ns, 1) / 1e9)
        total = p.group_reps + len(burst_numbers)
        await pub.send(StopCmd())
        await pub.expect(ResultEv, 10.0)

        latency, loss = Histogram(), LossStats()
        for worker in workers:
            await worker.send(StopCmd(expect_n=total))
        for worker in workers:
            result = await worker.expect(ResultEv, 30.0)
            latency.merge(result.latency)
            loss = loss + result.loss

    lat = latency.summary_ms()
    fan_median = statistics.median(fanout_ms) if fanout_ms else None
    ctx.say(
        f"fan-out to {connected:,}: last member after {fan_median or float('nan'):.1f} ms (median of "
        f"{len(fanout_ms)}), burst {deliveries_s or 0:,.0f} deliveries/s, missing {loss.missing}, "
        f"duplicates {loss.duplicates}"
    )
    figures: dict[str, Figure] = {
        "members": connected,
        "fanout_ms": fan_median,
        "fanout_max_ms": max(fanout_ms) if fanout_ms else None,
        "deliveries_s": deliveries_s,
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "missing": loss.missing,
        "duplicates": loss.duplicates,
    }
    details = {
        "members_subscribed": connected,
        "member_connect_failures": sum(r.failed for r in readies),
        "fanout_ms": fanout_ms,
        "incomplete_messages": incomplete,
        "messages": total,
        "latency": lat,
        "loss": loss.__dict__,
    }
    notes = []
    if incomplete:
        notes.append(
            f"{incomplete} of {total} messages did not reach every member within {FANOUT_TIMEOUT_S:g} s"
        )
    return Outcome(figures=figures, details=details, notes=notes)


GROUP = Scenario(
    name="group",
    summary=lambda p: (
        f"fan-out to {p.group_size:,} subscribers: {p.group_reps} single messages "
        f"(time until the last member has it), then a burst of {p.group_burst}"
    ),
    columns=(
        Column(key="members", label="members", ratio=False),
        Column(key="fanout_ms", label="fan-out ms", digits=1),
        Column(key="fanout_max_ms", label="max ms", digits=1),
        Column(key="deliveries_s", label="deliveries/s"),
        Column(key="p50_ms", label="p50 ms", digits=1),
        Column(key="p99_ms", label="p99 ms", digits=1),
        Column(key="missing", label="missing", ratio=False),
        Column(key="duplicates", label="dup", ratio=False),
    ),
    run=run_group,
    estimate_s=lambda p: p.group_size / 250 + p.group_reps * 1.0 + p.group_burst * 0.5 + 10.0,
    accounts=lambda p: [IM_SENDER, *(member_user(i) for i in range(p.group_size))],
)
