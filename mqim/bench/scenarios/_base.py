"""What a scenario is, what it gets to work with, and what it returns."""

from __future__ import annotations

import contextlib
import itertools
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqim.bench._messages import ClientsSpec, PublisherSpec
from mqim.bench._procs import WorkerProcess, open_worker
from mqim.bench._target import Target

Figure = float | int | None


@dataclass(frozen=True, kw_only=True)
class BenchParams:
    """Knobs of a benchmark run (all scenarios read what concerns them).

    Attributes:
        duration_s: Length of each measurement phase (closed loop, open loop).
        rate: Open-loop publish rate in msg/s.
        window: Closed-loop QoS1 publishes in flight.
        crowd_size: Idle clients connected during `p2p-crowd`.
        group_size: Subscribers of the `group` topic.
        group_reps: Single messages sent to the group, one after the other.
        group_burst: Messages sent back to back to the group (deliveries/s).
        idle_size: Connections opened by `idle`.
        clients_per_worker: Clients one generator process holds (crowd, idle, group).
        connect_timeout_s: How long a crowd may take to connect.
        drain_timeout_s: How long subscribers may take to receive what was published.
        logic_workers: `mqim logic` processes in `standalone` (more than one: `--shared`).
    """

    duration_s: float = 5.0
    rate: int = 1000
    window: int = 100
    crowd_size: int = 10_000
    group_size: int = 1_000
    group_reps: int = 5
    group_burst: int = 20
    idle_size: int = 10_000
    clients_per_worker: int = 2_500
    connect_timeout_s: float = 180.0
    drain_timeout_s: float = 20.0
    logic_workers: int = 1


@dataclass(frozen=True, kw_only=True)
class Column:
    """A key figure as the summary table shows it.

    Attributes:
        key: Its key in `Outcome.figures`.
        label: Column heading.
        digits: Decimal places shown.
        ratio: Whether the mqim/baseline ratio of this figure is shown.
    """

    key: str
    label: str
    digits: int = 0
    ratio: bool = True


@dataclass(kw_only=True)
class Outcome:
    """What a scenario measured on one target: key figures (table), caveats, everything else."""

    figures: dict[str, Figure] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class ScenarioContext:
    """What a scenario gets: parameters, a progress line writer, and load-generator processes.

    Args:
        params: The run's parameters.
        workdir: Scratch and log directory of the current target.
        progress: Receives one human-readable line at a time.
        target_name: Prefix of progress lines.
    """

    def __init__(
        self, *, params: BenchParams, workdir: Path, progress: Callable[[str], None], target_name: str
    ) -> None:
        self.params = params
        self.workdir = workdir
        self._progress = progress
        self._target_name = target_name
        self._runs = itertools.count(1)
        self._token = secrets.token_hex(3)

    def say(self, line: str) -> None:
        """Report progress."""
        self._progress(f"[{self._target_name}] {line}")

    def new_run(self) -> str:
        """A fresh measurement id, unique on this machine for this harness run."""
        return f"{self._token}{next(self._runs)}"

    def worker(
        self, spec: ClientsSpec | PublisherSpec, name: str
    ) -> contextlib.AbstractAsyncContextManager[WorkerProcess]:
        """Start a load-generator process (stopped on exit of the `async with`)."""
        return open_worker(spec, name=name, log_dir=self.workdir)


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """A named measurement.

    Attributes:
        name: What `mqim bench NAME` calls it.
        summary: One line for the report.
        columns: Its key figures, in table order.
        run: Measures one started target.
        estimate_s: Rough duration with the given parameters (for the time budget).
        accounts: The mqim accounts it needs (created on demand).
        fresh_target: Restart the target first (memory is measured).
    """

    name: str
    summary: Callable[[BenchParams], str]
    columns: tuple[Column, ...]
    run: Callable[[ScenarioContext, Target], Awaitable[Outcome]]
    estimate_s: Callable[[BenchParams], float]
    accounts: Callable[[BenchParams], list[str]] = lambda params: []
    fresh_target: bool = False
