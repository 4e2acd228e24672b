"""`p2p` and `p2p-crowd`: one publisher, one subscriber, QoS1; the latter among idle clients.

Closed loop first (max throughput: delivered msg/s with `window` publishes in flight), then open
loop (latency percentiles at a stated rate). Loss and duplicates are counted in both.
"""

from __future__ import annotations

from mqim.bench._adapters import IM_RECEIVER, IM_SENDER, crowd_user
from mqim.bench._target import Target
from mqim.bench.scenarios._base import BenchParams, Column, Figure, Outcome, Scenario, ScenarioContext
from mqim.bench.scenarios._phases import CrowdStats, PhaseResult, crowd, p2p_phase

P2P_COLUMNS = (
    Column(key="throughput_msg_s", label="max msg/s"),
    Column(key="p50_ms", label="p50 ms", digits=2),
    Column(key="p99_ms", label="p99 ms", digits=2),
    Column(key="p999_ms", label="p99.9 ms", digits=2),
    Column(key="max_ms", label="max ms", digits=2),
    Column(key="missing", label="missing", ratio=False),
    Column(key="duplicates", label="dup", ratio=False),
)


async def _measure(ctx: ScenarioContext, target: Target) -> tuple[PhaseResult, PhaseResult]:
    p = ctx.params
    ctx.say(f"closed loop, window {p.window}, {p.duration_s:g} s")
    closed = await p2p_phase(ctx, target, mode="closed", window=p.window, duration_s=p.duration_s)
    ctx.say(
        f"closed loop: {closed.delivered_per_s:,.0f} msg/s delivered, "
        f"missing {closed.loss.missing}, duplicates {closed.loss.duplicates}"
    )
    ctx.say(f"open loop at {p.rate:,} msg/s, {p.duration_s:g} s")
    opened = await p2p_phase(ctx, target, mode="open", window=p.window, duration_s=p.duration_s, rate=p.rate)
    lat = opened.latency.summary_ms()
    ctx.say(
        f"open loop: p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, p99.9 {lat['p999_ms']:.2f} ms, "
        f"max {lat['max_ms']:.2f} ms (published at {opened.publish_rate:,.0f} msg/s), "
        f"missing {opened.loss.missing}, duplicates {opened.loss.duplicates}"
    )
    return closed, opened


def _outcome(closed: PhaseResult, opened: PhaseResult, params: BenchParams) -> Outcome:
    lat = opened.latency.summary_ms()
    figures: dict[str, Figure] = {
        "throughput_msg_s": closed.delivered_per_s,
        "rate_msg_s": params.rate,
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "p999_ms": lat["p999_ms"],
        "max_ms": lat["max_ms"],
        "missing": closed.loss.missing + opened.loss.missing,
        "duplicates": closed.loss.duplicates + opened.loss.duplicates,
        "seq_holes": closed.loss.holes + opened.loss.holes,
    }
    details = {"closed_loop": closed.to_dict(), "open_loop": opened.to_dict()}
    return Outcome(figures=figures, details=details, notes=closed.notes() + opened.notes())


async def run_p2p(ctx: ScenarioContext, target: Target) -> Outcome:
    """Measure 1:1 QoS1 throughput, latency and loss."""
    await target.ensure_users([IM_SENDER, IM_RECEIVER])
    closed, opened = await _measure(ctx, target)
    return _outcome(closed, opened, ctx.params)


async def run_p2p_crowd(ctx: ScenarioContext, target: Target) -> Outcome:
    """`p2p` while `crowd_size` other clients are connected and subscribed."""
    await target.ensure_users([IM_SENDER, IM_RECEIVER, *_crowd_accounts(ctx.params)])
    stats: CrowdStats
    async with crowd(ctx, target, size=ctx.params.crowd_size) as stats:
        closed, opened = await _measure(ctx, target)
    outcome = _outcome(closed, opened, ctx.params)
    outcome.figures["crowd_connected"] = stats.connected
    outcome.details["crowd"] = stats.to_dict()
    return outcome


async def run_standalone(ctx: ScenarioContext, target: Target) -> Outcome:
    """`p2p` with the IM logic in a separate `mqim logic` process (the MQTT-client bus)."""
    await target.ensure_users([IM_SENDER, IM_RECEIVER])
    workers = ctx.params.logic_workers
    what = "one `mqim logic` process" if workers == 1 else f"{workers} `mqim logic --shared` processes"
    ctx.say(f"restarting without embedded logic; starting {what}")
    async with target.standalone_logic(ctx.workdir, workers=workers):
        closed, opened = await _measure(ctx, target)
    return _outcome(closed, opened, ctx.params)


def _crowd_accounts(params: BenchParams) -> list[str]:
    return [crowd_user(i) for i in range(params.crowd_size)]


def _p2p_estimate(params: BenchParams) -> float:
    return 2 * params.duration_s + 8.0


P2P = Scenario(
    name="p2p",
    summary=lambda p: (
        f"1:1 QoS1: max msg/s with {p.window} in flight ({p.duration_s:g} s); "
        f"latency at {p.rate:,} msg/s ({p.duration_s:g} s)"
    ),
    columns=P2P_COLUMNS,
    run=run_p2p,
    estimate_s=_p2p_estimate,
    accounts=lambda p: [IM_SENDER, IM_RECEIVER],
)

P2P_CROWD = Scenario(
    name="p2p-crowd",
    summary=lambda p: f"p2p with {p.crowd_size:,} other idle clients connected and subscribed",
    columns=(*P2P_COLUMNS, Column(key="crowd_connected", label="crowd", ratio=False)),
    run=run_p2p_crowd,
    # Connecting the crowd is budgeted at a pessimistic 250 connections/s.
    estimate_s=lambda p: _p2p_estimate(p) + p.crowd_size / 250 + 5.0,
    accounts=lambda p: [IM_SENDER, IM_RECEIVER, *_crowd_accounts(p)],
)

STANDALONE = Scenario(
    name="standalone",
    summary=lambda p: (
        f"p2p with the logic as a separate `mqim logic` process: max msg/s with {p.window} in flight "
        f"({p.duration_s:g} s); latency at {p.rate:,} msg/s ({p.duration_s:g} s)"
    ),
    columns=P2P_COLUMNS,
    run=run_standalone,
    # Two broker restarts and a logic process start around the p2p phases.
    estimate_s=lambda p: _p2p_estimate(p) + 15.0,
    accounts=lambda p: [IM_SENDER, IM_RECEIVER],
)
