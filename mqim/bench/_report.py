"""The result of a benchmark run: data (JSON) and a readable table."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mqim.bench._machine import MachineInfo
from mqim.bench.scenarios import SCENARIOS, BenchParams, Column, Figure

BASELINES = ("amqtt", "mosquitto")
"""Targets mqim is compared with in the ratio lines."""

Status = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True, kw_only=True)
class ScenarioResult:
    """One scenario on one target.

    Attributes:
        scenario: Scenario name.
        target: Target name (`mosquitto`, `amqtt`, `mqim`, `ext:host:port`).
        status: `ok`, `failed` (see `error`) or `skipped` (time budget; see `error`).
        error: Why it failed or was skipped.
        figures: The key figures (see the scenario's columns).
        details: Every other figure and the parameters used.
        notes: Caveats about the figures.
        elapsed_s: Wall time spent.
    """

    scenario: str
    target: str
    status: Status
    error: str | None = None
    figures: dict[str, Figure] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class BenchReport:
    """A whole run.

    Attributes:
        scenario: What was asked for (a scenario name or `all`).
        targets: Target names, in run order.
        params: The run's parameters.
        machine: Where it ran.
        elapsed_s: Wall time of the whole run.
        results: One per (scenario, target) pair, target by target.
    """

    scenario: str
    targets: list[str]
    params: dict[str, Any]
    machine: MachineInfo
    elapsed_s: float
    results: list[ScenarioResult]

    @property
    def ok(self) -> bool:
        """True if every scenario ran to completion on every target."""
        return all(r.status == "ok" for r in self.results)

    def result(self, scenario: str, target: str) -> ScenarioResult | None:
        """The result of `scenario` on `target`, if it was run."""
        return next((r for r in self.results if r.scenario == scenario and r.target == target), None)

    def to_dict(self) -> dict[str, Any]:
        """Every figure as JSON-ready data."""
        return asdict(self)

    def to_json(self) -> str:
        """`to_dict()` as indented JSON (non-finite numbers become null)."""
        return json.dumps(_finite(self.to_dict()), indent=2)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _cell(value: Figure, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _ratio(mine: Figure, base: Figure) -> str:
    if mine is None or base is None or base == 0:
        return "-"
    return f"{mine / base:.2f}x"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _scenario_block(report: BenchReport, name: str) -> list[str]:
    scenario = SCENARIOS[name]
    columns: tuple[Column, ...] = scenario.columns
    params = BenchParams(**{k: v for k, v in report.params.items() if k in BenchParams.__dataclass_fields__})
    lines = [f"{name}: {scenario.summary(params)}"]
    rows = [["target", *(c.label for c in columns)]]
    notes: list[str] = []
    for target in report.targets:
        result = report.result(name, target)
        if result is None:
            continue
        if result.status != "ok":
            reason = (result.error or "").strip().splitlines()
            rows.append([target, *(["-"] * len(columns))])
            notes.append(f"  {target}: {result.status.upper()}: {reason[0] if reason else ''}")
            continue
        rows.append([target, *(_cell(result.figures.get(c.key), c.digits) for c in columns)])
        notes.extend(f"  {target}: {note}" for note in result.notes)
    mine = report.result(name, "mqim")
    if mine is not None and mine.status == "ok":
        for base_name in BASELINES:
            base = report.result(name, base_name)
            if base is None or base.status != "ok":
                continue
            rows.append(
                [
                    f"mqim/{base_name}",
                    *(
                        _ratio(mine.figures.get(c.key), base.figures.get(c.key)) if c.ratio else ""
                        for c in columns
                    ),
                ]
            )
    lines.extend(_table(rows))
    lines.extend(notes)
    return lines


def format_report(report: BenchReport) -> str:
    """The run as a readable text: machine, then one table per scenario (targets x key figures),
    with mqim/amqtt and mqim/mosquitto ratios when those ran."""
    m = report.machine
    header = [
        f"mqim bench {report.scenario}: {', '.join(report.targets)}",
        f"machine: {m.nproc} CPUs ({m.cpu_model}), {m.mem_total_mib or '?'} MiB, Python {m.python}, {m.date}",
        f"took {report.elapsed_s:.0f} s; ratios are mqim's figure divided by the baseline's "
        "(throughput: higher is better; latency, memory: lower is better)",
    ]
    blocks = ["\n".join(header)]
    for name in SCENARIOS:
        if any(r.scenario == name for r in report.results):
            blocks.append("\n".join(_scenario_block(report, name)))
    return "\n\n".join(blocks) + "\n"
