"""Retained messages indexed by topic level, so a new subscription finds its matches quickly.

A plain dict forced a scan of every retained topic on each SUBSCRIBE; with one retained
presence message per user, connecting 10,000 users cost 10,000 x 10,000 matches. Here an exact
filter is one dict lookup and a wildcard filter walks only the trie branches it can match.
Pure and synchronous.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

Entry = tuple[bytes, int]
"""(payload, qos) of a retained message."""


class _Node:
    __slots__ = ("children", "topic")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.topic: str | None = None  # set when a retained message ends here


class RetainedIndex(MutableMapping[str, Entry]):
    """topic -> (payload, qos), plus `match(filter)` over a level trie."""

    def __init__(self) -> None:
        self._data: dict[str, Entry] = {}
        self._root = _Node()

    def __getitem__(self, topic: str) -> Entry:
        return self._data[topic]

    def __setitem__(self, topic: str, entry: Entry) -> None:
        if topic not in self._data:
            node = self._root
            for level in topic.split("/"):
                child = node.children.get(level)
                if child is None:
                    child = node.children[level] = _Node()
                node = child
            node.topic = topic
        self._data[topic] = entry

    def __delitem__(self, topic: str) -> None:
        del self._data[topic]
        trail: list[tuple[_Node, str]] = []
        node = self._root
        for level in topic.split("/"):
            trail.append((node, level))
            node = node.children[level]
        node.topic = None
        for parent, level in reversed(trail):
            child = parent.children[level]
            if child.children or child.topic is not None:
                break
            del parent.children[level]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, topic: object) -> bool:
        return topic in self._data

    def match(self, topic_filter: str) -> list[str]:
        """Retained topics matched by `topic_filter` (MQTT 4.7, with the `$` rule of 4.7.2-1)."""
        if not topic_filter:
            return []
        if "+" not in topic_filter and "#" not in topic_filter:
            return [topic_filter] if topic_filter in self._data else []
        found: list[str] = []
        self._walk(self._root, topic_filter.split("/"), 0, found)
        return found

    def _walk(self, node: _Node, levels: list[str], index: int, found: list[str]) -> None:
        if index == len(levels):
            if node.topic is not None:
                found.append(node.topic)
            return
        level = levels[index]
        top = index == 0
        if level == "#":
            # "a/#" matches "a" itself and everything below it.
            if node.topic is not None and not top:
                found.append(node.topic)
            for name, child in node.children.items():
                if not (top and name.startswith("$")):
                    self._collect(child, found)
            return
        if level == "+":
            for name, child in node.children.items():
                if not (top and name.startswith("$")):
                    self._walk(child, levels, index + 1, found)
            return
        exact = node.children.get(level)
        if exact is not None:
            self._walk(exact, levels, index + 1, found)

    def _collect(self, node: _Node, found: list[str]) -> None:
        stack = [node]
        while stack:
            current = stack.pop()
            if current.topic is not None:
                found.append(current.topic)
            stack.extend(current.children.values())
