"""Receive scopes of the sessions' subscriptions: what each filter may deliver.

See docs/architecture.md, "Security".

A wildcard subscription delivers the filter intersected with what its identity may receive
(`mqim.acl.compile_receive_scope`). The scope is compiled once per (session, filter): at
SUBSCRIBE, when a session is restored, when the rules or roles change (every scope), and when
the membership lookup reports a change for a user (that user's *dynamic* scopes). Deliveries
read it; no message costs a rule evaluation or a membership question:

- an *exact* scope (the whole filter is allowed) needs nothing per message: the subscription
  index already matched the filter;
- a session holding any other scope (wide, or empty after a policy change while it was away) is
  marked (`Session.wide` lists those filters): a delivery to it looks at its matching filters one
  by one, each an O(levels) walk of the scope's filter tries, and takes the highest QoS among
  those that allow the topic (MQTT-3.3.5-1 over the allowed subscriptions only). That costs at
  most the session's own filters (`max_subscriptions_per_session` plus its server-managed ones),
  and wide scopes per session are limited (`max_wide_subscriptions_per_session`).

Pure and synchronous: the hub and the connection call these from the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from mqim.acl import (
    AclEngine,
    Identity,
    MembershipListing,
    MembershipLookup,
    ObservableMembership,
    ReceiveScope,
    compile_receive_scope,
)
from mqim.broker._session import Session

MembershipChanged = Callable[[frozenset[str]], None]


class _Unlisted:
    """A lookup that answers questions but cannot list: wildcards over owners get none (fail closed)."""

    __slots__ = ("_lookup",)

    def __init__(self, lookup: MembershipLookup) -> None:
        self._lookup = lookup

    def is_member(self, user: str, group: str) -> bool:
        return self._lookup.is_member(user, group)

    def shares_conversation(self, user: str, other: str) -> bool:
        return self._lookup.shares_conversation(user, other)

    def groups_of(self, user: str) -> frozenset[str]:
        return frozenset()

    def contacts_of(self, user: str) -> frozenset[str]:
        return frozenset()

    def members_of(self, group: str) -> frozenset[str]:
        return frozenset()


class ScopeCompiler:
    """Compiles scopes with exactly the engine's rules, built-in switch and membership lookup.

    The membership lookup is the engine's (`AclEngine.membership`, the servers'
    `MembershipIndex`): a scope must agree with the decisions it replaces. A lookup that cannot
    list (`MembershipListing`) still answers literal owner levels; wildcards over groups and
    contacts then get nothing.

    Args:
        acl: The broker's engine.
    """

    __slots__ = ("_acl", "_listing")

    def __init__(self, *, acl: AclEngine) -> None:
        self._acl = acl
        lookup = acl.membership
        self._listing: MembershipListing = (
            lookup if isinstance(lookup, MembershipListing) else _Unlisted(lookup)
        )

    def compile(self, identity: Identity, topic_filter: str) -> ReceiveScope:
        """The scope of `identity`'s subscription to `topic_filter` (possibly `$share/...`)."""
        return compile_receive_scope(
            identity=identity,
            topic_filter=topic_filter,
            rules=self._acl.rules,
            membership=self._listing,
            builtin=self._acl.builtin,
        )

    def watch(self, listener: MembershipChanged) -> Callable[[], None]:
        """Call `listener(users)` on every membership change; returns the function that stops it."""
        lookup = self._acl.membership
        if not isinstance(lookup, ObservableMembership):
            return lambda: None
        lookup.add_listener(listener)
        return lambda: lookup.remove_listener(listener)


def set_scope(session: Session, topic_filter: str, scope: ReceiveScope) -> None:
    """Record the scope of one of `session`'s subscriptions."""
    session.scopes[topic_filter] = scope
    _mark(session)


def drop_scope(session: Session, topic_filter: str) -> None:
    """Forget the scope of a subscription that went away."""
    if session.scopes.pop(topic_filter, None) is not None:
        _mark(session)


def _mark(session: Session) -> None:
    session.wide = tuple(f for f, scope in session.scopes.items() if not scope.exact)


def wide_count(session: Session, *, besides: str | None = None) -> int:
    """Granted scopes narrower than their filter that `session` holds (the wide limit counts them)."""
    scopes = session.scopes
    return sum(1 for f in session.wide if f != besides and scopes[f].wide)


def delivery_qos(session: Session, levels: Sequence[str], merged: int) -> int:
    """The QoS of a delivery of a (split) topic to a session holding non-exact scopes; -1: none.

    `merged` is the index's answer (the highest QoS of every matching filter): once an allowed
    filter reaches it, the rest need no look.
    """
    best = -1
    scopes = session.scopes
    subscriptions = session.subscriptions
    for topic_filter in session.wide:
        if scopes[topic_filter].allows_levels(levels):
            qos = subscriptions.get(topic_filter, -1)
            if qos > best:
                best = qos
                if best >= merged:
                    return best
    for topic_filter, scope in scopes.items():
        if scope.exact:
            qos = subscriptions.get(topic_filter, -1)
            if qos > best and scope.allows_levels(levels):
                best = qos
                if best >= merged:
                    break
    return best


def filter_allows(session: Session, topic_filter: str, topic: str) -> bool:
    """Whether `session` may get `topic` through its subscription `topic_filter`.

    A session without an identity (no ACL applies) may; a subscription without a scope may not.
    """
    if session.identity is None:
        return True
    scope = session.scopes.get(topic_filter)
    if scope is None:
        return False
    return scope.exact or scope.allows(topic)


def any_allows(session: Session, topic: str) -> bool:
    """Whether some subscription of `session` may deliver `topic` (its queue keeps such messages)."""
    if session.identity is None:
        return True
    return any(scope.allows(topic) for scope in session.scopes.values())


def recompile(
    compiler: ScopeCompiler, session: Session, *, only_dynamic: bool = False
) -> tuple[list[str], bool]:
    """Compile `session`'s scopes again (its identity, the current rules and memberships).

    Args:
        compiler: The hub's compiler.
        session: The session; its identity must be set.
        only_dynamic: Recompile only scopes that consulted the membership lookup.

    Returns:
        The filters whose scope is now empty, and whether any scope became narrower or changed.
    """
    identity = session.identity
    assert identity is not None
    empty: list[str] = []
    changed = False
    for topic_filter, old in list(session.scopes.items()):
        if only_dynamic and not old.dynamic:
            continue
        scope = compiler.compile(identity, topic_filter)
        if scope != old:
            changed = True
        session.scopes[topic_filter] = scope
        if scope.empty:
            empty.append(topic_filter)
    for topic_filter in session.subscriptions:
        if topic_filter not in session.scopes:
            scope = session.scopes[topic_filter] = compiler.compile(identity, topic_filter)
            changed = True
            if scope.empty:
                empty.append(topic_filter)
    _mark(session)
    return empty, changed


def users_sessions(sessions: Collection[Session], users: Collection[str]) -> list[Session]:
    """The sessions (with an identity) of `users`."""
    wanted = set(users)
    return [s for s in sessions if s.identity is not None and s.identity.user in wanted]
