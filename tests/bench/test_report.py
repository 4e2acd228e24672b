"""The text report: tables per scenario, ratios of mqim against the baselines, JSON."""

from __future__ import annotations

import json
from dataclasses import asdict

from mqim.bench import BenchParams, BenchReport, ScenarioResult, format_report
from mqim.bench._machine import machine_info
from mqim.bench.scenarios import Figure


def _report() -> BenchReport:
    def p2p(target: str, thr: float, p50: float) -> ScenarioResult:
        figures: dict[str, Figure] = {"throughput_msg_s": thr, "p50_ms": p50, "p99_ms": 2 * p50}
        figures |= {"p999_ms": 3 * p50, "max_ms": 4 * p50, "missing": 0, "duplicates": 0}
        return ScenarioResult(scenario="p2p", target=target, status="ok", figures=figures)

    return BenchReport(
        scenario="p2p",
        targets=["mqim", "amqtt", "mosquitto"],
        params=asdict(BenchParams()),
        machine=machine_info(),
        elapsed_s=1.0,
        results=[
            p2p("mqim", 6000.0, 0.5),
            p2p("amqtt", 2000.0, 1.0),
            p2p("mosquitto", 20000.0, float("nan")),
            ScenarioResult(scenario="idle", target="mqim", status="failed", error="boom\nmore"),
        ],
    )


def test_table_has_rows_and_ratios() -> None:
    text = format_report(_report())
    assert "mqim/amqtt" in text
    assert "3.00x" in text  # throughput 6000 / 2000
    assert "0.50x" in text  # p50 0.5 / 1.0
    assert "mqim/mosquitto" in text
    assert "0.30x" in text  # throughput 6000 / 20000
    assert "mqim: FAILED: boom" in text
    assert "machine:" in text


def test_json_has_every_figure_and_no_nan() -> None:
    data = json.loads(_report().to_json())
    assert data["machine"]["nproc"] >= 1
    assert data["results"][0]["figures"]["throughput_msg_s"] == 6000.0
    assert data["results"][2]["figures"]["p50_ms"] is None
