"""The evaluable form of rules: what the engine runs for each request.

A `Check` is either a compiled user/builtin `Rule` (`StaticCheck`) or one of the small dynamic
checks of `_builtin` that consult the membership lookup. For an allow check, `hits` means "grants
this request"; for a deny check, "denies this request".
"""

from __future__ import annotations

from dataclasses import dataclass

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
from mqim.acl._syntax import format_rule


@dataclass(frozen=True, slots=True)
class Request:
    """A validated request: a topic name (publish, receive) or a filter (subscribe), split.

    Attributes:
        action: What is asked.
        text: The topic or filter as given.
        share: The share group of a `$share/...` subscription, else None.
        levels: The levels of the topic, or of the (inner) filter.
    """

    action: Action
    text: str
    share: str | None
    levels: tuple[str, ...]

    @classmethod
    def parse(cls, action: Action, text: str) -> Request | None:
        """Return the request, or None when `text` is not a valid topic/filter for `action`."""
        if action is Action.SUBSCRIBE:
            parsed = parse_filter(text)
            if parsed is None:
                return None
            return cls(action, text, parsed[0], parsed[1])
        if not is_valid_topic(text):
            return None
        return cls(action, text, None, tuple(text.split("/")))


class Check:
    """Base of everything the engine evaluates.

    Attributes:
        label: The name reported in decisions.
        effect: ALLOW or DENY.
        actions: The actions it may apply to.
    """

    label: str
    effect: Effect
    actions: frozenset[Action]

    def applies_to(self, identity: Identity) -> bool:
        """Return True if this check is about `identity` at all."""
        return True

    def hits(self, identity: Identity, request: Request, membership: MembershipLookup) -> bool:
        """Return True if this check grants (allow) or denies (deny) `request`."""
        raise NotImplementedError

    def reason(self, request: Request) -> str:
        """Explain a hit, for the decision."""
        verb = "grants" if self.effect is Effect.ALLOW else "denies"
        return f"{self.effect.value} rule {self.label} {verb} {request.action.value} on {request.text!r}"

    def summary(self) -> str:
        """Describe the check in one line, for listings."""
        return self.label


class StaticCheck(Check):
    """A `Rule`, ready to evaluate.

    Allow rules grant a topic their filter matches, or a subscription whose filter is a subset
    of theirs (a share pattern only grants share subscriptions, of a matching group). Deny rules
    deny a topic their filter matches, or a subscription whose filter intersects theirs (a plain
    deny also denies share subscriptions; a share deny only share subscriptions). A pattern's
    leading `+`/`#` also covers `$` topics other than `$SYS/...` (see `rule_levels`).
    """

    def __init__(self, *, rule: Rule) -> None:
        self.rule = rule
        self.label = rule.name or format_rule(rule)
        self.effect = rule.effect
        self.actions = rule.actions

    def applies_to(self, identity: Identity) -> bool:
        """Return True if the rule's subject covers `identity`."""
        return self.rule.subject.applies_to(identity)

    def hits(self, identity: Identity, request: Request, membership: MembershipLookup) -> bool:
        """Return True if the rule grants (allow) or denies (deny) `request` for `identity`."""
        pattern = self.rule.compiled
        deny = self.effect is Effect.DENY
        expanded = pattern.expand(identity, widen=deny)
        if expanded is None:
            return False
        # A leading wildcard of a rule also covers `$` topics other than `$SYS` (`rule_levels`).
        levels = rule_levels(expanded, request.levels[0])
        if request.action is not Action.SUBSCRIBE:
            return match_levels(levels, request.levels)
        if pattern.share is not None:
            if request.share is None or (pattern.share != "+" and pattern.share != request.share):
                return False
        elif not deny and request.share is not None:
            # Joining a share group diverts messages from its other members: a separate grant.
            return False
        if deny:
            return intersect_levels(levels, request.levels)
        return subset_levels(request.levels, levels)

    def reason(self, request: Request) -> str:
        """Explain a hit, naming the pattern."""
        if self.effect is Effect.ALLOW:
            how = "covers" if request.action is Action.SUBSCRIBE else "matches"
            return f"allow rule {self.label}: {self.rule.pattern!r} {how} {request.text!r}"
        how = "overlaps" if request.action is Action.SUBSCRIBE else "matches"
        return f"deny rule {self.label}: {self.rule.pattern!r} {how} {request.text!r}"

    def summary(self) -> str:
        """Return the rule text and its name."""
        text = format_rule(self.rule)
        return text if text == self.label else f"{text}  ({self.label})"
