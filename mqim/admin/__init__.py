"""Operating a node: the HTTP admin endpoints (`/metrics`, `/healthz`, `/readyz`, `/status`).

`Observability` runs them for a server composition together with the web page's listener and
the `$SYS/broker/...` publisher; `MqimCollector` turns the counters the components keep into
Prometheus metrics at scrape time (nothing on the hot path); `fetch_status` reads a running
server's `/status` (for `mqim status`).
"""

from mqim.admin._client import fetch_status
from mqim.admin._exceptions import AdminError
from mqim.admin._node import AdminOptions, Observability, ObservabilityOptions, node_parts
from mqim.admin._sources import NodeParts

__all__ = [
    "AdminError",
    "AdminOptions",
    "NodeParts",
    "Observability",
    "ObservabilityOptions",
    "fetch_status",
    "node_parts",
]
