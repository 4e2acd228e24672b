"""Receive-scope compilation, first step: the rules and built-in checks as grant and deny filters.

Each configured rule and built-in check that applies to the identity becomes a `_Grant` (an allow
filter with the actions it covers and where it counts relative to the locked namespace) or a
deny filter; owner checks (groups, presence) are enumerated from the membership listing. The
rest of the compilation is in `mqim/acl/_intersect.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mqim.acl._builtin import (
    BUILTIN_CHECKS,
    AllowEverything,
    NamespaceLock,
    OwnerCheck,
    _is_member,
    _sees_presence,
)
from mqim.acl._checks import Check, StaticCheck
from mqim.acl._listing import MembershipListing
from mqim.acl._matcher import intersect_levels, rule_levels, subset_levels
from mqim.acl._meet import _WILD, Levels
from mqim.acl._rules import Action, Effect, Identity, Rule

_UNIVERSE: Levels = ()
"""Stands for "every topic, `$` topics included" (what an administrator may receive)."""


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
