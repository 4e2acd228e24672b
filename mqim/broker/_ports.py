"""The ports the broker declares for what plugs into it from outside (docs/architecture.md,
"Packages and import direction": what plugs in does so through Protocols the broker owns).

`MembershipView` is the groups of a user, for the server-managed group subscriptions.
`ClusterPort` is what a cluster link does for one node's `Hub`; the hub takes it through
`Hub.attach_cluster` and calls nothing else of the cluster. The broker knows nothing of Redis.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol


class MembershipView(Protocol):
    """The groups of a user, as the hub's server-managed subscriptions need them.

    `mqim.acl.MembershipIndex` implements it; the server that owns the index keeps it current.
    """

    def groups_of(self, user: str) -> Collection[str]:
        """The groups `user` belongs to (empty for none)."""
        ...


class ClusterPort(Protocol):
    """The cluster as one node's `Hub` sees it (`mqim.cluster.ClusterLink` implements it).

    Every method but `claim` is synchronous and runs inside a hub call (routing, a subscription
    change): it must not block and must not call back into the hub.
    """

    def forward(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        """Send a message published on this node to the other nodes with subscribers for it.

        Called by `Hub.route` for local publishes only (a forwarded message is never forwarded
        again). Returns True when that forward must be durable before the publisher is
        acknowledged: the acknowledgement then waits for the next commit, like a queued write.
        """
        ...

    async def claim(self, client_id: str, clean: bool) -> bool:
        """Make this node the owner of `client_id` before its CONNECT is accepted.

        Takes the id over from the node that held it and loads its persistent session here
        (through `Hub.take_over`). False refuses the CONNECT (the cluster is unreachable).
        """
        ...

    def filter_changed(self, topic_filter: str, present: bool) -> None:
        """The first local session subscribed to `topic_filter` (present) or the last one left it.

        Shared subscriptions are reported whole (`$share/{group}/{filter}`).
        """
        ...

    def take_local(self, share_filter: str, local_ready: bool) -> bool:
        """For the message being routed: True to deliver `share_filter` to one local member, False
        when another node serves the share group (the `ShareRouter` of the hub's index).

        Args:
            share_filter: The full `$share/{group}/{filter}`.
            local_ready: Whether this node has a connected member of the group.
        """
        ...
