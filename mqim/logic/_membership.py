"""Group membership as the handlers see it: the shared in-memory index, or storage.

The handlers ask storage, the source of truth, whoever changed it. In the embedded server the
logic service and the broker also share one `MembershipIndex`: the broker's ACL and its
server-managed subscriptions follow it, and the service keeps it current after every group
change it stores (`group_changed`, `contact`), and repairs it when storage says otherwise
(`resync`). A standalone `mqim logic` worker has no such index (`index=None`): the broker learns
its changes from the group `event` the worker publishes (see `MembershipFollower`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable

from mqim.acl import MembershipIndex
from mqim.storage import Storage

_log = logging.getLogger(__name__)


class GroupAccess:
    """Membership questions of the handlers, and the index updates after a change.

    Args:
        storage: The source of truth.
        index: The index shared with the broker, or None (standalone worker: ask storage).
    """

    def __init__(self, *, storage: Storage, index: MembershipIndex | None) -> None:
        self._storage = storage
        self._index = index

    @property
    def index(self) -> MembershipIndex | None:
        """The shared index, if the service has one."""
        return self._index

    async def memberships(self, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those `(user, group)` pairs that are memberships now, as storage says.

        Storage decides, so a change written there by anyone (another worker, an administrator,
        an embedding application) counts at once. Where the shared index disagrees, the group
        is re-read into it, so the broker's permissions and subscriptions heal as soon as the
        group is used.

        Raises:
            StorageError: When storage fails.
        """
        wanted = set(pairs)
        found: set[tuple[str, str]] = set()
        for user in sorted({user for user, _ in wanted}):
            groups = set(await self._storage.groups_of(user))
            found.update(pair for pair in wanted if pair[0] == user and pair[1] in groups)
        index = self._index
        if index is not None:
            stale = {
                group for user, group in wanted if index.is_member(user, group) != ((user, group) in found)
            }
            for group in sorted(stale):
                await self.resync(group)
        return found

    async def is_member(self, user: str, group: str) -> bool:
        """Whether `user` is a member of `group` now."""
        return (user, group) in await self.memberships([(user, group)])

    async def group_count(self, user: str) -> int:
        """How many groups `user` belongs to."""
        return len(await self._storage.groups_of(user))

    async def resync(self, group: str) -> None:
        """Re-read `group` from storage into the shared index (nothing without an index)."""
        if self._index is None:
            return
        record = await self._storage.get_group(group)
        members = list(record.members) if record is not None else []
        if set(members) != self._index.members_of(group):
            _log.info("membership of group %r re-read from storage (changed outside the service)", group)
        self.group_changed(group, members)

    def group_changed(self, group: str, members: Collection[str]) -> None:
        """Tell the index the members of `group` after a stored change (empty: group gone)."""
        if self._index is None:
            return
        try:
            if members:
                self._index.set_group(group, members)
            else:
                self._index.drop_group(group)
        except ExceptionGroup:
            # The index itself is updated; a failing listener (the broker's subscription sync,
            # the ACL cache) is a bug to see in the log, not a reason to fail the request.
            _log.exception("membership listeners failed after a change of group %r", group)

    def contact(self, user: str, other: str) -> None:
        """Tell the index that `user` and `other` now share a direct conversation."""
        if self._index is None:
            return
        try:
            self._index.add_contact(user, other)
        except ExceptionGroup:
            _log.exception("membership listeners failed after a new contact %r-%r", user, other)
