"""Shared subscriptions: `$share/{group}/{filter}` delivers each message to one member of a group.

amqtt has none. A session subscribing to `$share/logic/im/v1/up/+/+` joins share group `logic`
for the filter `im/v1/up/+/+`; a publish matching the filter goes to exactly one member of the
group (round-robin, connected members first) instead of to all of them. Two `mqim logic` workers
subscribed that way split the uplink load.

`SharedIndex` is the hub's subscription index with that rule built in: plain filters behave as in
`SubscriptionIndex`; shared ones are kept per group and `match()` adds one member per matching
group. In a cluster a `ShareRouter` decides, per message and group, whether this node delivers
(one local member) or another node does. `SharedIndex` also counts the local sessions per filter
and reports a filter appearing or disappearing to `on_filter` (the cluster route table).

Pure and synchronous.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

from mqim.acl import is_valid_filter
from mqim.broker._router import SubscriptionIndex

SHARE_PREFIX: Final = "$share/"


def parse_shared(topic_filter: str) -> tuple[str, str] | None:
    """`(group, filter)` of `$share/{group}/{filter}`, or None for a plain or malformed filter.

    The group is one non-empty level without wildcards; the filter is a valid topic filter.
    """
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    group, sep, inner = topic_filter[len(SHARE_PREFIX) :].partition("/")
    if not sep or not group or "+" in group or "#" in group or not inner or not is_valid_filter(inner):
        return None
    return group, inner


def acl_filter(topic_filter: str) -> str:
    """The filter an ACL judges: the inner filter of a shared subscription, else the filter itself."""
    shared = parse_shared(topic_filter)
    return shared[1] if shared is not None else topic_filter


class ShareRouter(Protocol):
    """Decides, for one message being routed, whether this node serves a share group."""

    def take_local(self, share_filter: str, local_ready: bool) -> bool:
        """True to deliver to one local member; False when another node was chosen.

        Args:
            share_filter: The full `$share/{group}/{filter}`.
            local_ready: Whether this node has a connected member of the group.
        """
        ...


class _Group:
    __slots__ = ("cursor", "members")

    def __init__(self) -> None:
        self.members: dict[str, int] = {}  # key -> qos, in join order
        self.cursor = 0


class SharedIndex(SubscriptionIndex[str]):
    """`SubscriptionIndex` of session ids with shared subscriptions and filter change reports.

    Attributes:
        connected: Whether a session currently has a connection (members with one are preferred).
        admits: Whether a member may receive a topic through the share filter (its receive
            scope, see _scopes.py): only such members are chosen; None admits everyone.
        share_router: In a cluster, chooses the node that serves a share group per message.
        on_filter: Called with (filter, present) when the first local session subscribes to a
            filter or the last one leaves it (shared filters are reported whole, `$share/...`).
    """

    __slots__ = ("_groups", "_inner", "_refs", "admits", "connected", "on_filter", "share_router")

    def __init__(self) -> None:
        super().__init__()
        self._groups: dict[str, _Group] = {}
        # Inner filters of the share groups, keyed by the full share filter, to match topics.
        self._inner: SubscriptionIndex[str] = SubscriptionIndex()
        self._refs: dict[str, int] = {}
        self.connected: Callable[[str], bool] = lambda key: True
        self.admits: Callable[[str, str, str], bool] | None = None
        self.share_router: ShareRouter | None = None
        self.on_filter: Callable[[str, bool], None] | None = None

    def add(self, key: str, topic_filter: str, qos: int) -> bool:
        shared = parse_shared(topic_filter)
        if shared is None:
            new = super().add(key, topic_filter, qos)
        else:
            group = self._groups.get(topic_filter)
            if group is None:
                group = self._groups[topic_filter] = _Group()
                self._inner.add(topic_filter, shared[1], 2)
            new = key not in group.members
            group.members[key] = qos
        if new:
            self._ref(topic_filter, 1)
        return new

    def remove(self, key: str, topic_filter: str) -> bool:
        shared = parse_shared(topic_filter)
        if shared is None:
            gone = super().remove(key, topic_filter)
        else:
            group = self._groups.get(topic_filter)
            gone = group is not None and group.members.pop(key, None) is not None
            if group is not None and not group.members:
                del self._groups[topic_filter]
                self._inner.remove(topic_filter, shared[1])
        if gone:
            self._ref(topic_filter, -1)
        return gone

    def _ref(self, topic_filter: str, delta: int) -> None:
        count = self._refs.get(topic_filter, 0) + delta
        if count > 0:
            self._refs[topic_filter] = count
        else:
            self._refs.pop(topic_filter, None)
        if (count == 1 and delta > 0) or count <= 0:
            callback = self.on_filter
            if callback is not None:
                callback(topic_filter, count > 0)

    def local_filters(self) -> list[str]:
        """Every filter (plain and shared) at least one local session holds."""
        return list(self._refs)

    def share_groups(self) -> dict[str, list[str]]:
        """Members per share filter (for status and tests)."""
        return {name: list(group.members) for name, group in self._groups.items()}

    def match(self, topic: str) -> dict[str, int]:
        result = super().match(topic)
        if not self._groups:
            return result
        router = self.share_router
        for share_filter in self._inner.match(topic):
            group = self._groups.get(share_filter)
            if group is None:
                continue
            member = self._pick(group, share_filter, topic)
            ready = member is not None and self.connected(member)
            if router is not None and not router.take_local(share_filter, ready):
                continue
            if member is None:
                continue
            qos = group.members[member]
            old = result.get(member)
            if old is None or qos > old:
                result[member] = qos
        return result

    def _pick(self, group: _Group, share_filter: str, topic: str) -> str | None:
        """Round-robin over the members that may receive `topic`, preferring one with a connection."""
        admits = self.admits
        members = list(group.members)
        if admits is not None:
            members = [key for key in members if admits(key, share_filter, topic)]
        if not members:
            return None
        count = len(members)
        start = group.cursor % count
        for step in range(count):
            candidate = members[(start + step) % count]
            if self.connected(candidate):
                group.cursor = start + step + 1
                return candidate
        group.cursor = start + 1
        return members[start]
