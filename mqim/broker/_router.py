"""Subscription index: which subscribers match a topic, without scanning every filter.

Stock amqtt walks every subscription filter on every publish (1:1 QoS1 fell tenfold with 5,000
other subscriptions). Here filters without wildcards live in a dict keyed by topic, and filters
with wildcards in a trie walked level by level, so the cost of a publish depends on the levels of
its topic and the wildcards that can match it, not on the number of other users.

Pure and synchronous; subscribers are opaque hashable keys (client ids, listener ids).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class _Node(Generic[K]):
    __slots__ = ("children", "hash_subs", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _Node[K]] = {}
        self.subs: dict[K, int] = {}  # subscribers whose filter ends at this node
        self.hash_subs: dict[K, int] = {}  # subscribers of this node's path + "/#"

    def empty(self) -> bool:
        return not (self.children or self.subs or self.hash_subs)


class SubscriptionIndex(Generic[K]):
    """Maps topic filters to subscribers and answers "who gets topic T" (MQTT 4.7)."""

    __slots__ = ("_count", "_exact", "_root", "last_visited")

    def __init__(self) -> None:
        self._exact: dict[str, dict[K, int]] = {}
        self._root: _Node[K] = _Node()
        self._count = 0
        # Instrumentation: wildcard-trie nodes the last `match()` visited (0 when it only used the
        # exact map). It shows the cost of a publish does not grow with unrelated subscriptions.
        self.last_visited = 0

    def __len__(self) -> int:
        return self._count

    def add(self, key: K, topic_filter: str, qos: int) -> bool:
        """Add or update `key`'s subscription; return True if it is new (MQTT-3.8.4-3 replaces)."""
        if "+" not in topic_filter and "#" not in topic_filter:
            subs = self._exact.setdefault(topic_filter, {})
        else:
            node = self._root
            levels = topic_filter.split("/")
            if levels[-1] == "#":
                for level in levels[:-1]:
                    node = node.children.setdefault(level, _Node())
                subs = node.hash_subs
            else:
                for level in levels:
                    node = node.children.setdefault(level, _Node())
                subs = node.subs
        new = key not in subs
        subs[key] = qos
        if new:
            self._count += 1
        return new

    def remove(self, key: K, topic_filter: str) -> bool:
        """Remove `key`'s subscription to `topic_filter`; return True if it existed."""
        if "+" not in topic_filter and "#" not in topic_filter:
            subs = self._exact.get(topic_filter)
            if subs is None or subs.pop(key, None) is None:
                return False
            if not subs:
                del self._exact[topic_filter]
            self._count -= 1
            return True
        levels = topic_filter.split("/")
        is_hash = levels[-1] == "#"
        path = levels[:-1] if is_hash else levels
        trail: list[tuple[_Node[K], str]] = []
        node = self._root
        for level in path:
            child = node.children.get(level)
            if child is None:
                return False
            trail.append((node, level))
            node = child
        target = node.hash_subs if is_hash else node.subs
        if target.pop(key, None) is None:
            return False
        self._count -= 1
        # Prune empty branches so churn does not leave a growing skeleton behind.
        for parent, level in reversed(trail):
            child = parent.children[level]
            if not child.empty():
                break
            del parent.children[level]
        return True

    def match(self, topic: str) -> dict[K, int]:
        """Subscribers of `topic` with the maximum QoS of their matching filters (MQTT-3.3.5-1)."""
        result: dict[K, int] = {}
        exact = self._exact.get(topic)
        if exact:
            result.update(exact)
        root = self._root
        if not root.children and not root.hash_subs:
            self.last_visited = 0
            return result
        levels = topic.split("/")
        # MQTT-4.7.2-1: filters starting with a wildcard do not match topics starting with "$".
        dollar = topic.startswith("$")
        self.last_visited = self._walk(root, levels, 0, result, dollar)
        return result

    def _walk(self, node: _Node[K], levels: list[str], index: int, result: dict[K, int], dollar: bool) -> int:
        """Collect the subscribers under `node`; return the number of nodes visited."""
        skip_wild = dollar and index == 0
        if node.hash_subs and not skip_wild:
            # "a/#" also matches "a" itself (MQTT-4.7.1-2), i.e. at any index >= its depth.
            _merge(result, node.hash_subs)
        if index == len(levels):
            if node.subs:
                _merge(result, node.subs)
            return 1
        children = node.children
        if not children:
            return 1
        visited = 1
        child = children.get(levels[index])
        if child is not None:
            visited += self._walk(child, levels, index + 1, result, dollar)
        if not skip_wild:
            plus = children.get("+")
            if plus is not None:
                visited += self._walk(plus, levels, index + 1, result, dollar)
        return visited

    def filters(self) -> Iterator[tuple[str, K, int]]:
        """Every (filter, key, qos), for introspection and tests."""
        for topic, subs in self._exact.items():
            for key, qos in subs.items():
                yield topic, key, qos
        yield from self._iter_node(self._root, [])

    def _iter_node(self, node: _Node[K], path: list[str]) -> Iterator[tuple[str, K, int]]:
        for key, qos in node.subs.items():
            yield "/".join(path), key, qos
        for key, qos in node.hash_subs.items():
            yield "/".join([*path, "#"]), key, qos
        for level, child in node.children.items():
            yield from self._iter_node(child, [*path, level])


def _merge(result: dict[K, int], subs: dict[K, int]) -> None:
    for key, qos in subs.items():
        old = result.get(key)
        if old is None or qos > old:
            result[key] = qos
