"""Keeping a running broker in step with the access policy in storage.

`mqim acl ...`, `mqim role ...` and `mqim user disable` run in other processes and only write
storage. `PolicySource` reads what changed since the last look (cheap when nothing did: one
counter read and one change-log query), and the broker applies it:

- ACL rules and roles (`acl_version` moved): the engine gets the new rules (`set_rules` clears
  its cache), every session's identity gets its user's current roles, and each connected
  session's receive scopes are compiled again (`Hub.refresh_scopes`): a scope that shrank stops
  delivering what the revoked right covered at once (live, retained, queued), and a connected
  session's subscription whose scope is now empty is removed.
- Accounts (the change log moved): a disabled or removed account's connections are closed, and
  the account is refused if an authentication that started before the change finishes after it.

The functions that decide are synchronous and pure over their arguments; only `PolicySource`
awaits storage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from mqim.acl import AclEngine, Action, Identity, InvalidRule, Rule, parse_rule
from mqim.broker._shared_subs import acl_filter
from mqim.storage import AclRuleRecord, RoleRecord, Storage

log = logging.getLogger("mqim.broker.policy")

MAX_CHANGE_PAGES = 10
"""Pages of the account change log read per poll (the rest waits for the next poll)."""

CHANGE_PAGE = 1000
"""Account changes read per page."""


def rule_label(record: AclRuleRecord) -> str:
    """The name a stored rule is reported under: its own name, else `#<id>`."""
    return record.name or f"#{record.rule_id}"


def stored_rules(records: Iterable[AclRuleRecord]) -> list[Rule]:
    """Parse stored rules, in order, each named by `rule_label`.

    Raises:
        InvalidRule: For the first rule that does not parse (its label is in the message).
    """
    rules: list[Rule] = []
    for record in records:
        try:
            rules.append(parse_rule(record.text, name=rule_label(record)))
        except InvalidRule as exc:
            raise InvalidRule(f"stored ACL rule {rule_label(record)}: {exc}") from exc
    return rules


def role_map(roles: Iterable[RoleRecord]) -> dict[str, frozenset[str]]:
    """user -> the roles it holds."""
    held: dict[str, set[str]] = {}
    for role in roles:
        for user in role.members:
            held.setdefault(user, set()).add(role.name)
    return {user: frozenset(names) for user, names in held.items()}


def with_roles(identity: Identity, roles: dict[str, frozenset[str]]) -> Identity:
    """`identity` carrying its user's current roles (the same object when unchanged)."""
    current = roles.get(identity.user, frozenset())
    return identity if identity.roles == current else replace(identity, roles=current)


def denied_subscriptions(acl: AclEngine, identity: Identity, filters: Iterable[str]) -> list[str]:
    """The filters `identity` may no longer subscribe to."""
    return [f for f in filters if not acl.allowed(identity, Action.SUBSCRIBE, acl_filter(f))]


@dataclass(frozen=True, slots=True, kw_only=True)
class AclUpdate:
    """New rules and roles read from storage."""

    version: int
    rules: list[Rule]
    roles: dict[str, frozenset[str]]


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountUpdate:
    """Accounts whose state the broker must re-check.

    Attributes:
        blocked: Accounts now disabled or removed: close their connections, refuse them.
        allowed: Accounts now enabled (or re-created): no longer refused.
        resync: The change log lost entries: every connected account was re-checked.
    """

    blocked: frozenset[str] = frozenset()
    allowed: frozenset[str] = frozenset()
    resync: bool = False


class PolicySource:
    """Reads rule, role and account changes from storage, remembering what it has seen.

    Args:
        storage: Where `mqim acl|role|user` write.
    """

    def __init__(self, *, storage: Storage) -> None:
        self.storage = storage
        self.acl_version: int | None = None
        self.user_rev: int | None = None

    async def acl_update(self, *, force: bool = False) -> AclUpdate | None:
        """New rules and roles if `acl_version` moved (or `force`), else None.

        Raises:
            InvalidRule: A stored rule does not parse; the version is still marked as seen, so
                the error is reported once per change (the caller keeps its previous rules).
        """
        version = await self.storage.acl_version()
        if version == self.acl_version and not force:
            return None
        # Read after the version: a change in between is seen again at the next poll.
        records = await self.storage.list_acl_rules()
        roles = await self.storage.list_roles()
        self.acl_version = version
        return AclUpdate(version=version, rules=stored_rules(records), roles=role_map(roles))

    async def account_update(self, connected: Sequence[str]) -> AccountUpdate:
        """Accounts changed since the last call; `connected` is re-checked if the log lost entries."""
        storage = self.storage
        if self.user_rev is None:
            # First look: nothing connected yet was admitted under an older state.
            self.user_rev = (await storage.user_changes(None)).rev
            return AccountUpdate()
        changed: dict[str, None] = {}
        resync = False
        for _ in range(MAX_CHANGE_PAGES):
            changes = await storage.user_changes(self.user_rev, limit=CHANGE_PAGE)
            if not changes.complete:
                resync = True
            changed.update(dict.fromkeys(changes.users))
            moved = changes.rev != self.user_rev
            self.user_rev = changes.rev
            if not moved or not changes.users:
                break
        if resync:
            log.warning("account change log was pruned past our position: re-checking connected users")
            changed.update(dict.fromkeys(connected))
        blocked: set[str] = set()
        allowed: set[str] = set()
        for user in changed:
            record = await storage.get_user(user)
            (blocked if record is None or record.disabled else allowed).add(user)
        return AccountUpdate(blocked=frozenset(blocked), allowed=frozenset(allowed), resync=resync)
