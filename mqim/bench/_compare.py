"""Compare a run with an earlier one (`docs/bench/*.json`): the change of every figure.

The machine the figures come from is shared and noisy, so besides each target's own figures
(new vs old) the comparison shows how mqim's same-run ratios against the baselines moved: those
are what a performance pass is judged by.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mqim.bench._exceptions import InvalidParameter
from mqim.bench._report import BASELINES, BenchReport
from mqim.bench.scenarios import SCENARIOS

Direction = Literal["higher", "lower", "none"]
"""Which way a figure improves."""

_HIGHER_BETTER = frozenset({"throughput_msg_s", "deliveries_s", "connects_s", "connected", "members"})
_NEUTRAL = frozenset({"rate_msg_s"})
_AUTO_DIGITS = -1
"""Decimals of a figure no column describes: none for whole numbers, else two."""


def direction(key: str) -> Direction:
    """Which way figure `key` improves: rates up; latency, memory, loss and failures down."""
    if key in _NEUTRAL:
        return "none"
    if key in _HIGHER_BETTER or key.endswith("_connected"):
        return "higher"
    return "lower"


@dataclass(frozen=True, slots=True, kw_only=True)
class FigureChange:
    """One figure of one scenario in both runs.

    Attributes:
        scenario: Scenario name.
        subject: A target name, or `mqim/<baseline>` for a same-run ratio.
        key: The figure's key in `ScenarioResult.figures`.
        label: Its column heading.
        digits: Decimal places shown.
        old: The figure in the earlier run (None: absent, failed or skipped there).
        new: The figure in this run.
        direction: Which way it improves.
    """

    scenario: str
    subject: str
    key: str
    label: str
    digits: int
    old: float | None
    new: float | None
    direction: Direction

    @property
    def ratio(self) -> float | None:
        """new / old, when both are there and old is not zero."""
        if self.old is None or self.new is None or self.old == 0:
            return None
        return self.new / self.old

    @property
    def verdict(self) -> str:
        """`better`, `worse` or `same` (within 2%), or empty when it cannot be said."""
        ratio = self.ratio
        if ratio is None or self.direction == "none":
            return ""
        if abs(ratio - 1.0) <= 0.02:
            return "same"
        improved = ratio > 1.0 if self.direction == "higher" else ratio < 1.0
        return "better" if improved else "worse"


def load_report(path: Path) -> dict[str, Any]:
    """Read a report written by `mqim bench --json`.

    Raises:
        InvalidParameter: The file cannot be read or is not such a report.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidParameter(f"cannot read the report {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise InvalidParameter(f"{path} is not a `mqim bench --json` report (no results list)")
    return data


def _figures(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, float]]:
    """(scenario, target) -> numeric figures, for results that ran to completion."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for result in report["results"]:
        if not isinstance(result, dict) or result.get("status") != "ok":
            continue
        figures = result.get("figures") or {}
        numbers = {
            k: float(v) for k, v in figures.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        out[(str(result.get("scenario")), str(result.get("target")))] = numbers
    return out


def _label(scenario: str, key: str) -> tuple[str, int, bool]:
    """The column heading, decimals and whether a baseline ratio makes sense for `key`."""
    spec = SCENARIOS.get(scenario)
    for column in spec.columns if spec is not None else ():
        if column.key == key:
            return column.label, column.digits, column.ratio
    return key, _AUTO_DIGITS, False


def compare(new: dict[str, Any], old: dict[str, Any]) -> list[FigureChange]:
    """Every figure of `new` beside the same figure of `old`, then mqim's baseline ratios."""
    new_figs, old_figs = _figures(new), _figures(old)
    changes: list[FigureChange] = []
    order = [name for name in SCENARIOS if any(s == name for s, _ in new_figs)]
    for scenario in order:
        targets = [t for s, t in new_figs if s == scenario]
        for target in targets:
            mine, before = new_figs[(scenario, target)], old_figs.get((scenario, target), {})
            for key, value in mine.items():
                label, digits, _ = _label(scenario, key)
                changes.append(
                    FigureChange(
                        scenario=scenario,
                        subject=target,
                        key=key,
                        label=label,
                        digits=digits,
                        old=before.get(key),
                        new=value,
                        direction=direction(key),
                    )
                )
        for base in BASELINES:
            changes.extend(_ratio_changes(scenario, base, new_figs, old_figs))
    return changes


def _ratio_changes(
    scenario: str,
    base: str,
    new_figs: dict[tuple[str, str], dict[str, float]],
    old_figs: dict[tuple[str, str], dict[str, float]],
) -> list[FigureChange]:
    def ratio(figs: dict[tuple[str, str], dict[str, float]], key: str) -> float | None:
        mine, theirs = figs.get((scenario, "mqim"), {}).get(key), figs.get((scenario, base), {}).get(key)
        if mine is None or theirs is None or theirs == 0:
            return None
        return mine / theirs

    mqim = new_figs.get((scenario, "mqim"))
    if mqim is None or (scenario, base) not in new_figs:
        return []
    out = []
    for key in mqim:
        label, _, sensible = _label(scenario, key)
        if not sensible or direction(key) == "none":
            continue
        out.append(
            FigureChange(
                scenario=scenario,
                subject=f"mqim/{base}",
                key=key,
                label=label,
                digits=2,
                old=ratio(old_figs, key),
                new=ratio(new_figs, key),
                direction=direction(key),
            )
        )
    return out


def _cell(value: float | None, digits: int, *, ratio: bool) -> str:
    if value is None:
        return "-"
    if ratio:
        return f"{value:.2f}x"
    if digits == _AUTO_DIGITS:
        digits = 0 if value.is_integer() else 2
    return f"{value:,.{digits}f}"


def format_comparison(new: dict[str, Any], old: dict[str, Any], *, old_name: str = "old") -> str:
    """The change of every figure, scenario by scenario: old, new, new/old and a verdict."""
    machine = old.get("machine") or {}
    lines = [
        f"compared with {old_name} ({machine.get('date', '?')}, {old.get('scenario', '?')}); "
        "new/old > 1 means the figure grew (better for rates, worse for latency and memory)"
    ]
    changes = compare(new, old)
    for scenario in dict.fromkeys(c.scenario for c in changes):
        rows = [["", "figure", "old", "new", "new/old", ""]]
        for c in (c for c in changes if c.scenario == scenario):
            is_ratio = c.subject.startswith("mqim/")
            rows.append(
                [
                    c.subject,
                    c.label,
                    _cell(c.old, c.digits, ratio=is_ratio),
                    _cell(c.new, c.digits, ratio=is_ratio),
                    _cell(c.ratio, 2, ratio=True),
                    c.verdict,
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines.append("")
        lines.append(f"{scenario}:")
        for row in rows:
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
            cells += [cell.rjust(width) for cell, width in zip(row[2:5], widths[2:5], strict=True)]
            lines.append(("  ".join(cells) + "  " + row[5]).rstrip())
    return "\n".join(lines) + "\n"


def compare_with(report: BenchReport, old_path: Path) -> str:
    """`format_comparison` of this run's `report` against the report saved at `old_path`.

    Raises:
        InvalidParameter: `old_path` is not a readable report.
    """
    return format_comparison(report.to_dict(), load_report(old_path), old_name=str(old_path))
