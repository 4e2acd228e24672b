"""`mqim bench`: measure mqim against stock amqtt and Mosquitto in the same run.

The harness starts each target broker itself on a free loopback port (or reaches an external one
by URL), drives it with load generators in separate processes (paho-mqtt), and reports
throughput, latency percentiles, loss, fan-out and memory per connection::

    report = run("all", targets=["mosquitto", "amqtt", "mqim"], progress=print)
    print(format_report(report))
    print(compare_with(report, Path("docs/bench/2026-11-27-all.json")))  # the change per figure
"""

from mqim.bench._compare import FigureChange, compare, compare_with, format_comparison, load_report
from mqim.bench._exceptions import (
    BenchError,
    InvalidParameter,
    PhaseError,
    TargetError,
    TargetUnsupported,
    TrackingLimitExceeded,
    UnknownScenario,
    UnknownTarget,
    WorkerError,
    WorkerTimeout,
)
from mqim.bench._histogram import Histogram, HistogramSnapshot
from mqim.bench._loss import LossStats, SequenceChecker
from mqim.bench._machine import MachineInfo, machine_info
from mqim.bench._mqim_target import MqimTarget
from mqim.bench._report import BenchReport, ScenarioResult, format_report
from mqim.bench._runner import run, scenario_names
from mqim.bench._target import Target
from mqim.bench._targets import make_target
from mqim.bench.scenarios import BenchParams

run_bench = run
"""Alias of `run`."""

__all__ = [
    "BenchError",
    "BenchParams",
    "BenchReport",
    "FigureChange",
    "Histogram",
    "HistogramSnapshot",
    "InvalidParameter",
    "LossStats",
    "MachineInfo",
    "MqimTarget",
    "PhaseError",
    "ScenarioResult",
    "SequenceChecker",
    "Target",
    "TargetError",
    "TargetUnsupported",
    "TrackingLimitExceeded",
    "UnknownScenario",
    "UnknownTarget",
    "WorkerError",
    "WorkerTimeout",
    "compare",
    "compare_with",
    "format_comparison",
    "format_report",
    "load_report",
    "machine_info",
    "make_target",
    "run",
    "run_bench",
    "scenario_names",
]
