"""`idle`: open many connections with one subscription each; connects/s, broker memory each, and
the broker's CPU while they sit idle (timers, keepalive checks: what grows with what exists)."""

from __future__ import annotations

import asyncio

from mqim.bench._adapters import crowd_user
from mqim.bench._target import Target
from mqim.bench.scenarios._base import Column, Figure, Outcome, Scenario, ScenarioContext
from mqim.bench.scenarios._phases import CrowdStats, crowd

SETTLE_S = 1.0
"""Pause between the last SUBACK and reading the broker's memory."""

IDLE_CPU_WINDOW_S = 10.0
"""How long the broker's CPU is measured while every connection sits idle."""


async def run_idle(ctx: ScenarioContext, target: Target) -> Outcome:
    """Connect `idle_size` clients to a freshly started broker and read its RSS before and after."""
    size = ctx.params.idle_size
    await target.ensure_users([crowd_user(i) for i in range(size)])
    before = target.rss_bytes()
    stats: CrowdStats
    async with crowd(ctx, target, size=size) as stats:
        await asyncio.sleep(SETTLE_S)
        after = target.rss_bytes()
        cpu_start = target.cpu_seconds()
        await asyncio.sleep(IDLE_CPU_WINDOW_S)
        cpu_end = target.cpu_seconds()
    idle_cpu: float | None = None
    if cpu_start is not None and cpu_end is not None:
        idle_cpu = (cpu_end - cpu_start) / IDLE_CPU_WINDOW_S * 100
        ctx.say(f"broker CPU while {stats.connected:,} connections sit idle: {idle_cpu:.2f}% of a core")
    per_conn: float | None = None
    if before is not None and after is not None and stats.connected:
        per_conn = (after - before) / stats.connected / 1024
        ctx.say(
            f"broker RSS {before / 2**20:,.1f} MiB -> {after / 2**20:,.1f} MiB: "
            f"{per_conn:,.1f} KiB per connection"
        )
    figures: dict[str, Figure] = {
        "connected": stats.connected,
        "connects_s": stats.connects_per_s,
        "rss_per_conn_kib": per_conn,
        "rss_mib": after / 2**20 if after is not None else None,
        "idle_cpu_pct": idle_cpu,
        "failed": stats.failed,
    }
    details = {
        **stats.to_dict(),
        "rss_before_bytes": before,
        "rss_after_bytes": after,
    }
    return Outcome(figures=figures, details=details)


IDLE = Scenario(
    name="idle",
    summary=lambda p: f"{p.idle_size:,} idle connections, one subscription each, on a fresh broker",
    columns=(
        Column(key="connected", label="connected", ratio=False),
        Column(key="connects_s", label="connects/s"),
        Column(key="rss_per_conn_kib", label="KiB/conn", digits=1),
        Column(key="rss_mib", label="RSS MiB", digits=1),
        Column(key="idle_cpu_pct", label="idle CPU %", digits=2),
        Column(key="failed", label="failed", ratio=False),
    ),
    run=run_idle,
    estimate_s=lambda p: p.idle_size / 250 + 8.0 + IDLE_CPU_WINDOW_S,
    accounts=lambda p: [crowd_user(i) for i in range(p.idle_size)],
    fresh_target=True,
)
