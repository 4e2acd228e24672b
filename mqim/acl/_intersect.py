"""Wildcard subscriptions: a topic filter intersected with what an identity may receive.

`compile_receive_scope` turns one SUBSCRIBE filter of one identity into a `ReceiveScope`, once, at
SUBSCRIBE time. The scope is the set of topic names T such that

    T matches the filter  AND  the engine allows RECEIVE on T  AND  the engine allows SUBSCRIBE
    on T itself (T read as a wildcard-free filter)

for the same configured rules, built-in rules and memberships (`AclEngine`). The SUBSCRIBE term
makes a subscribe deny cut every wildcard that overlaps it: with `deny subscribe test/nosubscribe`,
`test/nosubscribe` is refused (its scope is empty) and `#` is granted without that topic, so a
deny cannot be side-stepped by subscribing to a wider filter. A shared subscription
`$share/{group}/{filter}` is judged by its inner filter, as the broker judges it (the group says
who gets one copy, not which topics).

Representation. A scope is empty (SUBACK 0x80) or a union of at most two *parts*; each part is a
finite set of *include* filters and a finite set of *exclude* filters:

    T in scope  <=>  some part: T matches one of its includes and none of its excludes

Every include is already intersected with the requested filter (it is a sub-filter of it), and
every include of a non-empty scope is non-empty minus its excludes (a witness topic was found).
Includes and excludes are kept in small level tries, so `allows` walks the topic's levels once per
trie (a literal and a `+` branch per level) and never evaluates a rule or asks the membership
lookup: the cost of a delivery does not depend on the number of rules, groups or contacts.
When the scope is the whole filter (`exact`), `allows` is just the filter match.

Examples (user alice in group g1, bob her contact, rules `allow all subscribe,receive #` and
`deny all subscribe test/nosubscribe`; `N` is the built-in locked namespace `im/v1/#`):

- `#` -> part 1: include `#`, exclude `im/v1/#`, `test/nosubscribe`;
  part 2: include `im/v1/u/alice/#`, `im/v1/g/g1/#`, `im/v1/presence/alice`,
  `im/v1/presence/bob`, exclude `test/nosubscribe`. Not exact: a *wide* subscription.
- `TopicA/+` -> exact (the whole filter; no per-message check).
- `+/+` -> part 1: include `+/+`, exclude `im/v1/#` (which contains the topic `im/v1`).
- `im/+/#` -> part 2 only: alice's own `im/v1/...` topics.
- `test/nosubscribe` or `im/v1/u/bob/#` -> empty: refused.
- `$SYS/#` -> empty unless a rule grants `$SYS/...`; `#` and `+/...` never match a topic that
  starts with `$` (MQTT-4.7.2-1), so a `$` topic is only ever in the scope of a filter whose
  first level names it literally.
- `$TopicA/#` -> exact: a *rule* pattern's leading `#`/`+` covers `$` topics other than
  `$SYS/...` (`rule_levels`), so `allow all subscribe,receive #` grants it.

Rules (the engine's, restated per topic): deny wins (every deny that applies to the identity and
covers RECEIVE, or SUBSCRIBE of a plain filter, becomes an exclude); an allow counts for RECEIVE
if it covers RECEIVE, for SUBSCRIBE if it covers SUBSCRIBE and is not a `$share/...` pattern; a
topic needs both. `%u`/`%c` are expanded as the engine does: an allow whose value may not fill a
level does not apply, a deny in that case applies with `+` there. For users the built-in lock of
`im/v1/` is absolute: inside it only the built-in grants count (own inbox, groups while a member,
presence of itself and of users it shares a conversation with), whatever the configured allows.

Membership. Group and presence grants are enumerated from the lookup at compile time (the
identity's groups, contacts and co-members); such a scope is `dynamic` and must be recompiled
when the lookup reports a change for the user, like every scope when the rules or roles change.
A scope never grows between recompilations, so a removed member stops receiving the moment the
scope is recompiled; an owner the enumeration misses is left out (fails closed).

Cost bounds: compiling is linear in rules x memberships plus a witness search per include that
some exclude overlaps, bounded by the number and length of the excludes; a built-in grant lists
at most `MAX_SCOPE_OWNERS` owners (else it is left out: `capped`).
`DEFAULT_MAX_WIDE_SUBSCRIPTIONS_PER_SESSION` names the limit the broker puts on wide (non-exact)
scopes per session.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from mqim.acl._builtin import (
    BUILTIN_CHECKS,
    AllowEverything,
    NamespaceLock,
    OwnerCheck,
    _is_member,
    _sees_presence,
)
from mqim.acl._checks import Check, StaticCheck
from mqim.acl._matcher import (
    intersect_levels,
    is_valid_topic,
    match_levels,
    parse_filter,
    rule_levels,
    subset_levels,
)
from mqim.acl._membership import MembershipLookup
from mqim.acl._rules import Action, Effect, Identity, Rule

DEFAULT_MAX_WIDE_SUBSCRIPTIONS_PER_SESSION = 8
"""How many wide (non-exact) subscriptions one session may hold by default.

A wide scope costs a trie walk per delivered message instead of a bare filter match, and its
compilation enumerates the identity's memberships; the broker refuses (SUBACK 0x80) a new wide
subscription beyond its configured `max_wide_subscriptions_per_session`.
"""

MAX_SCOPE_OWNERS = 10_000
"""The most owners (groups, presence contacts) one built-in grant may enumerate into a scope.

A wildcard over `im/v1/presence/{other}` would otherwise list every co-member of every group
(up to max_groups_per_user x max_group_members). Beyond the limit that grant contributes nothing
to the scope (it fails closed, `ReceiveScope.capped` says so): such topics stay reachable by
subscribing to them by name, as the IM client does.
"""

Levels = tuple[str, ...]

_UNIVERSE: Levels = ()
"""Stands for "every topic, `$` topics included" (what an administrator may receive)."""

_WILD = ("+", "#")


@runtime_checkable
class MembershipListing(MembershipLookup, Protocol):
    """A membership lookup that can also list (`MembershipIndex` is one)."""

    def groups_of(self, user: str) -> frozenset[str]:
        """Return the groups `user` belongs to."""
        ...

    def contacts_of(self, user: str) -> frozenset[str]:
        """Return the users `user` has a direct conversation with."""
        ...

    def members_of(self, group: str) -> frozenset[str]:
        """Return the members of `group`."""
        ...


# -- filter algebra ------------------------------------------------------------------------------


def meet_levels(left: Levels, right: Levels) -> Levels | None:
    """Return the filter matching exactly the topic names both filters match, or None if none.

    The intersection of two MQTT filters is itself a filter: level by level, `+` yields to the
    other level, `#` to the other's remaining levels, two different literals to nothing. `()`
    stands for every topic. Wildcard-led filters never meet a literal `$...` first level
    (MQTT-4.7.2-1); the result of two wildcard-led filters is wildcard-led, so it excludes `$`
    topics as both of them do.

    Examples: `a/#` and `+/b` meet in `a/b`; `#` and `a` in `a`; `a/#` and `a` in `a` (`#`
    matches its parent level); `+/x` and `$SYS/x` in nothing; `/#` and `+` only in the empty
    topic, which is not a topic name, so in nothing.
    """
    if not left:
        return right
    if not right:
        return left
    left_wild, right_wild = left[0] in _WILD, right[0] in _WILD
    if (left_wild and not right_wild and right[0].startswith("$")) or (
        right_wild and not left_wild and left[0].startswith("$")
    ):
        return None
    out: list[str] = []
    for a, b in zip(left, right, strict=False):
        if a == "#":
            return _nonempty((*out, *right[len(out) :]))
        if b == "#":
            return _nonempty((*out, *left[len(out) :]))
        if a == "+":
            out.append(b)
        elif b == "+" or a == b:
            out.append(a)
        else:
            return None
    if len(left) != len(right):
        longer = left if len(left) > len(right) else right
        # The shorter filter matches only topics of exactly its length; the longer one matches
        # such a topic only through a `#` right after (MQTT 4.7.1.2: `#` matches the parent).
        if longer[len(out)] != "#":
            return None
    return _nonempty(tuple(out))


def _nonempty(levels: Levels) -> Levels | None:
    # The empty topic "" (one empty level) is not a topic name (MQTT-4.7.3-1).
    return None if levels == ("",) else levels


def _stop_matches(exclude: Levels, count: int) -> bool:
    """Whether `exclude`, matching a topic's first `count` levels, matches that topic itself."""
    return len(exclude) == count or (len(exclude) == count + 1 and exclude[count] == "#")


def find_witness(pattern: Levels, excludes: Sequence[Levels]) -> Levels | None:
    """Return a topic name (split) matched by `pattern` and by none of `excludes`, or None.

    Exact over valid topic names (the 65,535-byte limit aside): at each level only the literals
    the excludes use there and one fresh value can make a difference, and beyond the longest
    exclude nothing changes any more, so a depth-first search over those choices, with failed
    states remembered, decides it.
    """
    count = len(pattern)
    hash_at = count - 1 if pattern[-1] == "#" else -1
    wild_first = pattern[0] in _WILD
    prefix: list[str] = []
    failed: set[tuple[int, tuple[int, ...], bool]] = set()

    def candidates(index: int, alive: tuple[int, ...]) -> list[str]:
        literals = {
            excludes[k][index] for k in alive if index < len(excludes[k]) and excludes[k][index] not in _WILD
        }
        if index == 0 and wild_first:
            # A wildcard-led pattern never matches a `$` topic (MQTT-4.7.2-1).
            literals = {value for value in literals if not value.startswith("$")}
        fresh = "x"
        serial = 0
        while fresh in literals:
            serial += 1
            fresh = f"x{serial}"
        return [fresh, *sorted(literals)]

    def search(index: int, alive: tuple[int, ...]) -> bool:
        empty_first = index == 1 and prefix[0] == ""
        key = (index, alive, empty_first)
        if key in failed:
            return False
        in_hash = hash_at >= 0 and index >= hash_at
        may_stop = index >= 1 and (index == count or in_hash) and not (index == 1 and prefix[0] == "")
        if may_stop and not any(_stop_matches(excludes[k], index) for k in alive):
            return True
        if in_hash or index < count:
            level = "+" if in_hash or pattern[index] == "+" else pattern[index]
            for value in candidates(index, alive) if level == "+" else [level]:
                following: list[int] = []
                covered = False
                for k in alive:
                    exclude = excludes[k]
                    if index >= len(exclude):
                        continue
                    other = exclude[index]
                    if index == 0 and other in _WILD and value.startswith("$"):
                        continue  # MQTT-4.7.2-1
                    if other == "#":
                        covered = True
                        break
                    if other == "+" or other == value:
                        following.append(k)
                if covered:
                    continue
                prefix.append(value)
                if search(index + 1, tuple(following)):
                    return True
                prefix.pop()
        failed.add(key)
        return False

    relevant = tuple(k for k, exclude in enumerate(excludes) if intersect_levels(exclude, pattern))
    if search(0, relevant):
        return tuple(prefix)
    return None


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
    """What one subscription of one identity may deliver (see the module docstring).

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


# -- compilation ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Grant:
    levels: Levels
    receive: bool
    subscribe: bool
    locked: bool  # one of the lock's own grants (counts inside the locked namespace)
    inside: bool  # entirely inside the locked namespace (so it counts nowhere else)
    region: Levels | None = None  # the owner check's pattern with `+` for the owner, if any


@dataclass(slots=True)
class _Collected:
    grants: list[_Grant] = field(default_factory=list)
    denies: list[Levels] = field(default_factory=list)
    namespace: Levels | None = None
    dynamic: bool = False
    capped: bool = False


def _inside(levels: Levels, namespace: Levels | None) -> bool:
    return namespace is not None and bool(levels) and subset_levels(levels, namespace)


def _add_rule(out: _Collected, rule: Rule, identity: Identity, first: str, *, locked: bool) -> None:
    receive = Action.RECEIVE in rule.actions
    # The broker judges a shared subscription by its inner, plain filter, so only plain
    # patterns grant or deny SUBSCRIBE; RECEIVE never looks at the share group (see StaticCheck).
    subscribe = Action.SUBSCRIBE in rule.actions and rule.compiled.share is None
    if not receive and not subscribe:
        return
    if rule.effect is Effect.DENY:
        levels = rule.compiled.expand(identity, widen=True)
        if levels is not None:
            out.denies.append(tuple(rule_levels(levels, first)))
        return
    levels = rule.compiled.expand(identity, widen=False)
    if levels is not None:
        # A rule's leading wildcard also covers `$` topics other than `$SYS` (`rule_levels`);
        # every topic of the scope starts with the filter's first level, so read it against that.
        levels = tuple(rule_levels(levels, first))
        out.grants.append(_Grant(levels, receive, subscribe, locked, _inside(levels, out.namespace)))


def _owner_candidates(check: OwnerCheck, identity: Identity, membership: MembershipListing) -> set[str]:
    """Every owner level the check's predicate may accept (it still decides each one)."""
    user = identity.user
    groups = membership.groups_of(user)
    if check._predicate is _is_member:
        return set(groups)
    owners = {user, *membership.contacts_of(user)}
    for group in groups:
        owners.update(membership.members_of(group))
    if check._predicate is not _sees_presence:
        owners.update(groups)  # an unknown predicate: offer every name the listing knows
    return owners


def _add_owner_check(
    out: _Collected,
    check: OwnerCheck,
    identity: Identity,
    membership: MembershipListing,
    levels: Levels,
    *,
    locked: bool,
    max_owners: int,
) -> None:
    # OwnerCheck keeps its pattern private; this module is its only other reader.
    prefix, tail, index = check._prefix, check._tail, check._owner_index
    if not intersect_levels((*prefix, "+", *tail), levels):
        return  # the filter cannot reach this grant: no membership question, not dynamic
    out.dynamic = True
    if len(levels) > index and levels[index] not in _WILD:
        owners: Iterable[str] = (levels[index],)
    else:
        owners = _owner_candidates(check, identity, membership)
        if len(owners) > max_owners:
            out.capped = True
            return
    receive = Action.RECEIVE in check.actions
    subscribe = Action.SUBSCRIBE in check.actions
    region = (*prefix, "+", *tail)
    inside = _inside(region, out.namespace)  # once for every owner
    predicate = check._predicate
    grants = out.grants
    for owner in sorted(owners):
        if "/" in owner or "+" in owner or "#" in owner or "\0" in owner:
            continue
        if predicate(identity, owner, membership):
            grants.append(_Grant((*prefix, owner, *tail), receive, subscribe, locked, inside, region))


def _collect(
    identity: Identity,
    rules: Sequence[Rule],
    builtin: bool,
    membership: MembershipListing,
    levels: Levels,
    max_owners: int,
) -> _Collected:
    out = _Collected()
    checks = BUILTIN_CHECKS[identity.kind] if builtin else ()
    locked_ids: set[int] = set()
    for check in checks:
        if isinstance(check, NamespaceLock):
            if out.namespace is not None:
                raise TypeError("more than one built-in namespace lock per identity kind")
            out.namespace = check._namespace
            for grant in check._grants:
                if grant not in checks:
                    # The lock's grants must also be allow checks of the kind for the
                    # "inside the namespace only the grants count" shortcut to be exact.
                    raise TypeError(f"lock grant {grant.label} is not a built-in check of its kind")
                locked_ids.add(id(grant))
    for rule in rules:
        if rule.subject.applies_to(identity):
            _add_rule(out, rule, identity, levels[0], locked=False)
    for check in checks:
        if isinstance(check, NamespaceLock):
            continue
        if not check.applies_to(identity):
            continue
        locked = id(check) in locked_ids
        if isinstance(check, StaticCheck):
            _add_rule(out, check.rule, identity, levels[0], locked=locked)
        elif isinstance(check, OwnerCheck):
            _add_owner_check(out, check, identity, membership, levels, locked=locked, max_owners=max_owners)
        elif isinstance(check, AllowEverything):
            receive = Action.RECEIVE in check.actions
            subscribe = Action.SUBSCRIBE in check.actions
            out.grants.append(_Grant(_UNIVERSE, receive, subscribe, locked, False))
        else:
            raise TypeError(f"no receive-scope translation for built-in check {_label(check)}")
    return out


def _label(check: Check) -> str:
    return f"{type(check).__name__} {check.label}"


def _terms(grants: Sequence[_Grant], levels: Levels) -> list[Levels]:
    """The sub-filters of `levels` that some grant allows for both RECEIVE and SUBSCRIBE."""
    both: list[Levels] = []
    receive_only: list[Levels] = []
    subscribe_only: list[Levels] = []
    inside_filter: dict[Levels, bool] = {}
    for grant in grants:
        region = grant.region
        if region is not None:
            # One subset test per owner check instead of one meet per owner.
            covered = inside_filter.get(region)
            if covered is None:
                covered = inside_filter[region] = subset_levels(region, levels)
            met = grant.levels if covered else meet_levels(grant.levels, levels)
        else:
            met = meet_levels(grant.levels, levels)
        if met is None:
            continue
        if grant.receive and grant.subscribe:
            both.append(met)
        elif grant.receive:
            receive_only.append(met)
        elif grant.subscribe:
            subscribe_only.append(met)
    # (B | R) & (B | S) = B | (R & S): a grant covering both actions needs no partner.
    terms = list(both)
    for left in receive_only:
        for right in subscribe_only:
            met = meet_levels(left, right)
            if met is not None:
                terms.append(met)
    if levels in terms:
        return [levels]  # every term is inside the filter: the filter itself covers them all
    return list(dict.fromkeys(terms))


def _part(
    terms: Iterable[Levels], excludes: Sequence[Levels], region: Levels
) -> tuple[ScopePart | None, Levels | None]:
    """Keep the terms that are not empty minus the excludes; `region` contains every term."""
    # An exclude that misses the region misses every term: most terms then need no search.
    excludes = list(dict.fromkeys(e for e in excludes if intersect_levels(e, region)))
    kept: list[Levels] = []
    used: set[Levels] = set()
    witness: Levels | None = None
    for term in terms:
        relevant = [e for e in excludes if intersect_levels(e, term)] if excludes else []
        if relevant:
            found = find_witness(term, relevant)
            if found is None:
                continue
            used.update(relevant)
            witness = witness or found
        kept.append(term)  # a valid filter with nothing cut out of it matches some topic
    if not kept:
        return None, None
    if witness is None:
        witness = find_witness(kept[0], ())
    part = ScopePart._of_levels(kept, [e for e in excludes if e in used])
    return part, witness


def compile_receive_scope(
    *,
    identity: Identity,
    topic_filter: str,
    rules: Sequence[Rule],
    membership: MembershipListing,
    builtin: bool = True,
    max_owners: int = MAX_SCOPE_OWNERS,
) -> ReceiveScope:
    """Compile what `identity` may receive through a subscription to `topic_filter`.

    Pure: reads `rules` and `membership`, changes nothing. Pass the same rules, membership and
    `builtin` flag as the `AclEngine` (`engine.rules`), so that `scope.allows(topic)` equals
    "the filter matches `topic` and the engine allows RECEIVE on `topic` and SUBSCRIBE on
    `topic` as a filter".

    Args:
        identity: Who subscribes.
        topic_filter: The filter as sent, possibly `$share/{group}/{filter}`.
        rules: The configured rules, as the engine holds them.
        membership: The engine's membership lookup, able to list (`MembershipIndex`).
        builtin: Whether the built-in v1 rules apply (as for the engine).
        max_owners: See `MAX_SCOPE_OWNERS`.

    Returns:
        The scope; an invalid filter gives an empty scope.
    """
    parsed = parse_filter(topic_filter)
    if parsed is None:
        return ReceiveScope(
            topic_filter=topic_filter, share=None, parts=(), exact=False, dynamic=False, witness=None
        )
    share, levels = parsed
    collected = _collect(identity, rules, builtin, membership, levels, max_owners)
    denies = [deny for deny in collected.denies if intersect_levels(deny, levels)]
    namespace = collected.namespace
    parts: list[ScopePart] = []
    witness: Levels | None = None
    if namespace is None:
        part, found = _part(_terms(collected.grants, levels), denies, levels)
        if part is not None:
            parts.append(part)
            witness = found
    else:
        # Outside the locked namespace every grant counts; inside it only the lock's own grants.
        outside_grants = [grant for grant in collected.grants if not grant.inside]
        outside = [t for t in _terms(outside_grants, levels) if not subset_levels(t, namespace)]
        part, found = _part(outside, [*denies, namespace], levels)
        if part is not None:
            parts.append(part)
            witness = found
        inside_grants = [grant for grant in collected.grants if grant.locked]
        whole = all(grant.inside for grant in inside_grants)
        inside = [
            met
            for term in _terms(inside_grants, levels)
            if (met := term if whole else meet_levels(term, namespace)) is not None
        ]
        region = meet_levels(levels, namespace)
        part, found = _part(inside, denies, region) if region is not None else (None, None)
        if part is not None:
            parts.append(part)
            witness = witness or found
    exact = any(part.include == (_text(levels),) and not part.exclude for part in parts)
    return ReceiveScope(
        topic_filter=topic_filter,
        share=share,
        parts=(ScopePart._whole(levels),) if exact else tuple(parts),
        exact=exact,
        dynamic=collected.dynamic,
        witness=None if witness is None else "/".join(witness),
        capped=collected.capped,
    )
