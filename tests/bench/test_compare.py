"""Comparing a run with a saved one: every figure's change, mqim's baseline ratios, the CLI."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from mqim.bench import (
    BenchParams,
    BenchReport,
    InvalidParameter,
    ScenarioResult,
    compare,
    compare_with,
    format_comparison,
    load_report,
)
from mqim.bench.__main__ import main
from mqim.bench._machine import machine_info
from mqim.bench.scenarios import Figure


def _report(mqim_thr: float, amqtt_thr: float, mqim_p99: float) -> BenchReport:
    def p2p(target: str, thr: float, p99: float) -> ScenarioResult:
        figures: dict[str, Figure] = {"throughput_msg_s": thr, "p99_ms": p99, "missing": 0}
        figures["rate_msg_s"] = 1000
        return ScenarioResult(scenario="p2p", target=target, status="ok", figures=figures)

    return BenchReport(
        scenario="p2p",
        targets=["mqim", "amqtt"],
        params=asdict(BenchParams()),
        machine=machine_info(),
        elapsed_s=1.0,
        results=[
            p2p("mqim", mqim_thr, mqim_p99),
            p2p("amqtt", amqtt_thr, 1.0),
            ScenarioResult(scenario="idle", target="mqim", status="failed", error="boom"),
        ],
    )


def test_each_figure_new_against_old_with_its_direction() -> None:
    old, new = _report(3000.0, 3000.0, 20.0).to_dict(), _report(4500.0, 2000.0, 10.0).to_dict()
    changes = {(c.subject, c.key): c for c in compare(new, old)}

    thr = changes[("mqim", "throughput_msg_s")]
    assert (thr.old, thr.new, thr.ratio, thr.verdict) == (3000.0, 4500.0, 1.5, "better")
    p99 = changes[("mqim", "p99_ms")]
    assert (p99.ratio, p99.verdict) == (0.5, "better")  # latency: lower is better
    assert changes[("amqtt", "throughput_msg_s")].verdict == "worse"
    assert changes[("mqim", "rate_msg_s")].verdict == ""  # a parameter, not a result
    # The same-run ratio: mqim/amqtt went from 1.00x to 2.25x.
    ratio = changes[("mqim/amqtt", "throughput_msg_s")]
    assert ratio.old == pytest.approx(1.0)
    assert ratio.new == pytest.approx(2.25)
    assert ("mqim/amqtt", "missing") not in changes  # no ratio of counts
    assert not any(c.scenario == "idle" for c in changes.values())  # failed: nothing to compare


def test_a_figure_missing_from_the_old_run_has_no_ratio() -> None:
    old = _report(3000.0, 3000.0, 20.0).to_dict()
    old["results"] = [r for r in old["results"] if r["target"] != "amqtt"]
    changes = {(c.subject, c.key): c for c in compare(_report(4500.0, 2000.0, 10.0).to_dict(), old)}
    assert changes[("amqtt", "throughput_msg_s")].old is None
    assert changes[("amqtt", "throughput_msg_s")].ratio is None
    assert changes[("mqim/amqtt", "throughput_msg_s")].old is None


def test_text_names_the_old_run_and_shows_ratios() -> None:
    text = format_comparison(
        _report(4500.0, 2000.0, 10.0).to_dict(), _report(3000.0, 3000.0, 20.0).to_dict(), old_name="x.json"
    )
    assert "compared with x.json" in text
    assert "p2p:" in text
    assert "1.50x  better" in text
    assert "2.25x" in text


def test_against_a_saved_file_and_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_path, new_path = tmp_path / "old.json", tmp_path / "new.json"
    old_path.write_text(_report(3000.0, 3000.0, 20.0).to_json())
    new = _report(4500.0, 2000.0, 10.0)
    new_path.write_text(new.to_json())
    assert "1.50x  better" in compare_with(new, old_path)

    assert main(["--compare", str(old_path), str(new_path)]) == 0
    assert "1.50x  better" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text(json.dumps({"no": "results"}))
    assert main(["--compare", str(tmp_path / "bad.json"), str(new_path)]) == 1
    assert "not a `mqim bench --json` report" in capsys.readouterr().err


def test_the_saved_full_runs_are_reports() -> None:
    saved = sorted((Path(__file__).parents[2] / "docs" / "bench").glob("*.json"))
    assert saved
    for path in saved:
        assert load_report(path)["results"]
    with pytest.raises(InvalidParameter):
        load_report(Path("/nonexistent/report.json"))
