"""The built-in rules: the v1 topic table (README, "Topics (v1)"), per identity kind.

kind `user` (an IM user; `%u` is its user name):

- allow publish `im/v1/up/%u/+` (its own requests);
- allow subscribe, receive `im/v1/u/%u/#` (its own inbox, or any narrower filter);
- allow subscribe, receive `im/v1/g/{group}/#` (or narrower) while it is a member of `group`;
- allow subscribe, receive `im/v1/presence/{other}` when `other` is itself or shares a
  conversation (direct or group) with it;
- deny everything else under `im/v1/` (the *lock*): in that namespace only the rules above grant,
  whatever the configured rules say, so no configuration mistake lets a user publish as someone
  else or read another user's inbox. A subscription that overlaps `im/v1/` without being inside
  one of the grants above (`#`, `im/v1/#`, `im/v1/u/+/msg`...) is denied.

kind `service` (logic workers): publish `im/v1/u/#`, `im/v1/g/#`, `im/v1/presence/#`; subscribe
and receive `im/v1/up/#` and the shared `$share/+/im/v1/up/#`.

kind `bridge` (an inbound bridge; `%u` is its account): publish, subscribe, receive `bridge/%u/#`.

kind `admin`: everything, including `$` topics and shared subscriptions.

The membership-based grants are dynamic: the decision depends on the lookup's current answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from mqim.acl._checks import Check, Request, StaticCheck
from mqim.acl._matcher import intersect_levels, match_levels, subset_levels
from mqim.acl._membership import MembershipLookup
from mqim.acl._rules import Action, Effect, Identity, IdentityKind, Rule, placeholder_value
from mqim.protocol import PREFIX, Channel

_ALL_ACTIONS = frozenset(Action)
_READ = frozenset({Action.SUBSCRIBE, Action.RECEIVE})
_NAMESPACE = (*PREFIX.split("/"), "#")

OwnerPredicate = Callable[[Identity, str, MembershipLookup], bool]


def _rule(name: str, actions: frozenset[Action], pattern: str, description: str) -> StaticCheck:
    return StaticCheck(
        rule=Rule(
            effect=Effect.ALLOW,
            actions=actions,
            pattern=pattern,
            name=f"builtin:{name}",
            description=description,
        )
    )


class OwnerCheck(Check):
    """Allow `{prefix}/{owner}/{tail}` when a membership predicate holds for the owner level.

    PUBLISH/RECEIVE: the topic must match the pattern with its own owner level. SUBSCRIBE: the
    filter's owner level must be a literal (a wildcard spans owners the predicate cannot vouch
    for) and the filter must be a subset of the pattern for that owner. Share subscriptions are
    never granted.
    """

    def __init__(
        self,
        *,
        label: str,
        actions: frozenset[Action],
        prefix: tuple[str, ...],
        tail: tuple[str, ...],
        predicate: OwnerPredicate,
        text: str,
    ) -> None:
        self.label = label
        self.effect = Effect.ALLOW
        self.actions = actions
        self._prefix = prefix
        self._owner_index = len(prefix)
        self._tail = tail
        self._predicate = predicate
        self._text = text

    def applies_to(self, identity: Identity) -> bool:
        """Apply only to identities whose user name could be a topic level."""
        return placeholder_value(identity.user) is not None

    def hits(self, identity: Identity, request: Request, membership: MembershipLookup) -> bool:
        """Return True if `request` falls inside the pattern for an owner the predicate accepts."""
        levels = request.levels
        index = self._owner_index
        if len(levels) <= index or levels[:index] != self._prefix:
            return False
        owner = levels[index]
        if request.action is Action.SUBSCRIBE:
            if request.share is not None or owner == "+" or owner == "#":
                return False
            if not subset_levels(levels, (*self._prefix, owner, *self._tail)):
                return False
        elif not match_levels((*self._prefix, owner, *self._tail), levels):
            return False
        return self._predicate(identity, owner, membership)

    def reason(self, request: Request) -> str:
        """Explain the grant."""
        return f"allow rule {self.label}: {request.text!r} is inside {self._text}"

    def summary(self) -> str:
        """Describe the check."""
        actions = ",".join(action.value for action in Action if action in self.actions)
        return f"allow {actions} {self._text}  ({self.label})"


class NamespaceLock(Check):
    """Deny anything in a namespace that none of a fixed set of grants allows by itself.

    PUBLISH/RECEIVE: a topic inside the namespace is denied unless a grant matches it.
    SUBSCRIBE: a filter overlapping the namespace is denied unless a single grant covers it.
    """

    def __init__(self, *, label: str, namespace: tuple[str, ...], grants: tuple[Check, ...]) -> None:
        self.label = label
        self.effect = Effect.DENY
        self.actions = _ALL_ACTIONS
        self._namespace = namespace
        self._grants = grants

    def hits(self, identity: Identity, request: Request, membership: MembershipLookup) -> bool:
        """Return True if `request` touches the namespace and no grant allows it."""
        if request.action is Action.SUBSCRIBE:
            if not intersect_levels(self._namespace, request.levels):
                return False
        elif not match_levels(self._namespace, request.levels):
            return False
        for grant in self._grants:
            if (
                request.action in grant.actions
                and grant.applies_to(identity)
                and grant.hits(identity, request, membership)
            ):
                return False
        return True

    def reason(self, request: Request) -> str:
        """Explain the denial."""
        namespace = "/".join(self._namespace)
        return (
            f"deny rule {self.label}: {request.text!r} reaches {namespace} beyond what the "
            f"built-in rules grant this identity ({request.action.value})"
        )

    def summary(self) -> str:
        """Describe the check."""
        namespace = "/".join(self._namespace)
        return f"deny publish,subscribe,receive {namespace} unless a grant below allows it  ({self.label})"


class AllowEverything(Check):
    """Grant every valid request."""

    def __init__(self, *, label: str) -> None:
        self.label = label
        self.effect = Effect.ALLOW
        self.actions = _ALL_ACTIONS

    def hits(self, identity: Identity, request: Request, membership: MembershipLookup) -> bool:
        """Grant."""
        return True

    def reason(self, request: Request) -> str:
        """Explain the grant."""
        return f"allow rule {self.label}: administrators may {request.action.value} anything"

    def summary(self) -> str:
        """Describe the check."""
        return f"allow publish,subscribe,receive everything  ({self.label})"


def _is_member(identity: Identity, group: str, membership: MembershipLookup) -> bool:
    return membership.is_member(identity.user, group)


def _sees_presence(identity: Identity, other: str, membership: MembershipLookup) -> bool:
    return other == identity.user or membership.shares_conversation(identity.user, other)


def _user_checks() -> tuple[Check, ...]:
    grants: tuple[Check, ...] = (
        _rule(
            "user-up",
            frozenset({Action.PUBLISH}),
            f"{PREFIX}/{Channel.UP.value}/%u/+",
            "a user publishes its own requests",
        ),
        _rule(
            "user-inbox",
            _READ,
            f"{PREFIX}/{Channel.INBOX.value}/%u/#",
            "a user reads its own inbox",
        ),
        OwnerCheck(
            label="builtin:user-group",
            actions=_READ,
            prefix=(*PREFIX.split("/"), Channel.GROUP.value),
            tail=("#",),
            predicate=_is_member,
            text=f"{PREFIX}/{Channel.GROUP.value}/{{group}}/# while a member of {{group}}",
        ),
        OwnerCheck(
            label="builtin:user-presence",
            actions=_READ,
            prefix=(*PREFIX.split("/"), Channel.PRESENCE.value),
            tail=(),
            predicate=_sees_presence,
            text=(
                f"{PREFIX}/{Channel.PRESENCE.value}/{{other}} "
                "for itself or a user it shares a conversation with"
            ),
        ),
    )
    lock = NamespaceLock(label="builtin:user-lock", namespace=_NAMESPACE, grants=grants)
    return (lock, *grants)


def _service_checks() -> tuple[Check, ...]:
    return (
        _rule("service-inbox", frozenset({Action.PUBLISH}), f"{PREFIX}/u/#", "logic answers users"),
        _rule("service-group", frozenset({Action.PUBLISH}), f"{PREFIX}/g/#", "logic fans out to groups"),
        _rule(
            "service-presence",
            frozenset({Action.PUBLISH}),
            f"{PREFIX}/presence/#",
            "logic may publish presence",
        ),
        _rule("service-up", _READ, f"{PREFIX}/up/#", "logic reads user requests"),
        _rule(
            "service-up-shared",
            _READ,
            f"$share/+/{PREFIX}/up/#",
            "logic workers share the user requests",
        ),
    )


def _bridge_checks() -> tuple[Check, ...]:
    return (_rule("bridge", _ALL_ACTIONS, "bridge/%u/#", "a bridge stays in its own namespace"),)


def _admin_checks() -> tuple[Check, ...]:
    return (AllowEverything(label="builtin:admin"),)


BUILTIN_CHECKS: Mapping[IdentityKind, tuple[Check, ...]] = {
    "user": _user_checks(),
    "service": _service_checks(),
    "bridge": _bridge_checks(),
    "admin": _admin_checks(),
}


def describe_builtins() -> list[str]:
    """Return one line per built-in rule, prefixed by the identity kind it applies to."""
    return [f"{kind}: {check.summary()}" for kind, checks in BUILTIN_CHECKS.items() for check in checks]
