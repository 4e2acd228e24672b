"""Run scenarios against targets, target by target, within a time budget."""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from mqim.bench._exceptions import BenchError, InvalidParameter, TargetError, UnknownScenario
from mqim.bench._machine import machine_info
from mqim.bench._report import BenchReport, ScenarioResult
from mqim.bench._target import Target
from mqim.bench._targets import make_target
from mqim.bench.scenarios import SCENARIOS, BenchParams, Scenario, ScenarioContext

ALL = "all"
"""The pseudo-scenario that runs every scenario (but those in `NOT_IN_ALL`)."""

NOT_IN_ALL = ("cluster",)
"""Scenarios `all` leaves out: they need more than the brokers (Redis, SecantusDB)."""

DEFAULT_BUDGET_S = 570.0
"""Time budget of `all` when none is given: the whole run ends within 10 minutes."""

DEFAULT_RATE = 1000
"""Open-loop rate (msg/s) when none is given."""

MAX_LOGIC_WORKERS = 8
"""Most `mqim logic` processes the standalone scenario starts."""

SCENARIO_TIMEOUT_FACTOR = 3.0
"""A scenario is cut off after this many times its estimate (plus `SCENARIO_TIMEOUT_SLACK_S`)."""

SCENARIO_TIMEOUT_SLACK_S = 60.0

RUN_ORDER = {"mosquitto": 0, "amqtt": 2, "mqim": 3}
"""Targets run in this order (others, i.e. external brokers, at 1); see `_run`."""


def _ignore(line: str) -> None:
    return None


def scenario_names(scenario: str) -> list[str]:
    """The scenarios `scenario` stands for (`all`: every one but `NOT_IN_ALL`; `a,b`: both).

    Raises:
        UnknownScenario: `scenario` is not registered.
    """
    if scenario == ALL:
        return [name for name in SCENARIOS if name not in NOT_IN_ALL]
    names = list(dict.fromkeys(part.strip() for part in scenario.split(",")))
    for name in names:
        if name not in SCENARIOS:
            raise UnknownScenario(f"unknown scenario {name!r}: use one of {', '.join([*SCENARIOS, ALL])}")
    return names


def run(
    scenario: str,
    *,
    targets: Sequence[str],
    json_path: Path | None = None,
    duration_s: float = 5.0,
    rate: int | None = None,
    progress: Callable[[str], None] = _ignore,
    crowd_size: int = 10_000,
    group_size: int = 1_000,
    idle_size: int = 10_000,
    budget_s: float | None = None,
    logic_workers: int = 1,
) -> BenchReport:
    """Run `scenario` (or `all`) against each of `targets` and return the report.

    Blocking: runs its own event loop (call it from synchronous code, e.g. a CLI command).

    Args:
        scenario: A scenario name (`p2p`, `p2p-crowd`, `group`, `idle`, `standalone`, `cluster`),
            several joined by commas (`p2p,cluster`), or `all`.
        targets: `mosquitto`, `amqtt`, `mqim`, or `mqtt://[user[:password]@]host[:port]` URLs.
        json_path: Where to write the report as JSON, if anywhere.
        duration_s: Length of each measurement phase.
        rate: Open-loop publish rate in msg/s (default 1000).
        progress: Receives progress lines while the run goes on.
        crowd_size: Idle clients in `p2p-crowd`.
        group_size: Subscribers in `group`.
        idle_size: Connections in `idle`.
        budget_s: Total time budget; scenarios that would not fit are skipped. Defaults to
            9.5 minutes for `all`, none for a single scenario.
        logic_workers: `mqim logic` processes in `standalone` (more than one share the
            uplinks as `mqim logic --shared` workers).

    Raises:
        UnknownScenario: `scenario` is not registered.
        UnknownTarget: A target is neither a known name nor an mqtt:// URL.
        InvalidParameter: A parameter is out of range.
    """
    names = scenario_names(scenario)
    if not targets:
        raise InvalidParameter("no targets given")
    if duration_s <= 0 or (rate is not None and rate <= 0):
        raise InvalidParameter("the duration and the rate must be positive")
    if crowd_size < 0 or min(group_size, idle_size) < 1:
        raise InvalidParameter("the group and idle sizes must be at least 1, the crowd size at least 0")
    if not 1 <= logic_workers <= MAX_LOGIC_WORKERS:
        raise InvalidParameter(f"logic workers must be between 1 and {MAX_LOGIC_WORKERS}")
    if budget_s is not None and budget_s <= 0:
        raise InvalidParameter("the time budget must be positive")
    made = [make_target(t) for t in targets]
    params = BenchParams(
        duration_s=duration_s,
        rate=rate if rate is not None else DEFAULT_RATE,
        crowd_size=crowd_size,
        group_size=group_size,
        idle_size=idle_size,
        logic_workers=logic_workers,
    )
    if budget_s is None and scenario == ALL:
        budget_s = DEFAULT_BUDGET_S
    report = asyncio.run(_run(scenario, names, made, params, progress, budget_s))
    if json_path is not None:
        json_path.write_text(report.to_json())
    return report


async def _run(
    scenario: str,
    names: list[str],
    targets: list[Target],
    params: BenchParams,
    progress: Callable[[str], None],
    budget_s: float | None,
) -> BenchReport:
    machine = machine_info()
    started = time.monotonic()
    # Cheapest first: each target gets an equal share of the budget that is left, so what the
    # quick ones leave over goes to the slow ones (mqim last).
    order = sorted(targets, key=lambda t: RUN_ORDER.get(t.name, 1))
    by_target: dict[int, list[ScenarioResult]] = {}
    with tempfile.TemporaryDirectory(prefix="mqim-bench-") as tmp:
        for i, target in enumerate(order):
            deadline: float | None = None
            if budget_s is not None:
                left = budget_s - (time.monotonic() - started)
                deadline = time.monotonic() + left / (len(order) - i)
            workdir = Path(tmp) / re.sub(r"[^A-Za-z0-9_.-]", "_", target.name)
            workdir.mkdir(parents=True, exist_ok=True)
            by_target[id(target)] = await _run_target(target, names, params, workdir, progress, deadline)
    # Reported in the order asked for.
    results = [r for target in targets for r in by_target[id(target)]]
    _compare_cluster(results)
    return BenchReport(
        scenario=scenario,
        targets=[t.name for t in targets],
        params=asdict(params),
        machine=machine,
        elapsed_s=time.monotonic() - started,
        results=results,
    )


async def _run_target(
    target: Target,
    names: list[str],
    params: BenchParams,
    workdir: Path,
    progress: Callable[[str], None],
    deadline: float | None,
) -> list[ScenarioResult]:
    results: list[ScenarioResult] = []
    progress(f"[{target.name}] starting")
    try:
        await target.start(workdir)
    except TargetError as exc:
        progress(f"[{target.name}] FAILED to start: {exc}")
        return [
            ScenarioResult(scenario=n, target=target.name, status="failed", error=str(exc)) for n in names
        ]
    progress(f"[{target.name}] started: {target.describe()}")
    ctx = ScenarioContext(params=params, workdir=workdir, progress=progress, target_name=target.name)
    try:
        for i, name in enumerate(names):
            scenario = SCENARIOS[name]
            reason = target.unsupported(name)
            if reason is not None:
                progress(f"[{target.name}] {name}: skipped ({reason})")
                results.append(
                    ScenarioResult(scenario=name, target=target.name, status="skipped", error=reason)
                )
                continue
            provisioning = target.provisioning_estimate_s(len(scenario.accounts(params)))
            estimate = scenario.estimate_s(params) + provisioning
            if deadline is not None and time.monotonic() + estimate > deadline:
                left = max(0.0, deadline - time.monotonic())
                why = f"time budget: needs ~{estimate:.0f} s, {left:.0f} s left for this target"
                if provisioning > estimate / 2:
                    why += f" (~{provisioning:.0f} s of it to create its accounts)"
                progress(f"[{target.name}] {name}: skipped ({why})")
                results.append(ScenarioResult(scenario=name, target=target.name, status="skipped", error=why))
                continue
            timeout = estimate * SCENARIO_TIMEOUT_FACTOR + SCENARIO_TIMEOUT_SLACK_S
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
            results.append(await _run_scenario(ctx, scenario, target, workdir, timeout, restart=i > 0))
    finally:
        await target.stop()
        progress(f"[{target.name}] stopped")
    return results


async def _run_scenario(
    ctx: ScenarioContext, scenario: Scenario, target: Target, workdir: Path, limit_s: float, *, restart: bool
) -> ScenarioResult:
    name = scenario.name
    ctx.say(f"{name}: {scenario.summary(ctx.params)}")
    started = time.monotonic()
    try:
        async with asyncio.timeout(limit_s):
            if scenario.fresh_target and restart and target.restartable:
                ctx.say("restarting the broker (this scenario measures its memory)")
                await target.restart(workdir)
            outcome = await scenario.run(ctx, target)
    except (BenchError, OSError, TimeoutError) as exc:
        error = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            error = (
                f"did not finish within {limit_s:.0f} s (its share of the time budget, or 3x its estimate)"
            )
        ctx.say(f"{name}: FAILED: {error}")
        return ScenarioResult(
            scenario=name,
            target=target.name,
            status="failed",
            error=error,
            elapsed_s=time.monotonic() - started,
        )
    return ScenarioResult(
        scenario=name,
        target=target.name,
        status="ok",
        figures=outcome.figures,
        details=outcome.details,
        notes=outcome.notes,
        elapsed_s=time.monotonic() - started,
    )


def _compare_cluster(results: list[ScenarioResult]) -> None:
    """Note the cross-node figures beside the single-node `p2p` ones where both ran."""
    ok = {(r.scenario, r.target): r for r in results if r.status == "ok"}
    for (name, target), cluster in ok.items():
        single = ok.get(("p2p", target))
        if name != "cluster" or single is None:
            continue
        across, alone = cluster.figures.get("throughput_msg_s"), single.figures.get("throughput_msg_s")
        if not isinstance(across, int | float) or not isinstance(alone, int | float) or alone <= 0:
            continue
        p50_across, p50_alone = cluster.figures.get("p50_ms"), single.figures.get("p50_ms")
        latency = ""
        if isinstance(p50_across, int | float) and isinstance(p50_alone, int | float):
            latency = (
                f"; p50 {p50_across:.2f} ms at {cluster.figures.get('rate_msg_s')} msg/s vs "
                f"{p50_alone:.2f} ms at {single.figures.get('rate_msg_s')} msg/s"
            )
        cluster.notes.append(
            f"vs single-node p2p: {across:,.0f} msg/s across nodes vs {alone:,.0f} msg/s on one node "
            f"(x{across / alone:.2f}){latency}"
        )
