"""Who belongs to which group and who talks to whom, as the ACL needs to know it.

The engine asks two synchronous questions through `MembershipLookup`. `MembershipIndex` is the
in-memory answer: the broker or the logic service fills it from storage at start-up and keeps it
current as groups and contacts change. Every change that alters an answer is reported to
listeners with the set of affected users, which is how the engine drops cached decisions at once
(a removed member is denied on the very next check).

Bounds: the index mirrors storage and holds exactly what storage holds, so its size is bounded
by storage's own enforced limits (users, group size, groups per user, contacts); it adds no
entries of its own and no client can grow it except through those checked operations.

Not thread-safe: use it from one thread (the event loop).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

MembershipListener = Callable[[frozenset[str]], None]
"""Called after a change with the users whose membership answers may have changed."""


class MembershipLookup(Protocol):
    """What the ACL asks about memberships. Implementations must be fast and never block."""

    def is_member(self, user: str, group: str) -> bool:
        """Return True if `user` is currently a member of `group`."""
        ...

    def shares_conversation(self, user: str, other: str) -> bool:
        """Return True if `user` and `other` share a direct conversation or a group."""
        ...


@runtime_checkable
class ObservableMembership(MembershipLookup, Protocol):
    """A lookup that reports its changes, so the engine may cache membership-based decisions."""

    def add_listener(self, listener: MembershipListener) -> None:
        """Call `listener` after every change, with the affected users."""
        ...

    def remove_listener(self, listener: MembershipListener) -> None:
        """Stop calling `listener`; unknown listeners are ignored."""
        ...


class MembershipIndex:
    """In-memory group membership and direct contacts, with change notification.

    Changes that alter no answer (adding an existing member, ...) notify nobody. Listeners run
    synchronously after the index is updated; if some raise, the others still run and the
    errors are raised together as an `ExceptionGroup`.
    """

    def __init__(self) -> None:
        self._members: dict[str, set[str]] = {}
        self._groups: dict[str, set[str]] = {}
        self._contacts: dict[str, set[str]] = {}
        self._listeners: list[MembershipListener] = []

    # -- questions ---------------------------------------------------------------------------

    def is_member(self, user: str, group: str) -> bool:
        """Return True if `user` is currently a member of `group`."""
        members = self._members.get(group)
        return members is not None and user in members

    def shares_conversation(self, user: str, other: str) -> bool:
        """Return True if `user` and `other` are direct contacts or members of a common group."""
        contacts = self._contacts.get(user)
        if contacts is not None and other in contacts:
            return True
        mine = self._groups.get(user)
        theirs = self._groups.get(other)
        if not mine or not theirs:
            return False
        return not mine.isdisjoint(theirs)

    def groups_of(self, user: str) -> frozenset[str]:
        """Return the groups `user` belongs to."""
        return frozenset(self._groups.get(user, ()))

    def members_of(self, group: str) -> frozenset[str]:
        """Return the members of `group` (empty if unknown)."""
        return frozenset(self._members.get(group, ()))

    def contacts_of(self, user: str) -> frozenset[str]:
        """Return the users `user` has a direct conversation with."""
        return frozenset(self._contacts.get(user, ()))

    def __len__(self) -> int:
        """Return the number of known groups."""
        return len(self._members)

    # -- listeners ---------------------------------------------------------------------------

    def add_listener(self, listener: MembershipListener) -> None:
        """Call `listener(affected_users)` after every change that alters an answer."""
        self._listeners.append(listener)

    def remove_listener(self, listener: MembershipListener) -> None:
        """Stop calling `listener`; unknown listeners are ignored."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _notify(self, affected: Iterable[str]) -> None:
        users = frozenset(affected)
        if not users:
            return
        errors: list[Exception] = []
        for listener in tuple(self._listeners):
            try:
                listener(users)
            except Exception as exc:  # one broken listener must not leave others stale
                errors.append(exc)
        if errors:
            raise ExceptionGroup("membership listeners failed", errors)

    # -- changes -----------------------------------------------------------------------------

    def _link(self, group: str, user: str) -> None:
        self._members.setdefault(group, set()).add(user)
        self._groups.setdefault(user, set()).add(group)

    def _unlink(self, group: str, user: str) -> None:
        members = self._members.get(group)
        if members is not None:
            members.discard(user)
            if not members:
                del self._members[group]
        groups = self._groups.get(user)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._groups[user]

    def add_member(self, group: str, user: str) -> None:
        """Make `user` a member of `group`."""
        if self.is_member(user, group):
            return
        # The other members' presence answers about `user` change too.
        affected = set(self._members.get(group, ())) if self._listeners else set()
        self._link(group, user)
        affected.add(user)
        self._notify(affected)

    def remove_member(self, group: str, user: str) -> None:
        """Remove `user` from `group`; unknown pairs are ignored."""
        if not self.is_member(user, group):
            return
        self._unlink(group, user)
        affected = set(self._members.get(group, ())) if self._listeners else set()
        affected.add(user)
        self._notify(affected)

    def set_group(self, group: str, members: Iterable[str]) -> None:
        """Replace the member set of `group` (an empty set drops the group)."""
        new = set(members)
        old = self._members.get(group, set())
        if new == old:
            return
        old = set(old)
        for user in old - new:
            self._unlink(group, user)
        for user in new - old:
            self._link(group, user)
        self._notify(old | new)

    def drop_group(self, group: str) -> None:
        """Forget `group` and all its memberships."""
        members = self._members.get(group)
        if members is None:
            return
        members = set(members)
        for user in members:
            self._unlink(group, user)
        self._notify(members)

    def add_contact(self, user: str, other: str) -> None:
        """Record a direct conversation between `user` and `other` (a user with itself: no-op)."""
        if user == other or other in self._contacts.get(user, ()):
            return
        self._contacts.setdefault(user, set()).add(other)
        self._contacts.setdefault(other, set()).add(user)
        self._notify((user, other))

    def remove_contact(self, user: str, other: str) -> None:
        """Forget the direct conversation between `user` and `other`; unknown pairs are ignored."""
        if other not in self._contacts.get(user, ()):
            return
        for a, b in ((user, other), (other, user)):
            contacts = self._contacts[a]
            contacts.discard(b)
            if not contacts:
                del self._contacts[a]
        self._notify((user, other))

    def forget_user(self, user: str) -> None:
        """Remove `user` from every group and every direct conversation (account deleted)."""
        if user not in self._groups and user not in self._contacts:
            return
        affected = {user}
        for group in tuple(self._groups.get(user, ())):
            self._unlink(group, user)
            affected.update(self._members.get(group, ()))
        for other in tuple(self._contacts.get(user, ())):
            affected.add(other)
            contacts = self._contacts[other]
            contacts.discard(user)
            if not contacts:
                del self._contacts[other]
        self._contacts.pop(user, None)
        self._notify(affected)

    def clear(self) -> None:
        """Forget everything (before a full reload from storage)."""
        affected = set(self._groups) | set(self._contacts)
        self._members.clear()
        self._groups.clear()
        self._contacts.clear()
        self._notify(affected)
