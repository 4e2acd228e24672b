"""One real run: the p2p scenario against a Mosquitto the harness starts itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mqim.bench import format_report, run

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto is not installed")
def test_p2p_against_mosquitto_loses_nothing(tmp_path: Path) -> None:
    lines: list[str] = []
    out = tmp_path / "bench.json"
    report = run("p2p", targets=["mosquitto"], json_path=out, duration_s=1.0, rate=200, progress=lines.append)

    result = report.result("p2p", "mosquitto")
    assert result is not None
    assert result.status == "ok", result.error
    assert result.figures["missing"] == 0
    assert result.figures["duplicates"] == 0
    closed, opened = result.details["closed_loop"], result.details["open_loop"]
    assert closed["sent"] > 0
    assert closed["loss"]["distinct"] == closed["sent"]
    assert opened["sent"] == 200
    assert opened["latency"]["count"] == 200
    assert result.figures["p50_ms"] is not None
    assert any("open loop" in line for line in lines)
    assert "mosquitto" in format_report(report)
    saved = json.loads(out.read_text())
    assert saved["results"][0]["figures"]["missing"] == 0
