"""`cluster`: p2p across mqim cluster nodes (publisher on node 1, subscriber on node 3).

The scenario starts its own cluster beside the single-node target: Redis, SecantusDB (a
MongoDB-wire server used for tests and benchmarks) and three `mqim broker` nodes with embedded
logic. Alice publishes on node 1, bob receives on node 3, so every message is stored in MongoDB
by node 1's logic and crosses to node 3 through Redis. The figures are those of `p2p` (closed
loop throughput, open-loop latency, loss), the open-loop rate capped at `CLUSTER_RATE`.
"""

from __future__ import annotations

from typing import Literal

from mqim.bench._adapters import IM_RECEIVER, IM_SENDER, AdapterSpec
from mqim.bench._cluster_target import RunningCluster, open_cluster
from mqim.bench._host import LOOPBACK
from mqim.bench._target import Target
from mqim.bench.scenarios._base import BenchParams, Figure, Outcome, Scenario, ScenarioContext
from mqim.bench.scenarios._p2p import P2P_COLUMNS
from mqim.bench.scenarios._phases import PhaseResult, pair_phase

CLUSTER_NODES = 3
"""Broker nodes started; the publisher uses the first, the subscriber the last."""

CLUSTER_RATE = 200
"""Highest open-loop rate (msg/s): SecantusDB stores only a few hundred to a thousand messages a
second, and the latency figure must not include a backlog."""

CLUSTER_START_ESTIMATE_S = 25.0
"""Rough time to start Redis, SecantusDB and the nodes, and to stop them, on a busy machine."""

CLUSTER_DRAIN_S = 120.0
"""How long the subscriber may take to receive the closed loop's messages.

A PUBACK means the request is queued, not yet stored: in closed loop the publisher queues
requests many times faster than SecantusDB stores them, so the deliveries go on long after the
publishing stopped. They are all awaited, so that the open loop starts on an empty pipeline."""

CLUSTER_DRAIN_PER_S = 16.0
"""Rough drain time per second of closed loop (queued ~16x faster than delivered), for the budget."""


def cluster_rate(params: BenchParams) -> int:
    """The open-loop rate of the cluster scenario: the run's rate, at most `CLUSTER_RATE`."""
    return min(params.rate, CLUSTER_RATE)


async def cross_node_phase(
    ctx: ScenarioContext,
    cluster: RunningCluster,
    *,
    mode: Literal["open", "closed"],
    window: int,
    duration_s: float,
    rate: float | None = None,
    drain_timeout_s: float,
) -> PhaseResult:
    """One 1:1 QoS1 measurement: the subscriber on the last node, the publisher on the first.

    Raises:
        PhaseError: The subscriber could not subscribe.
        WorkerError: A generator process failed.
    """
    return await pair_phase(
        ctx,
        adapter=AdapterSpec(kind="im", run=ctx.new_run(), password=cluster.password),
        sub_at=(LOOPBACK, cluster.nodes[-1].port),
        pub_at=(LOOPBACK, cluster.nodes[0].port),
        mode=mode,
        window=window,
        duration_s=duration_s,
        rate=rate,
        drain_timeout_s=drain_timeout_s,
        label="cluster",
    )


async def run_cluster(ctx: ScenarioContext, target: Target) -> Outcome:
    """Measure p2p across cluster nodes (started and stopped here; `target` only gates it)."""
    p = ctx.params
    rate = cluster_rate(p)
    ctx.say(f"starting Redis, SecantusDB and {CLUSTER_NODES} `mqim broker` nodes")
    users = [IM_SENDER, IM_RECEIVER]
    async with open_cluster(ctx.workdir / "cluster", users=users, nodes=CLUSTER_NODES) as c:
        ports = ", ".join(f"{n.node_id} :{n.port}" for n in c.nodes)
        ctx.say(f"cluster up ({ports}); {IM_SENDER} publishes on the first, {IM_RECEIVER} reads the last")
        ctx.say(f"closed loop across nodes, window {p.window}, {p.duration_s:g} s")
        closed = await cross_node_phase(
            ctx,
            c,
            mode="closed",
            window=p.window,
            duration_s=p.duration_s,
            drain_timeout_s=max(p.drain_timeout_s, CLUSTER_DRAIN_S),
        )
        ctx.say(
            f"closed loop: {closed.sent:,} queued, {closed.delivered_per_s:,.0f} msg/s delivered "
            f"({closed.elapsed_s:.1f} s to the last delivery), "
            f"missing {closed.loss.missing}, duplicates {closed.loss.duplicates}"
        )
        ctx.say(f"open loop across nodes at {rate:,} msg/s, {p.duration_s:g} s")
        opened = await cross_node_phase(
            ctx,
            c,
            mode="open",
            window=p.window,
            duration_s=p.duration_s,
            rate=rate,
            drain_timeout_s=p.drain_timeout_s,
        )
        ctx.say("stopping the cluster")
    lat = opened.latency.summary_ms()
    ctx.say(
        f"open loop: p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms, "
        f"missing {opened.loss.missing}, duplicates {opened.loss.duplicates}"
    )
    figures: dict[str, Figure] = {
        "throughput_msg_s": closed.delivered_per_s,
        "rate_msg_s": rate,
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "p999_ms": lat["p999_ms"],
        "max_ms": lat["max_ms"],
        "missing": closed.loss.missing + opened.loss.missing,
        "duplicates": closed.loss.duplicates + opened.loss.duplicates,
        "seq_holes": closed.loss.holes + opened.loss.holes,
    }
    notes = [
        f"{CLUSTER_NODES} nodes on this machine, publisher on the first, subscriber on the last; "
        "bounded by SecantusDB (a MongoDB-wire server for tests, far slower than MongoDB), "
        f"latency at {rate:,} msg/s",
        f"closed loop: {closed.sent:,} requests queued in {p.duration_s:g} s (a PUBACK means queued), "
        f"delivered at {closed.delivered_per_s:,.0f} msg/s until the last one {closed.elapsed_s:.1f} s "
        "after the first publish",
        *closed.notes(),
        *opened.notes(),
    ]
    details = {
        "nodes": CLUSTER_NODES,
        "storage": "SecantusDB",
        "closed_loop": closed.to_dict(),
        "open_loop": opened.to_dict(),
    }
    return Outcome(figures=figures, details=details, notes=notes)


def _estimate(params: BenchParams) -> float:
    drain = min(CLUSTER_DRAIN_S, CLUSTER_DRAIN_PER_S * params.duration_s)
    return 2 * params.duration_s + 8.0 + CLUSTER_START_ESTIMATE_S + drain


CLUSTER = Scenario(
    name="cluster",
    summary=lambda p: (
        f"p2p across {CLUSTER_NODES} cluster nodes (Redis + SecantusDB): max msg/s with {p.window} "
        f"in flight ({p.duration_s:g} s); latency at {cluster_rate(p):,} msg/s ({p.duration_s:g} s)"
    ),
    columns=P2P_COLUMNS,
    run=run_cluster,
    estimate_s=_estimate,
)
