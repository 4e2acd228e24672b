"""A set of MQTT filters matched against a topic in one walk of its levels (receive scopes)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mqim.acl._meet import _WILD, Levels


class _Node:
    __slots__ = ("children", "end", "hash", "hashed", "leaves", "plus")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.plus: _Node | None = None
        self.hash = False
        self.end = False
        # Literal last levels (`.../{x}`) and literal levels followed by `#` (`.../{x}/#`) are
        # kept as sets, not nodes: a user's groups and presence contacts are many such filters.
        self.leaves: set[str] = set()
        self.hashed: set[str] = set()


class _FilterTrie:
    """A set of filters, matched against a topic in one walk of its levels."""

    __slots__ = ("_everything", "_root")

    def __init__(self, filters: Iterable[Levels]) -> None:
        self._root = _Node()
        self._everything = False
        for levels in filters:
            if not levels:
                self._everything = True
                continue
            node = self._root
            for index, level in enumerate(levels):
                rest = len(levels) - index
                if level not in _WILD and rest <= 2:
                    if rest == 1:
                        node.leaves.add(level)
                        break
                    if levels[index + 1] == "#":
                        node.hashed.add(level)
                        break
                if level == "#":
                    node.hash = True
                    break
                if level == "+":
                    if node.plus is None:
                        node.plus = _Node()
                    node = node.plus
                else:
                    child = node.children.get(level)
                    if child is None:
                        child = node.children[level] = _Node()
                    node = child
            else:
                node.end = True

    def match(self, levels: Sequence[str]) -> bool:
        if self._everything:
            return True
        count = len(levels)
        dollar = levels[0].startswith("$")
        stack = [(self._root, 0)]
        while stack:
            node, index = stack.pop()
            # MQTT-4.7.2-1: a wildcard in the first level never matches a `$` topic.
            wild_ok = index != 0 or not dollar
            if node.hash and wild_ok:
                return True  # `#` also matches the parent level (MQTT 4.7.1.2)
            if index == count:
                if node.end:
                    return True
                continue
            level = levels[index]
            if level in node.hashed or (index == count - 1 and level in node.leaves):
                return True
            child = node.children.get(level)
            if child is not None:
                stack.append((child, index + 1))
            if node.plus is not None and wild_ok:
                stack.append((node.plus, index + 1))
        return False
