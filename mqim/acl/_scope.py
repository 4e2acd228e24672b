"""Receive scopes: what one subscription of one identity may deliver, checked per message.

The compiler (`mqim/acl/_intersect.py`) says which topics a scope holds; this module holds how.

Representation. A scope is empty (SUBACK 0x80) or a union of at most two *parts*; each part is a
finite set of *include* filters and a finite set of *exclude* filters:

    T in scope  <=>  some part: T matches one of its includes and none of its excludes

Every include is already intersected with the requested filter (it is a sub-filter of it), and
every include of a non-empty scope is non-empty minus its excludes (a witness topic was found).
Includes and excludes are kept in small level tries, so `allows` walks the topic's levels once per
trie (a literal and a `+` branch per level) and never evaluates a rule or asks the membership
lookup: the cost of a delivery does not depend on the number of rules, groups or contacts.
When the scope is the whole filter (`exact`), `allows` is just the filter match.

`DEFAULT_MAX_WIDE_SUBSCRIPTIONS_PER_SESSION` names the limit the broker puts on wide (non-exact)
scopes per session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mqim.acl._filter_trie import _FilterTrie
from mqim.acl._matcher import is_valid_topic, match_levels, parse_filter
from mqim.acl._meet import Levels

DEFAULT_MAX_WIDE_SUBSCRIPTIONS_PER_SESSION = 8
"""How many wide (non-exact) subscriptions one session may hold by default.

A wide scope costs a trie walk per delivered message instead of a bare filter match, and its
compilation enumerates the identity's memberships; the broker refuses (SUBACK 0x80) a new wide
subscription beyond its configured `max_wide_subscriptions_per_session`.
"""


def _text(levels: Levels) -> str:
    return "/".join(levels) if levels else "<every topic>"


@dataclass(frozen=True, kw_only=True, slots=True)
class ScopePart:
    """Topics matched by one of `include` and by none of `exclude`.

    Attributes:
        include: Filters, each inside the requested filter.
        exclude: Filters cut out of the includes.
    """

    include: tuple[str, ...]
    exclude: tuple[str, ...]
    _include: _FilterTrie = field(init=False, repr=False, compare=False)
    _exclude: _FilterTrie = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_include", _FilterTrie(_split(text) for text in self.include))
        object.__setattr__(self, "_exclude", _FilterTrie(_split(text) for text in self.exclude))

    @classmethod
    def _of_levels(cls, include: Sequence[Levels], exclude: Sequence[Levels]) -> ScopePart:
        # The compiler's path: the filters are already split, so the tries are built from them
        # directly instead of joining and splitting them again (a user's presence contacts can
        # number in the tens of thousands).
        part = object.__new__(cls)
        object.__setattr__(part, "include", tuple(_text(levels) for levels in include))
        object.__setattr__(part, "exclude", tuple(_text(levels) for levels in exclude))
        object.__setattr__(part, "_include", _FilterTrie(include))
        object.__setattr__(part, "_exclude", _FilterTrie(exclude))
        return part

    @classmethod
    def _whole(cls, levels: Levels) -> ScopePart:
        # The part of an exact scope: `ReceiveScope` matches the filter itself and never walks
        # this part, so it shares one empty trie instead of building two per subscription
        # (every session's inbox and group subscriptions are exact: ~4 KiB each otherwise).
        part = object.__new__(cls)
        object.__setattr__(part, "include", (_text(levels),))
        object.__setattr__(part, "exclude", ())
        object.__setattr__(part, "_include", _EMPTY_TRIE)
        object.__setattr__(part, "_exclude", _EMPTY_TRIE)
        return part

    def allows_levels(self, levels: Sequence[str]) -> bool:
        """Return True if the (valid, split) topic is in this part."""
        return self._include.match(levels) and not self._exclude.match(levels)


_EMPTY_TRIE = _FilterTrie(())


def _split(text: str) -> Levels:
    return () if text == "<every topic>" else tuple(text.split("/"))


@dataclass(frozen=True, kw_only=True, slots=True)
class ReceiveScope:
    """What one subscription of one identity may deliver (see `mqim/acl/_intersect.py`).

    Attributes:
        topic_filter: The filter as subscribed (possibly `$share/{group}/{filter}`).
        share: The share group, or None.
        parts: Empty when the subscription must be refused (SUBACK 0x80).
        exact: True when the scope is the whole filter: `allows` is the plain filter match.
        dynamic: True when group or presence membership was consulted: recompile the scope when
            the membership lookup reports a change for this identity's user.
        witness: A topic name in the scope (None when empty), for explanations and tests.
        capped: True when a built-in grant had more owners than `MAX_SCOPE_OWNERS` and was left
            out (the scope is then narrower than what the engine allows; log it).
    """

    topic_filter: str
    share: str | None
    parts: tuple[ScopePart, ...]
    exact: bool
    dynamic: bool
    witness: str | None
    capped: bool = False
    _levels: Levels = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parsed = parse_filter(self.topic_filter)
        object.__setattr__(self, "_levels", () if parsed is None else parsed[1])

    @property
    def empty(self) -> bool:
        """True when nothing can be delivered: refuse the subscription (SUBACK 0x80)."""
        return not self.parts

    @property
    def wide(self) -> bool:
        """True for a granted scope narrower than its filter: it counts against the wide limit."""
        return bool(self.parts) and not self.exact

    def allows_levels(self, levels: Sequence[str]) -> bool:
        """Return True if the (valid, split) topic name may be delivered through this subscription.

        O(levels) per part: no rule is evaluated and no membership is asked.
        """
        if not self.parts:
            return False
        if self.exact:
            return match_levels(self._levels, levels)
        return any(part.allows_levels(levels) for part in self.parts)

    def allows(self, topic: str) -> bool:
        """Return True if `topic` is a valid topic name this subscription may deliver."""
        return is_valid_topic(topic) and self.allows_levels(topic.split("/"))

    def describe(self) -> str:
        """One line for logs and `mqim acl test`."""
        if not self.parts:
            return f"{self.topic_filter!r}: nothing this identity may receive (refused)"
        if self.exact:
            return f"{self.topic_filter!r}: the whole filter"
        pieces = []
        for part in self.parts:
            text = " | ".join(part.include)
            if part.exclude:
                text += " minus " + " | ".join(part.exclude)
            pieces.append(f"({text})")
        return f"{self.topic_filter!r}: " + " or ".join(pieces)
