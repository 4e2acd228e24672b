"""The ACL engine: decides whether an identity may publish, subscribe or receive.

Semantics of `AclEngine.decide(identity, action, topic_or_filter)`, in order:

1. An invalid request is denied: PUBLISH and RECEIVE need a valid topic name, SUBSCRIBE a valid
   topic filter (`$share/{group}/{filter}` included).
2. Explicit deny wins: every deny rule that applies to the identity and the action is checked,
   configured rules first, then the built-in ones (the `im/v1/` lock for users). A deny rule
   denies a topic its pattern matches, and a subscription whose filter *intersects* its pattern
   (the subscription could deliver a denied topic).
3. Otherwise the first allow rule, configured rules in order, then the built-in ones for the
   identity's kind, that grants the request allows it. For PUBLISH and RECEIVE the rule's pattern
   must match the topic; for SUBSCRIBE the requested filter must be a *subset* of the pattern
   (`a/+` does not grant `a/#`). A shared subscription is granted only by a `$share/...`
   pattern whose group is `+` or the same name: joining a share group takes messages away from
   its other members, which a plain grant does not allow.
4. Otherwise: denied ("default-deny").

`%u`/`%c` placeholders and their safety rules are described in `_rules`. The decision names the
deciding rule (its `name`, else its text; built-ins are `builtin:...`) and says why.

Decisions are cached in a bounded LRU keyed by (identity, action, topic). Requests longer than
`MAX_CACHED_TOPIC_LENGTH` characters are decided but not cached, so the cache's memory stays
bounded by `cache_size` times that length whatever clients send. Decisions that consulted the
membership lookup are cached only if the lookup reports its changes (`ObservableMembership`,
e.g. `MembershipIndex`); the engine listens and drops the affected users' entries on every change,
so a removed member is denied on the next check. `set_rules` and `invalidate` clear the cache.

The engine is synchronous, does no I/O and is not thread-safe: use it from one thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cachetools import LRUCache

from mqim.acl._builtin import BUILTIN_CHECKS
from mqim.acl._checks import Check, Request, StaticCheck
from mqim.acl._membership import MembershipLookup, ObservableMembership
from mqim.acl._rules import Action, Effect, Identity, Rule

MAX_CACHED_TOPIC_LENGTH = 512
"""Requests longer than this (in characters) are never cached."""

DEFAULT_DENY = "default-deny"
INVALID_REQUEST = "invalid"

_CacheKey = tuple[Identity, Action, str]


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """The answer to one request.

    The explanation is built when asked for (`reason`), not stored: every cached decision
    would otherwise carry its own formatted sentence, and the cache holds thousands.

    Attributes:
        allowed: Whether the request is allowed.
        rule: The deciding rule's name, `DEFAULT_DENY` ("default-deny") or `INVALID_REQUEST`
            ("invalid").
        action: The action asked about.
        text: The topic name or filter asked about.
    """

    allowed: bool
    rule: str
    action: Action
    text: str
    check: Check | None = field(default=None, repr=False, compare=False)

    @property
    def reason(self) -> str:
        """A human-readable explanation."""
        if self.check is not None:
            request = Request.parse(self.action, self.text)
            assert request is not None  # a check only hits a valid request
            return self.check.reason(request)
        if self.rule == INVALID_REQUEST:
            what = "topic filter" if self.action is Action.SUBSCRIBE else "topic name"
            return f"invalid {what} {self.text!r}"
        return f"no rule grants {self.action.value} on {self.text!r}"


class _Probe:
    """A membership lookup that remembers whether it was asked anything."""

    __slots__ = ("_inner", "used")

    def __init__(self, inner: MembershipLookup) -> None:
        self._inner = inner
        self.used = False

    def is_member(self, user: str, group: str) -> bool:
        self.used = True
        return self._inner.is_member(user, group)

    def shares_conversation(self, user: str, other: str) -> bool:
        self.used = True
        return self._inner.shares_conversation(user, other)


def _split(checks: Iterable[Check]) -> tuple[tuple[Check, ...], tuple[Check, ...]]:
    checks = tuple(checks)
    return (
        tuple(check for check in checks if check.effect is Effect.DENY),
        tuple(check for check in checks if check.effect is Effect.ALLOW),
    )


class AclEngine:
    """Decides ACL requests from configured rules, built-in rules and group membership.

    Args:
        rules: Configured rules, evaluated before the built-ins, in order.
        membership: Answers group membership and shared-conversation questions.
        builtin: Whether to apply the built-in v1 rules (see `_builtin`).
        cache_size: Maximum number of cached decisions; 0 disables the cache.

    Raises:
        ValueError: On a negative cache size.
        TypeError: When `rules` holds something other than `Rule` objects.
    """

    def __init__(
        self,
        *,
        rules: Sequence[Rule] = (),
        membership: MembershipLookup,
        builtin: bool = True,
        cache_size: int = 65536,
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._membership = membership
        self._builtin = builtin
        self._cache_size = cache_size
        self._cache: LRUCache[_CacheKey, Decision] = LRUCache(maxsize=cache_size)
        self._by_user: dict[str, set[_CacheKey]] = {}
        self._rules: tuple[Rule, ...] = ()
        self._denies: tuple[Check, ...] = ()
        self._allows: tuple[Check, ...] = ()
        self._builtin_split: dict[str, tuple[tuple[Check, ...], tuple[Check, ...]]] = {
            kind: _split(checks) if builtin else ((), ()) for kind, checks in BUILTIN_CHECKS.items()
        }
        self._observed = isinstance(membership, ObservableMembership)
        if isinstance(membership, ObservableMembership):
            membership.add_listener(self._on_membership_change)
        self.set_rules(rules)

    # -- configuration -----------------------------------------------------------------------

    @property
    def membership(self) -> MembershipLookup:
        """The membership lookup the engine decides with (receive scopes must use the same)."""
        return self._membership

    @property
    def builtin(self) -> bool:
        """Whether the built-in v1 rules apply."""
        return self._builtin

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The configured rules, in evaluation order."""
        return self._rules

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Replace the configured rules and drop every cached decision."""
        rules = tuple(rules)
        for rule in rules:
            if not isinstance(rule, Rule):
                raise TypeError(f"expected Rule, got {type(rule).__name__}")
        self._rules = rules
        self._denies, self._allows = _split(StaticCheck(rule=rule) for rule in rules)
        self.invalidate()

    def close(self) -> None:
        """Stop listening to the membership lookup. Later decisions are no longer cached."""
        if isinstance(self._membership, ObservableMembership) and self._observed:
            self._membership.remove_listener(self._on_membership_change)
        self._observed = False
        self.invalidate()

    # -- cache -------------------------------------------------------------------------------

    @property
    def cache_len(self) -> int:
        """The number of cached decisions."""
        return len(self._cache)

    def invalidate(self) -> None:
        """Drop every cached decision."""
        self._cache.clear()
        self._by_user.clear()

    def invalidate_user(self, user: str) -> None:
        """Drop the cached decisions of every identity with user name `user`."""
        keys = self._by_user.pop(user, None)
        if keys is None:
            return
        cache = self._cache
        for key in keys:
            cache.pop(key, None)

    def _on_membership_change(self, users: frozenset[str]) -> None:
        for user in users:
            self.invalidate_user(user)

    def _store(self, key: _CacheKey, decision: Decision) -> None:
        cache = self._cache
        if len(cache) >= self._cache_size:
            # Full: the least recently used decision leaves, and its entry in the user index.
            old, _ = cache.popitem()
            keys = self._by_user.get(old[0].user)
            if keys is not None:
                keys.discard(old)
                if not keys:
                    del self._by_user[old[0].user]
        cache[key] = decision
        self._by_user.setdefault(key[0].user, set()).add(key)

    # -- decisions ---------------------------------------------------------------------------

    def allowed(self, identity: Identity, action: Action, topic: str) -> bool:
        """Return whether `identity` may perform `action` on `topic` (a filter for SUBSCRIBE)."""
        key = (identity, action, topic)
        try:
            return self._cache[key].allowed  # a hit is a use: the entry becomes the most recent
        except KeyError:
            return self._decide_and_store(key).allowed

    def decide(self, identity: Identity, action: Action, topic_or_filter: str) -> Decision:
        """Decide a request and explain the decision (see the module docstring for the rules).

        Args:
            identity: Who asks.
            action: PUBLISH or RECEIVE (with a topic name) or SUBSCRIBE (with a filter).
            topic_or_filter: The topic name, or the topic filter for SUBSCRIBE.
        """
        key = (identity, action, topic_or_filter)
        try:
            return self._cache[key]  # a hit is a use: the entry becomes the most recent
        except KeyError:
            return self._decide_and_store(key)

    def _decide_and_store(self, key: _CacheKey) -> Decision:
        identity, action, text = key
        decision, dynamic = self._evaluate(identity, Action(action), text)
        if self._cache_size and len(text) <= MAX_CACHED_TOPIC_LENGTH and (self._observed or not dynamic):
            self._store(key, decision)
        return decision

    def _evaluate(self, identity: Identity, action: Action, text: str) -> tuple[Decision, bool]:
        request = Request.parse(action, text)
        if request is None:
            return Decision(allowed=False, rule=INVALID_REQUEST, action=action, text=text), False
        probe = _Probe(self._membership)
        builtin_denies, builtin_allows = self._builtin_split[identity.kind]
        for checks in (self._denies, builtin_denies, self._allows, builtin_allows):
            hit = _first_hit(checks, identity, request, probe)
            if hit is not None:
                allowed = hit.effect is Effect.ALLOW
                decision = Decision(allowed=allowed, rule=hit.label, action=action, text=text, check=hit)
                return decision, probe.used
        return Decision(allowed=False, rule=DEFAULT_DENY, action=action, text=text), probe.used


def _first_hit(
    checks: tuple[Check, ...], identity: Identity, request: Request, membership: MembershipLookup
) -> Check | None:
    action = request.action
    for check in checks:
        if (
            action in check.actions
            and check.applies_to(identity)
            and check.hits(identity, request, membership)
        ):
            return check
    return None
