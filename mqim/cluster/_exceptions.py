"""Cluster errors.

Hierarchy::

    BrokerError (mqim.broker)
    └── ClusterError            cluster mode: Redis unreachable or refusing, a node id in use
"""

from __future__ import annotations

from mqim.broker import BrokerError


class ClusterError(BrokerError):
    """Cluster mode failed: Redis is unreachable or refused a command, or a node id is taken."""
