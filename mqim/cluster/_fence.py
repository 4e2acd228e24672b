"""Cluster mode: fencing. A node that cannot renew its heartbeat stops serving before it may be
adopted.

The other nodes may adopt a node once its heartbeat key has expired, `node_ttl_s` after the
last renewal Redis applied. Each renewal is timed on this node's monotonic clock from the moment
it was sent (Redis applies it no earlier), so the key lives at least until `sent + node_ttl_s`.
`Fence` puts this node's own deadline a margin before that: past it, the node stops serving its
sessions (`ClusterLink` closes their connections, forgets them in memory, discards its queued
session writes, stops delivering and acknowledging stream entries, refuses CONNECTs) before any
other node can start adopting them.

A renewal is `SET ... XX`: it only extends a key that still exists. A key that expired (or a
Redis that lost its data) means the node may have been adopted: it fences too.

Once Redis answers again the node rejoins (decided over exiting: a Redis restart or a short
partition must not stop every node for good): under the adoption lock of its own node id, so
no other node is adopting it meanwhile, it registers again and loads only the sessions the
registry still says it owns (none when another node adopted it; all of them when nobody did).

Residual risk: a write the node had already checked and was sending when the process was paused
(SIGSTOP exactly between the check and the socket write) reaches Redis after the resume.
"""

from __future__ import annotations

import time
from typing import Final

MARGIN_FRACTION: Final = 0.25
"""The deadline is this fraction of the TTL (at least one heartbeat) before the key expires."""


class Fence:
    """This node's serving deadline.

    Args:
        ttl_s: The heartbeat key's TTL.
        heartbeat_s: The renewal period.
    """

    def __init__(self, *, ttl_s: float, heartbeat_s: float) -> None:
        margin = max(heartbeat_s, ttl_s * MARGIN_FRACTION)
        if margin >= ttl_s:
            margin = ttl_s / 2
        self.window_s = ttl_s - margin
        self._deadline = time.monotonic() + self.window_s
        self.fenced = False
        self.fences = 0

    def renewed(self, sent_at: float) -> None:
        """A renewal sent at `sent_at` (monotonic) was applied."""
        self._deadline = max(self._deadline, sent_at + self.window_s)

    @property
    def expired(self) -> bool:
        """True once the deadline has passed (whether or not the node has fenced yet)."""
        return time.monotonic() >= self._deadline

    @property
    def serving(self) -> bool:
        """True while this node may serve its sessions."""
        return not self.fenced and not self.expired

    @property
    def remaining_s(self) -> float:
        """Seconds left until the deadline (negative once passed)."""
        return self._deadline - time.monotonic()

    def fence(self) -> None:
        """Stop serving (the caller closes everything)."""
        self.fenced = True
        self.fences += 1

    def rejoined(self, sent_at: float) -> None:
        """Serving again from a registration sent at `sent_at`."""
        self.fenced = False
        self._deadline = sent_at + self.window_s
