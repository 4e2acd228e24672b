"""The benchmark scenarios, by name, in the order `all` runs them."""

from mqim.bench.scenarios._base import BenchParams, Column, Figure, Outcome, Scenario, ScenarioContext
from mqim.bench.scenarios._cluster import CLUSTER
from mqim.bench.scenarios._group import GROUP
from mqim.bench.scenarios._idle import IDLE
from mqim.bench.scenarios._p2p import P2P, P2P_CROWD, STANDALONE

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (P2P, STANDALONE, GROUP, P2P_CROWD, IDLE, CLUSTER)}
"""Every scenario; `all` runs them in this order (heavy ones last, `idle` on a fresh broker), except
`cluster`, which needs Redis and SecantusDB and runs only when named."""

__all__ = [
    "SCENARIOS",
    "BenchParams",
    "Column",
    "Figure",
    "Outcome",
    "Scenario",
    "ScenarioContext",
]
