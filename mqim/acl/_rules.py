"""The rule model: actions, effects, subjects, identities and rules with placeholder patterns.

A `Rule` says that an effect (allow or deny) applies to some actions on a topic pattern for a
subject. The pattern is an MQTT topic filter that may contain the placeholders `%u` (the
identity's user name) and `%c` (its client id); a placeholder must fill a whole level
(`im/v1/up/%u/+` is fine, `foo%u` is rejected). Any other `%` in a pattern is rejected too, so
a pattern never means something other than what it looks like.

Expansion never widens a grant: if the value is empty or contains `+`, `#`, `/`, `$` or NUL,
an *allow* rule with that placeholder does not apply to the identity. A *deny* rule in the same
situation applies as if the placeholder were `+` (it denies what it would deny for any user), so
an odd name never escapes a denial either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, get_args

from mqim.acl._exceptions import InvalidIdentity, InvalidRule
from mqim.acl._matcher import SHARE_PREFIX, parse_filter

IdentityKind = Literal["user", "service", "bridge", "admin"]
"""What a connection is: an IM user, a logic worker, an inbound bridge or an administrator."""

IDENTITY_KINDS: frozenset[str] = frozenset(get_args(IdentityKind))

PLACEHOLDERS = {"%u": "u", "%c": "c"}

MAX_SUBJECT_NAME = 256
"""The longest user or role name a subject may carry."""

_UNSAFE = ("+", "#", "/", "$", "\0")


class Action(StrEnum):
    """What an identity wants to do with a topic."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    RECEIVE = "receive"


class Effect(StrEnum):
    """What a rule does when it applies."""

    ALLOW = "allow"
    DENY = "deny"


class SubjectKind(StrEnum):
    """Who a rule is about."""

    USER = "user"
    ROLE = "role"
    ALL = "all"


def _check_subject_name(name: str) -> None:
    if not isinstance(name, str) or name == "":
        raise InvalidRule("a user or role subject needs a non-empty name")
    if len(name) > MAX_SUBJECT_NAME:
        raise InvalidRule(f"subject name longer than {MAX_SUBJECT_NAME} characters")
    if "\0" in name or any(ch.isspace() for ch in name):
        raise InvalidRule(f"subject name {name!r} contains whitespace or NUL")


@dataclass(frozen=True, kw_only=True, slots=True)
class Subject:
    """Who a rule applies to: one user, every holder of a role, or everyone.

    Args:
        kind: USER, ROLE or ALL.
        name: The user or role name; empty for ALL.
    """

    kind: SubjectKind
    name: str = ""

    def __post_init__(self) -> None:
        try:
            kind = SubjectKind(self.kind)
        except ValueError:
            raise InvalidRule(f"unknown subject kind {self.kind!r}") from None
        object.__setattr__(self, "kind", kind)
        if kind is SubjectKind.ALL:
            if self.name != "":
                raise InvalidRule("the 'all' subject takes no name")
        else:
            _check_subject_name(self.name)

    @classmethod
    def for_user(cls, name: str) -> Subject:
        """Return the subject naming one user."""
        return cls(kind=SubjectKind.USER, name=name)

    @classmethod
    def for_role(cls, name: str) -> Subject:
        """Return the subject naming every identity that holds role `name`."""
        return cls(kind=SubjectKind.ROLE, name=name)

    @classmethod
    def everyone(cls) -> Subject:
        """Return the subject that applies to every identity."""
        return cls(kind=SubjectKind.ALL)

    def applies_to(self, identity: Identity) -> bool:
        """Return True if `identity` is covered by this subject."""
        if self.kind is SubjectKind.ALL:
            return True
        if self.kind is SubjectKind.USER:
            return identity.user == self.name
        return self.name in identity.roles

    def __str__(self) -> str:
        return "all" if self.kind is SubjectKind.ALL else f"{self.kind.value}:{self.name}"


EVERYONE = Subject(kind=SubjectKind.ALL)


@dataclass(frozen=True, kw_only=True)
class Identity:
    """Who is asking: the authenticated connection as the ACL sees it.

    Identities are cache keys, so they are immutable and their hash is computed once.

    Args:
        user: The authenticated user name (for a bridge, its account name).
        client_id: The MQTT client id of the connection.
        kind: "user", "service", "bridge" or "admin"; selects the built-in rules.
        roles: Role names that `role:` subjects refer to.
    """

    user: str
    client_id: str = ""
    kind: IdentityKind = "user"
    roles: frozenset[str] = frozenset()
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.user, str) or not isinstance(self.client_id, str):
            raise InvalidIdentity("user and client_id must be strings")
        if self.kind not in IDENTITY_KINDS:
            raise InvalidIdentity(
                f"unknown identity kind {self.kind!r}; expected one of {sorted(IDENTITY_KINDS)}"
            )
        if not isinstance(self.roles, frozenset):
            if isinstance(self.roles, str):
                raise InvalidIdentity("roles must be a collection of names, not a string")
            object.__setattr__(self, "roles", frozenset(self.roles))
        object.__setattr__(self, "_hash", hash((self.user, self.client_id, self.kind, self.roles)))

    def __hash__(self) -> int:
        return self._hash


def placeholder_value(value: str) -> str | None:
    """Return `value` if it may fill a pattern level, else None (empty or wildcard-like)."""
    if value == "" or any(ch in value for ch in _UNSAFE):
        return None
    return value


@dataclass(frozen=True, slots=True)
class CompiledPattern:
    """A rule pattern split into levels, with the positions of its placeholders.

    Attributes:
        share: None for a plain pattern; `+` (any group) or a group name for `$share/...`.
        levels: The levels of the (inner) filter, placeholders kept as `%u` / `%c`.
        placeholders: `(index, "u" | "c")` for each placeholder level.
    """

    share: str | None
    levels: tuple[str, ...]
    placeholders: tuple[tuple[int, str], ...]

    def expand(self, identity: Identity, *, widen: bool) -> tuple[str, ...] | None:
        """Return the levels with placeholders filled in for `identity`.

        Args:
            identity: Whose user name and client id fill the placeholders.
            widen: What to do with a value that may not fill a level: True puts `+` there
                (for deny rules), False returns None, meaning the rule does not apply.
        """
        if not self.placeholders:
            return self.levels
        levels = list(self.levels)
        for index, which in self.placeholders:
            value = placeholder_value(identity.user if which == "u" else identity.client_id)
            if value is None:
                if not widen:
                    return None
                value = "+"
            levels[index] = value
        return tuple(levels)


def compile_pattern(pattern: str) -> CompiledPattern:
    """Validate a rule pattern and split it.

    Raises:
        InvalidRule: When the pattern is not a valid filter once placeholders are filled, when
            a placeholder does not fill a whole level, or when it contains any other `%`.
    """
    if not isinstance(pattern, str) or pattern == "":
        raise InvalidRule("a rule needs a non-empty pattern")
    share: str | None = None
    inner = pattern
    if pattern.startswith(SHARE_PREFIX):
        parts = pattern.split("/", 2)
        if len(parts) < 3 or parts[2] == "":
            raise InvalidRule(f"pattern {pattern!r}: $share/{{group}}/{{filter}} needs a filter")
        share, inner = parts[1], parts[2]
        if share != "+" and (share == "" or "#" in share or "+" in share or "%" in share):
            raise InvalidRule(f"pattern {pattern!r}: the share group must be a name or '+'")
    levels = inner.split("/")
    placeholders: list[tuple[int, str]] = []
    probe = list(levels)
    for index, level in enumerate(levels):
        if "%" not in level:
            continue
        which = PLACEHOLDERS.get(level)
        if which is None:
            raise InvalidRule(
                f"pattern {pattern!r}: level {level!r} must be exactly %u or %c "
                "(a placeholder fills a whole level; no other '%' is allowed)"
            )
        placeholders.append((index, which))
        probe[index] = "x"
    if parse_filter("/".join(probe)) is None:
        raise InvalidRule(
            f"pattern {pattern!r} is not a valid topic filter ('#' only as the whole last level, "
            "'+' only as a whole level, no NUL)"
        )
    return CompiledPattern(share, tuple(levels), tuple(placeholders))


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One ACL rule.

    Args:
        effect: ALLOW or DENY.
        actions: The actions it covers (non-empty).
        pattern: A topic filter, possibly with `%u` / `%c` levels, possibly `$share/{g}/...`
            (where `{g}` may be `+` for any group). Share patterns cover SUBSCRIBE (of shared
            subscriptions only) and RECEIVE; they cannot cover PUBLISH.
        subject: Who it applies to; everyone by default.
        name: A short name for decisions and logs; the rule text is used when empty.
        description: Free text for humans.

    Raises:
        InvalidRule: On an empty action set, a bad pattern, or a share pattern with PUBLISH.
    """

    effect: Effect
    actions: frozenset[Action]
    pattern: str
    subject: Subject = EVERYONE
    name: str = ""
    description: str = ""
    compiled: CompiledPattern = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        try:
            effect = Effect(self.effect)
        except ValueError:
            raise InvalidRule(f"unknown effect {self.effect!r}; expected allow or deny") from None
        if isinstance(self.actions, str):
            raise InvalidRule("actions must be a collection of actions, not a string")
        try:
            actions = frozenset(Action(action) for action in self.actions)
        except ValueError as exc:
            raise InvalidRule(f"unknown action in {sorted(self.actions)!r}") from exc
        if not actions:
            raise InvalidRule("a rule needs at least one action")
        if not isinstance(self.subject, Subject):
            raise InvalidRule("subject must be a Subject")
        if not isinstance(self.name, str) or not isinstance(self.description, str):
            raise InvalidRule("name and description must be strings")
        compiled = compile_pattern(self.pattern)
        if compiled.share is not None and Action.PUBLISH in actions:
            raise InvalidRule(f"pattern {self.pattern!r}: a $share pattern cannot cover publish")
        object.__setattr__(self, "effect", effect)
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "compiled", compiled)
