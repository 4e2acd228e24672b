"""The membership lookup a receive scope's compiler needs: one that can also list."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from mqim.acl._membership import MembershipLookup


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
