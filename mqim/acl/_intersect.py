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

The representation (parts of include and exclude filters in level tries) is described in
`mqim/acl/_scope.py`.

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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mqim.acl._grants import _collect, _Grant
from mqim.acl._listing import MembershipListing
from mqim.acl._matcher import intersect_levels, parse_filter, subset_levels
from mqim.acl._meet import Levels, find_witness, meet_levels
from mqim.acl._rules import Identity, Rule
from mqim.acl._scope import ReceiveScope, ScopePart, _text

MAX_SCOPE_OWNERS = 10_000
"""The most owners (groups, presence contacts) one built-in grant may enumerate into a scope.

A wildcard over `im/v1/presence/{other}` would otherwise list every co-member of every group
(up to max_groups_per_user x max_group_members). Beyond the limit that grant contributes nothing
to the scope (it fails closed, `ReceiveScope.capped` says so): such topics stay reachable by
subscribing to them by name, as the IM client does.
"""


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
