"""The route table of the other nodes: which node has subscribers for which filters (pure).

Each node publishes the filters its local sessions hold (`SharedIndex.on_filter`); every other
node keeps them here, in a `SubscriptionIndex` keyed by node id, so finding the nodes a message
must go to costs the levels of its topic, not a scan of the cluster's filters.

It also chooses the node that serves a share group for one message (`decide`): exactly one of
the nodes with members (this node included), round-robin per share filter.
"""

from __future__ import annotations

from collections.abc import Iterable

from mqim.broker import SubscriptionIndex, parse_shared

LOCAL = ""
"""The candidate name of this node in `ShareChooser.decide`."""


class RemoteRoutes:
    """Filters per remote node, with topic matching and shared-subscription membership.

    Args:
        max_filters_per_node: Filters kept per node; more are ignored and counted in `refused`
            (a node publishing more is misconfigured or hostile).
    """

    def __init__(self, *, max_filters_per_node: int = 1_000_000) -> None:
        self._max = max_filters_per_node
        self._plain: SubscriptionIndex[str] = SubscriptionIndex()
        self._filters: dict[str, set[str]] = {}
        self._share_nodes: dict[str, set[str]] = {}
        self._share_index: SubscriptionIndex[str] = SubscriptionIndex()
        self.refused = 0

    @property
    def nodes(self) -> list[str]:
        """Nodes with at least one filter."""
        return [node for node, filters in self._filters.items() if filters]

    def filters_of(self, node: str) -> set[str]:
        """The filters known for `node` (a copy)."""
        return set(self._filters.get(node, ()))

    def add(self, node: str, topic_filter: str) -> None:
        """`node` now has subscribers for `topic_filter`."""
        filters = self._filters.setdefault(node, set())
        if topic_filter in filters:
            return
        if len(filters) >= self._max:
            self.refused += 1
            return
        filters.add(topic_filter)
        shared = parse_shared(topic_filter)
        if shared is None:
            self._plain.add(node, topic_filter, 2)
            return
        nodes = self._share_nodes.get(topic_filter)
        if nodes is None:
            nodes = self._share_nodes[topic_filter] = set()
            self._share_index.add(topic_filter, shared[1], 2)
        nodes.add(node)

    def remove(self, node: str, topic_filter: str) -> None:
        """`node` no longer has subscribers for `topic_filter`."""
        filters = self._filters.get(node)
        if filters is None or topic_filter not in filters:
            return
        filters.discard(topic_filter)
        if not filters:
            del self._filters[node]
        shared = parse_shared(topic_filter)
        if shared is None:
            self._plain.remove(node, topic_filter)
            return
        nodes = self._share_nodes.get(topic_filter)
        if nodes is not None:
            nodes.discard(node)
            if not nodes:
                del self._share_nodes[topic_filter]
                self._share_index.remove(topic_filter, shared[1])

    def replace(self, node: str, filters: Iterable[str]) -> None:
        """Set `node`'s filters to exactly `filters` (a full resync)."""
        wanted = set(filters)
        current = self.filters_of(node)
        for topic_filter in current - wanted:
            self.remove(node, topic_filter)
        for topic_filter in wanted - current:
            self.add(node, topic_filter)

    def drop(self, node: str) -> None:
        """Forget `node` (it left or died)."""
        for topic_filter in self.filters_of(node):
            self.remove(node, topic_filter)

    def plain_targets(self, topic: str) -> list[str]:
        """Nodes with a plain subscription matching `topic`."""
        return list(self._plain.match(topic))

    def share_filters(self, topic: str) -> list[str]:
        """Share filters (`$share/g/f`) some remote node holds that match `topic`."""
        return list(self._share_index.match(topic))

    def share_nodes(self, share_filter: str) -> list[str]:
        """Remote nodes with members of `share_filter`, sorted (a stable round-robin order)."""
        return sorted(self._share_nodes.get(share_filter, ()))


class ShareChooser:
    """Round-robin choice of the node serving a share group for each message.

    Args:
        max_tracked: Share filters whose round-robin position is kept (then reset).
    """

    def __init__(self, *, max_tracked: int = 100_000) -> None:
        self._cursor: dict[str, int] = {}
        self._max = max_tracked

    def decide(self, share_filter: str, candidates: list[str]) -> str | None:
        """One of `candidates` (node ids, `LOCAL` for this node) in turn; None when empty."""
        if not candidates:
            return None
        if share_filter not in self._cursor and len(self._cursor) >= self._max:
            self._cursor.clear()  # a position lost only restarts a round-robin
        turn = self._cursor.get(share_filter, 0)
        self._cursor[share_filter] = turn + 1
        return candidates[turn % len(candidates)]
