"""One real run of the `cluster` scenario: Redis, SecantusDB and three `mqim broker` nodes.

Not skipped when redis-server or SecantusDB is missing: `make test` installs both, so their
absence is a failure here (the scenario would report itself skipped).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mqim.bench import format_report, make_target, run


def test_only_mqim_runs_the_cluster_scenario() -> None:
    assert make_target("mosquitto").unsupported("cluster") is not None
    assert make_target("amqtt").unsupported("cluster") is not None


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_cluster_scenario_delivers_across_nodes(tmp_path: Path) -> None:
    lines: list[str] = []
    out = tmp_path / "bench.json"
    report = run("cluster", targets=["mqim"], json_path=out, duration_s=1.0, rate=50, progress=lines.append)

    result = report.result("cluster", "mqim")
    assert result is not None
    assert result.status == "ok", result.error
    assert result.figures["missing"] == 0
    assert result.figures["duplicates"] == 0
    assert result.figures["rate_msg_s"] == 50
    closed, opened = result.details["closed_loop"], result.details["open_loop"]
    assert closed["sent"] > 0
    assert closed["loss"]["distinct"] == closed["sent"]
    assert opened["sent"] == 50
    assert opened["latency"]["count"] == 50
    assert any("cluster up" in line for line in lines)
    text = format_report(report)
    assert "cluster" in text
    assert "publisher on the first" in text
    assert out.exists()
