"""`MongoStorage`: the `Storage` backend of cluster mode, on MongoDB (pymongo's native async client).

Any number of processes (broker nodes, logic workers) may share one database: seqs are taken
with an atomic ``$inc`` and duplicates are stopped by unique indexes, so no coordination between
them is needed (see `mqim.storage._mongo_append`). Indexes are created at `open()`.

Every call retries transient failures (lost connection, no primary) a bounded number of times
with back-off, then raises `Unavailable`; no pymongo exception leaves this module. Writes that a
retry could repeat are made harmless: inserts carry a token that recognises our own earlier
attempt, updates are idempotent. The write concern comes from the URL (``w=majority&journal=true``
for a replica set that must not lose acknowledged messages).

The parts of the contract live in their own modules: accounts (`_mongo_users`), groups
(`_mongo_groups`), messages and cursors (`_mongo_convs`), access control (`_mongo_acl`); this
class opens the database and hands each call to its part.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from mqim.storage._contracts import Storage
from mqim.storage._exceptions import StorageError, Unavailable
from mqim.storage._mongo_acl import MongoAcl
from mqim.storage._mongo_append import Appender
from mqim.storage._mongo_convs import MongoConversations
from mqim.storage._mongo_errors import RetryPolicy, translate
from mqim.storage._mongo_groups import MongoGroups
from mqim.storage._mongo_ops import Ops
from mqim.storage._mongo_schema import INDEXES, SCHEMA_VERSION, Collections, Doc
from mqim.storage._mongo_users import MongoUsers
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


class MongoStorage(Storage):
    """`Storage` in a MongoDB database, shared by every node of a cluster.

    Args:
        url: A MongoDB connection string (``mongodb://host:port/?replicaSet=rs0``).
        database: The database that holds mqim's collections.
        timeout_s: Server selection and connect timeout of one attempt.
        retry: How transient failures are retried before `Unavailable` is raised.
    """

    def __init__(
        self,
        *,
        url: str,
        database: str = "mqim",
        timeout_s: float = 5.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not database:
            raise ValueError("database must not be empty")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._url = url
        self._database = database
        self._timeout_ms = int(timeout_s * 1000)
        self._policy = retry if retry is not None else RetryPolicy()
        self._client: AsyncMongoClient[Doc] | None = None
        self._ops: Ops | None = None
        self._acl: MongoAcl | None = None
        self._appender: Appender | None = None
        self._closed = False
        self._users = MongoUsers(ops=self._o, acl=self._a)
        self._groups = MongoGroups(ops=self._o)
        self._convs = MongoConversations(ops=self._o, appender=self._appender_of, groups=self._groups)

    @property
    def database(self) -> str:
        """The database name."""
        return self._database

    async def open(self) -> None:
        """Connect, check the schema version and create the indexes.

        Raises:
            Unavailable: MongoDB cannot be reached.
            StorageError: Bad URL, or the database was written by a newer mqim.
        """
        if self._closed:
            raise Unavailable("storage is closed")
        if self._client is not None:
            return
        try:
            client: AsyncMongoClient[Doc] = AsyncMongoClient(
                self._url,
                serverSelectionTimeoutMS=self._timeout_ms,
                connectTimeoutMS=self._timeout_ms,
                appname="mqim",
                tz_aware=False,
            )
        except PyMongoError as exc:
            raise translate("open MongoDB storage", exc) from exc
        except (ValueError, TypeError) as exc:
            raise StorageError(f"open MongoDB storage: bad URL or option: {exc}") from exc
        ops = Ops(cols=Collections.of(client[self._database]), policy=self._policy)
        try:
            await self._prepare(ops)
        except BaseException:
            await client.close()
            raise
        self._client, self._ops = client, ops
        self._acl = MongoAcl(ops=ops)
        self._appender = Appender(ops=ops)

    async def _prepare(self, ops: Ops) -> None:
        cols = ops.cols

        async def check_version() -> None:
            doc = await cols.meta.find_one({"_id": "schema"})
            version = 0 if doc is None else int(doc.get("version", 0))
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"database {self._database!r} has schema version {version}, newer than this "
                    f"mqim ({SCHEMA_VERSION}); upgrade mqim"
                )
            if version < SCHEMA_VERSION:
                await cols.meta.update_one(
                    {"_id": "schema"}, {"$max": {"version": SCHEMA_VERSION}}, upsert=True
                )

        await ops.retry("open: schema version", check_version)
        for name, indexes in INDEXES.items():
            collection: AsyncCollection[Doc] = getattr(cols, name)

            async def create(c: AsyncCollection[Doc] = collection, i: list[IndexModel] = indexes) -> None:
                await c.create_indexes(i)

            await ops.retry(f"open: indexes of {name}", create)

    async def close(self) -> None:
        """Close the client's connections. Nothing is buffered: every write was acknowledged."""
        self._closed = True
        client, self._client, self._ops, self._acl, self._appender = self._client, None, None, None, None
        if client is not None:
            await client.close()

    def _o(self) -> Ops:
        if self._ops is None:
            raise Unavailable("storage is closed" if self._closed else "storage is not open")
        return self._ops

    def _a(self) -> MongoAcl:
        if self._acl is None:
            raise Unavailable("storage is closed" if self._closed else "storage is not open")
        return self._acl

    def _appender_of(self) -> Appender:
        if self._appender is None:
            raise Unavailable("storage is closed")
        return self._appender

    # -- users ---------------------------------------------------------------------------------
    async def add_user(
        self, user_id: str, *, password: str, kind: AccountKind = AccountKind.USER
    ) -> UserRecord:
        """Create an account; raises `AlreadyExists` if the id is taken."""
        return await self._users.add_user(user_id, password=password, kind=kind)

    async def add_users(
        self, user_ids: Sequence[str], *, password: str, kind: AccountKind = AccountKind.USER
    ) -> int:
        """Create many accounts with one shared password hash; existing ids are skipped."""
        return await self._users.add_users(user_ids, password=password, kind=kind)

    async def get_user(self, user_id: str) -> UserRecord | None:
        """Return the account, or None."""
        return await self._users.get_user(user_id)

    async def list_users(self) -> list[UserRecord]:
        """All accounts, sorted by id."""
        return await self._users.list_users()

    async def set_password(self, user_id: str, password: str) -> None:
        """Replace the password; raises `NotFound`."""
        await self._users.set_password(user_id, password)

    async def set_disabled(self, user_id: str, disabled: bool) -> None:
        """Disable or enable an account; raises `NotFound`."""
        await self._users.set_disabled(user_id, disabled)

    async def remove_user(self, user_id: str) -> None:
        """Delete an account (its messages stay); raises `NotFound`."""
        await self._users.remove_user(user_id)

    async def verify_password(self, user_id: str, password: str) -> UserRecord | None:
        """Return the account if it exists, is enabled and `password` matches, else None.

        Unknown and disabled accounts cost the same scrypt work as a real check.
        """
        return await self._users.verify_password(user_id, password)

    # -- messages ------------------------------------------------------------------------------
    async def append_messages(self, messages: Sequence[NewMessage]) -> list[AppendResult]:
        """Store a batch: dedup by (sender, client_id), assign seqs, persist; see `Storage`."""
        return await self._convs.append_messages(messages)

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
        return await self._convs.get_messages(
            conv, after_seq=after_seq, before_seq=before_seq, limit=limit, newest=newest
        )

    async def last_seq(self, conv: str) -> int:
        """The highest seq of `conv`, 0 if it has none."""
        return await self._convs.last_seq(conv)

    # -- groups --------------------------------------------------------------------------------
    async def create_group(
        self, group_id: str, *, name: str, owner: str, members: Sequence[str]
    ) -> GroupRecord:
        """Create a group owned by `owner`; raises `AlreadyExists`."""
        return await self._groups.create_group(group_id, name=name, owner=owner, members=members)

    async def get_group(self, group_id: str) -> GroupRecord | None:
        """Return the group with its members, or None."""
        return await self._groups.get_group(group_id)

    async def set_members(self, group_id: str, changes: dict[str, Role | None]) -> GroupRecord:
        """Add, change or (with None) remove members; raises `NotFound`."""
        return await self._groups.set_members(group_id, changes)

    async def rename_group(self, group_id: str, name: str) -> GroupRecord:
        """Rename a group; raises `NotFound`."""
        return await self._groups.rename_group(group_id, name)

    async def delete_group(self, group_id: str) -> None:
        """Delete a group (its messages and seq counter stay); raises `NotFound`."""
        await self._groups.delete_group(group_id)

    async def groups_of(self, user_id: str) -> list[str]:
        """Ids of the groups `user_id` belongs to, sorted."""
        return await self._groups.groups_of(user_id)

    # -- cursors -------------------------------------------------------------------------------
    async def advance_cursor(
        self, user_id: str, conv: str, *, read_seq: int | None = None, delivered_seq: int | None = None
    ) -> ConvState:
        """Move a user's cursors forward (never back, never past the last seq); return the state."""
        return await self._convs.advance_cursor(user_id, conv, read_seq=read_seq, delivered_seq=delivered_seq)

    async def conv_states(self, user_id: str, convs: Sequence[str] | None = None) -> list[ConvState]:
        """The user's state in `convs` (in that order), or in every conversation it takes part in.

        With `convs=None` the result lists the conversations the user is a member of, sorted by
        id: both sides of a direct conversation once it has a message, and the current members
        of a group.
        """
        return await self._convs.conv_states(user_id, convs)

    # -- access control ------------------------------------------------------------------------
    async def add_acl_rule(self, text: str, *, name: str = "") -> AclRuleRecord:
        """Append a rule after the others (its text is stored as given)."""
        return await self._a().add_acl_rule(text, name)

    async def list_acl_rules(self) -> list[AclRuleRecord]:
        """Every stored rule, in evaluation order."""
        return await self._a().list_acl_rules()

    async def remove_acl_rule(self, rule_id: int) -> None:
        """Delete a rule; raises `NotFound`."""
        await self._a().remove_acl_rule(rule_id)

    async def create_role(self, name: str, *, description: str = "") -> RoleRecord:
        """Create a role; raises `AlreadyExists`."""
        return await self._a().create_role(name, description)

    async def delete_role(self, name: str) -> None:
        """Delete a role and its assignments; raises `NotFound`."""
        await self._a().delete_role(name)

    async def list_roles(self) -> list[RoleRecord]:
        """Every role with its members, sorted by name."""
        return await self._a().list_roles()

    async def assign_role(self, user_id: str, role: str) -> None:
        """Give `role` to `user_id`; raises `NotFound` for an unknown user or role."""
        exists = await self._users.find_user(user_id) is not None
        await self._a().assign_role(user_id, role, user_exists=exists)

    async def unassign_role(self, user_id: str, role: str) -> None:
        """Take `role` from `user_id`; raises `NotFound` if not held."""
        await self._a().unassign_role(user_id, role)

    async def roles_of(self, user_id: str) -> list[str]:
        """The roles `user_id` holds, sorted."""
        return await self._a().roles_of(user_id)

    async def acl_version(self) -> int:
        """A counter bumped after every rule, role or assignment change."""
        return await self._a().acl_version()

    async def revoke_token(self, token_id: str, *, expires_ts: int | None) -> None:
        """Record a revoked token id (idempotent); long-expired entries are pruned."""
        await self._a().revoke_token(token_id, expires_ts)

    async def is_token_revoked(self, token_id: str) -> bool:
        """Return True if `token_id` was revoked."""
        return await self._a().is_token_revoked(token_id)

    async def user_changes(self, since: int | None, *, limit: int = 1000) -> UserChanges:
        """Accounts changed after change number `since` (an explicit change log); see `Storage`."""
        return await self._a().user_changes(since, limit)
