"""`SqliteStorage`: the embedded, single-node `Storage` backend.

Threads: one writer thread owns the only writable connection and commits whatever is queued in
one transaction (group commit, a SAVEPOINT per request); one reader thread owns a ``query_only``
connection. The event loop only queues jobs and awaits futures. Password hashing runs in the
default executor (`asyncio.to_thread`).

Durability: WAL with ``synchronous=NORMAL``. Once a write coroutine returns, the data survives a
crash or ``kill -9`` of the process; an operating-system crash or power loss may lose the last
transactions (never corrupt the file).

The SQL lives in job modules, one per part of the contract (`_sqlite_users`, `_sqlite_messages`,
`_sqlite_groups`, `_sqlite_cursors`, `_sqlite_access`); this class only queues their jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import mqim.storage._sqlite_access as access_jobs
import mqim.storage._sqlite_cursors as cursor_jobs
import mqim.storage._sqlite_groups as group_jobs
import mqim.storage._sqlite_messages as message_jobs
import mqim.storage._sqlite_users as user_jobs
from mqim.storage._contracts import Storage
from mqim.storage._exceptions import Unavailable
from mqim.storage._passwords import DUMMY_HASH, hash_password
from mqim.storage._passwords import verify_password as check_password
from mqim.storage._records import (
    AccountKind,
    AclRuleRecord,
    AppendResult,
    ConvState,
    GroupRecord,
    MessageRecord,
    NewMessage,
    Role,
    RoleRecord,
    UserChanges,
    UserRecord,
)
from mqim.storage._sqlite_schema import STORAGE_SCHEMA, migrate
from mqim.storage._sqlite_writer import SqliteWorker

# How long close() waits for each worker thread to finish its queue.
CLOSE_TIMEOUT_S: Final = 30.0


class SqliteStorage(Storage):
    """`Storage` in one SQLite file: the embedded default.

    Args:
        path: The database file; created with its schema if missing.
        batch_max: Most write requests committed in one transaction.
    """

    def __init__(self, *, path: Path, batch_max: int = 512) -> None:
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        self._path = Path(path)
        self._batch_max = batch_max
        self._writer: SqliteWorker | None = None
        self._reader: SqliteWorker | None = None
        self._closed = False

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    async def open(self) -> None:
        """Start the worker threads, create or migrate the schema.

        Raises:
            StorageError: The file cannot be opened, is not an mqim storage database, or has a
                schema newer than this code.
        """
        if self._closed:
            raise Unavailable("storage is closed")
        if self._writer is not None:
            return
        path = self._path
        writer = SqliteWorker(
            name=f"mqim-sqlite-writer:{path.name}",
            path=path,
            read_only=False,
            batch_max=self._batch_max,
            init=lambda conn: migrate(conn, STORAGE_SCHEMA, path=path),
        )
        await writer.start()
        reader = SqliteWorker(
            name=f"mqim-sqlite-reader:{path.name}", path=path, read_only=True, batch_max=self._batch_max
        )
        try:
            await reader.start()
        except BaseException:
            await writer.stop(join_timeout_s=CLOSE_TIMEOUT_S)
            raise
        self._writer, self._reader = writer, reader

    async def close(self) -> None:
        """Commit every queued write, stop the threads and close the connections."""
        self._closed = True
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        if writer is not None:
            await writer.stop(join_timeout_s=CLOSE_TIMEOUT_S)
        if reader is not None:
            await reader.stop(join_timeout_s=CLOSE_TIMEOUT_S)

    def _w(self) -> SqliteWorker:
        if self._writer is None:
            raise Unavailable("storage is closed" if self._closed else "storage is not open")
        return self._writer

    def _r(self) -> SqliteWorker:
        if self._reader is None:
            raise Unavailable("storage is closed" if self._closed else "storage is not open")
        return self._reader

    # -- users ---------------------------------------------------------------------------------
    async def add_user(
        self, user_id: str, *, password: str, kind: AccountKind = AccountKind.USER
    ) -> UserRecord:
        """Create an account; raises `AlreadyExists` if the id is taken."""
        writer = self._w()
        pw_hash = await asyncio.to_thread(hash_password, password)
        return await writer.run(
            lambda c: user_jobs.add_user(c, user_id, kind, pw_hash), what=f"add user {user_id!r}"
        )

    async def add_users(
        self, user_ids: Sequence[str], *, password: str, kind: AccountKind = AccountKind.USER
    ) -> int:
        """Create many accounts with one shared password hash; existing ids are skipped."""
        writer = self._w()
        ids = list(dict.fromkeys(user_ids))
        pw_hash = await asyncio.to_thread(hash_password, password)
        return await writer.run(
            lambda c: user_jobs.add_users(c, ids, kind, pw_hash), what=f"add {len(ids)} users"
        )

    async def get_user(self, user_id: str) -> UserRecord | None:
        """Return the account, or None."""
        return await self._r().run(lambda c: user_jobs.get_user(c, user_id), what="get user")

    async def list_users(self) -> list[UserRecord]:
        """All accounts, sorted by id."""
        return await self._r().run(user_jobs.list_users, what="list users")

    async def set_password(self, user_id: str, password: str) -> None:
        """Replace the password; raises `NotFound`."""
        writer = self._w()
        pw_hash = await asyncio.to_thread(hash_password, password)
        await writer.run(
            lambda c: user_jobs.update_user(c, user_id, "password", pw_hash), what="set password"
        )

    async def set_disabled(self, user_id: str, disabled: bool) -> None:
        """Disable or enable an account; raises `NotFound`."""
        flag = 1 if disabled else 0
        await self._w().run(
            lambda c: user_jobs.update_user(c, user_id, "disabled", flag), what="set disabled"
        )

    async def remove_user(self, user_id: str) -> None:
        """Delete an account (its messages stay); raises `NotFound`."""
        await self._w().run(lambda c: user_jobs.remove_user(c, user_id), what="remove user")

    async def verify_password(self, user_id: str, password: str) -> UserRecord | None:
        """Return the account if it exists, is enabled and `password` matches, else None.

        Unknown and disabled accounts cost the same scrypt work as a real check, so response
        time does not reveal which accounts exist.
        """
        found = await self._r().run(lambda c: user_jobs.get_user_and_hash(c, user_id), what="verify password")
        encoded = DUMMY_HASH if found is None else found[1]
        matches = await asyncio.to_thread(check_password, password, encoded)
        if found is None or found[0].disabled or not matches:
            return None
        return found[0]

    # -- messages ------------------------------------------------------------------------------
    async def append_messages(self, messages: Sequence[NewMessage]) -> list[AppendResult]:
        """Store a batch: dedup by (sender, client_id), assign seqs, persist; see `Storage`."""
        batch = list(messages)
        if not batch:
            self._w()
            return []
        return await self._w().run(lambda c: message_jobs.append(c, batch), what="append messages")

    async def get_messages(
        self,
        conv: str,
        *,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int = 100,
        newest: bool = False,
    ) -> list[MessageRecord]:
        """Messages of `conv` with `after_seq < seq < before_seq`, ascending; see `Storage`."""
        return await self._r().run(
            lambda c: message_jobs.get_messages(c, conv, after_seq, before_seq, limit, newest),
            what="get messages",
        )

    async def last_seq(self, conv: str) -> int:
        """The highest seq of `conv`, 0 if it has none."""
        return await self._r().run(lambda c: message_jobs.last_seq(c, conv), what="last seq")

    # -- groups --------------------------------------------------------------------------------
    async def create_group(
        self, group_id: str, *, name: str, owner: str, members: Sequence[str]
    ) -> GroupRecord:
        """Create a group owned by `owner`; raises `AlreadyExists`."""
        member_list = list(members)
        return await self._w().run(
            lambda c: group_jobs.create_group(c, group_id, name, owner, member_list),
            what=f"create group {group_id!r}",
        )

    async def get_group(self, group_id: str) -> GroupRecord | None:
        """Return the group with its members, or None."""
        return await self._r().run(lambda c: group_jobs.get_group(c, group_id), what="get group")

    async def set_members(self, group_id: str, changes: dict[str, Role | None]) -> GroupRecord:
        """Add, change or (with None) remove members; raises `NotFound`."""
        snapshot = dict(changes)
        return await self._w().run(
            lambda c: group_jobs.set_members(c, group_id, snapshot), what="set members"
        )

    async def rename_group(self, group_id: str, name: str) -> GroupRecord:
        """Rename a group; raises `NotFound`."""
        return await self._w().run(lambda c: group_jobs.rename_group(c, group_id, name), what="rename group")

    async def delete_group(self, group_id: str) -> None:
        """Delete a group (its messages stay); raises `NotFound`."""
        await self._w().run(lambda c: group_jobs.delete_group(c, group_id), what="delete group")

    async def groups_of(self, user_id: str) -> list[str]:
        """Ids of the groups `user_id` belongs to, sorted."""
        return await self._r().run(lambda c: group_jobs.groups_of(c, user_id), what="groups of")

    # -- cursors -------------------------------------------------------------------------------
    async def advance_cursor(
        self, user_id: str, conv: str, *, read_seq: int | None = None, delivered_seq: int | None = None
    ) -> ConvState:
        """Move a user's cursors forward (never back, never past the last seq); return the state."""
        return await self._w().run(
            lambda c: cursor_jobs.advance_cursor(c, user_id, conv, read_seq, delivered_seq),
            what="advance cursor",
        )

    async def conv_states(self, user_id: str, convs: Sequence[str] | None = None) -> list[ConvState]:
        """The user's state in `convs` (in that order), or in every conversation it takes part in.

        With `convs=None` the result lists the conversations the user is a member of, sorted by id:
        both sides of a direct conversation once it has a message, and the current members of a
        group.
        """
        wanted = None if convs is None else list(convs)
        return await self._r().run(lambda c: cursor_jobs.conv_states(c, user_id, wanted), what="conv states")

    # -- access control ------------------------------------------------------------------------
    async def add_acl_rule(self, text: str, *, name: str = "") -> AclRuleRecord:
        """Append a rule after the others (its text is stored as given)."""
        return await self._w().run(lambda c: access_jobs.add_acl_rule(c, text, name), what="add ACL rule")

    async def list_acl_rules(self) -> list[AclRuleRecord]:
        """Every stored rule, in evaluation order."""
        return await self._r().run(access_jobs.list_acl_rules, what="list ACL rules")

    async def remove_acl_rule(self, rule_id: int) -> None:
        """Delete a rule; raises `NotFound`."""
        await self._w().run(lambda c: access_jobs.remove_acl_rule(c, rule_id), what="remove ACL rule")

    async def create_role(self, name: str, *, description: str = "") -> RoleRecord:
        """Create a role; raises `AlreadyExists`."""
        return await self._w().run(
            lambda c: access_jobs.create_role(c, name, description), what="create role"
        )

    async def delete_role(self, name: str) -> None:
        """Delete a role and its assignments; raises `NotFound`."""
        await self._w().run(lambda c: access_jobs.delete_role(c, name), what="delete role")

    async def list_roles(self) -> list[RoleRecord]:
        """Every role with its members, sorted by name."""
        return await self._r().run(access_jobs.list_roles, what="list roles")

    async def assign_role(self, user_id: str, role: str) -> None:
        """Give `role` to `user_id`; raises `NotFound` for an unknown user or role."""
        await self._w().run(lambda c: access_jobs.assign_role(c, user_id, role), what="assign role")

    async def unassign_role(self, user_id: str, role: str) -> None:
        """Take `role` from `user_id`; raises `NotFound` if not held."""
        await self._w().run(lambda c: access_jobs.unassign_role(c, user_id, role), what="unassign role")

    async def roles_of(self, user_id: str) -> list[str]:
        """The roles `user_id` holds, sorted."""
        return await self._r().run(lambda c: access_jobs.roles_of(c, user_id), what="roles of")

    async def acl_version(self) -> int:
        """A counter moved by triggers on every rule, role or assignment change."""
        return await self._r().run(access_jobs.acl_version, what="ACL version")

    async def revoke_token(self, token_id: str, *, expires_ts: int | None) -> None:
        """Record a revoked token id (idempotent); long-expired entries are pruned."""
        await self._w().run(lambda c: access_jobs.revoke_token(c, token_id, expires_ts), what="revoke token")

    async def is_token_revoked(self, token_id: str) -> bool:
        """Return True if `token_id` was revoked."""
        return await self._r().run(lambda c: access_jobs.is_token_revoked(c, token_id), what="token revoked?")

    async def user_changes(self, since: int | None, *, limit: int = 1000) -> UserChanges:
        """Accounts changed after change number `since` (a log kept by triggers); see `Storage`."""
        return await self._r().run(lambda c: access_jobs.user_changes(c, since, limit), what="user changes")
