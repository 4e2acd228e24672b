"""mqim's cluster: N broker nodes coordinated through Redis.

Node registry with heartbeats and fencing, route table, forwarding streams, cluster-wide client-id
claims and session handover, adoption of dead nodes (see docs/architecture.md, "Cluster mode").
It plugs into `mqim.broker`; the broker knows nothing of Redis.
"""

from mqim.cluster._exceptions import ClusterError
from mqim.cluster._keys import ClusterKeys, ClusterSettings
from mqim.cluster._link import ClusterLink
from mqim.cluster._status import NodeDeath, NodeStatus, read_cluster_status, read_node_deaths

__all__ = [
    "ClusterError",
    "ClusterKeys",
    "ClusterLink",
    "ClusterSettings",
    "NodeDeath",
    "NodeStatus",
    "read_cluster_status",
    "read_node_deaths",
]
