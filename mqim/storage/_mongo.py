"""`MongoStorage`: the `Storage` backend of cluster mode, on MongoDB (pymongo's native async client).

Any number of processes (broker nodes, logic workers) may share one database: seqs are taken
with an atomic ``$inc`` and duplicates are stopped by unique indexes, so no coordination between
them is needed (see `mqim.storage._mongo_append`). Indexes are created at `open()`.

Every call retries transient failures (lost connection, no primary) a bounded number of times
with back-off, then raises `Unavailable`; no pymongo exception leaves this module. Writes that a
retry could repeat are made harmless: inserts carry a token that recognises our own earlier
attempt, updates are idempotent. The write concern comes from the URL (``w=majority&journal=true``
for a replica set that must not lose acknowledged messages).

Passwords are hashed with scrypt in a worker thread (`asyncio.to_thread`), never on the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

from pymongo import AsyncMongoClient, DeleteOne, IndexModel, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from mqim.storage._base import Storage
from mqim.storage._exceptions import AlreadyExists, NotFound, StorageError, Unavailable
from mqim.storage._mongo_acl import MongoAcl
from mqim.storage._mongo_append import Appender, initial_members, now_ms, record_of
from mqim.storage._mongo_errors import RetryPolicy, translate
from mqim.storage._mongo_ops import Ops
from mqim.storage._mongo_schema import INDEXES, SCHEMA_VERSION, Collections, Doc
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

# Conversations whose members this process has already recorded; cleared when full.
MEMBER_CACHE_MAX: Final = 65_536


def _group_conv(group_id: str) -> str:
    return f"g:{group_id}"


def _user(doc: Doc) -> UserRecord:
    return UserRecord(
        user_id=str(doc["_id"]),
        kind=AccountKind(doc.get("kind", AccountKind.USER.value)),
        disabled=bool(doc.get("disabled", False)),
        created_ts=int(doc.get("created_ts", 0)),
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
        self._known_convs: set[str] = set()

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

    def _c(self) -> Collections:
        return self._o().cols

    def _a(self) -> MongoAcl:
        if self._acl is None:
            raise Unavailable("storage is closed" if self._closed else "storage is not open")
        return self._acl

    # -- users ---------------------------------------------------------------------------------
    async def add_user(
        self, user_id: str, *, password: str, kind: AccountKind = AccountKind.USER
    ) -> UserRecord:
        """Create an account; raises `AlreadyExists` if the id is taken."""
        ops = self._o()
        pw_hash = await asyncio.to_thread(hash_password, password)
        record = UserRecord(user_id=user_id, kind=AccountKind(kind), disabled=False, created_ts=now_ms())
        doc = {
            "_id": user_id,
            "kind": record.kind.value,
            "password": pw_hash,
            "disabled": False,
            "created_ts": record.created_ts,
        }
        if not await ops.insert_new(f"add user {user_id!r}", ops.cols.users, doc):
            raise AlreadyExists(f"user {user_id!r} already exists")
        await self._a().log_user_change(user_id)
        return record

    async def add_users(
        self, user_ids: Sequence[str], *, password: str, kind: AccountKind = AccountKind.USER
    ) -> int:
        """Create many accounts with one shared password hash; existing ids are skipped."""
        ops = self._o()
        pw_hash = await asyncio.to_thread(hash_password, password)
        created = 0
        for user_id in dict.fromkeys(user_ids):
            doc = {
                "_id": user_id,
                "kind": AccountKind(kind).value,
                "password": pw_hash,
                "disabled": False,
                "created_ts": now_ms(),
            }
            if await ops.insert_new(f"add user {user_id!r}", ops.cols.users, doc):
                created += 1
                await self._a().log_user_change(user_id)
        return created

    async def _find_user(self, user_id: str) -> Doc | None:
        users = self._c().users

        async def find() -> Doc | None:
            return await users.find_one({"_id": user_id})

        return await self._o().retry("get user", find)

    async def get_user(self, user_id: str) -> UserRecord | None:
        """Return the account, or None."""
        doc = await self._find_user(user_id)
        return None if doc is None else _user(doc)

    async def list_users(self) -> list[UserRecord]:
        """All accounts, sorted by id."""
        users = self._c().users

        async def find() -> list[UserRecord]:
            return [_user(d) async for d in users.find({}, {"password": 0}).sort("_id", 1)]

        return await self._o().retry("list users", find)

    async def _update_user(self, user_id: str, changes: Doc, what: str) -> None:
        users = self._c().users

        async def update() -> int:
            return (await users.update_one({"_id": user_id}, {"$set": changes})).matched_count

        if await self._o().retry(what, update) == 0:
            raise NotFound(f"no user {user_id!r}")
        await self._a().log_user_change(user_id)

    async def set_password(self, user_id: str, password: str) -> None:
        """Replace the password; raises `NotFound`."""
        self._c()
        pw_hash = await asyncio.to_thread(hash_password, password)
        await self._update_user(user_id, {"password": pw_hash}, "set password")

    async def set_disabled(self, user_id: str, disabled: bool) -> None:
        """Disable or enable an account; raises `NotFound`."""
        await self._update_user(user_id, {"disabled": bool(disabled)}, "set disabled")

    async def remove_user(self, user_id: str) -> None:
        """Delete an account (its messages stay); raises `NotFound`."""
        users = self._c().users

        async def delete() -> int:
            return (await users.delete_one({"_id": user_id})).deleted_count

        if await self._o().retry("remove user", delete) == 0:
            raise NotFound(f"no user {user_id!r}")
        await self._a().forget_user(user_id)
        await self._a().log_user_change(user_id)

    async def verify_password(self, user_id: str, password: str) -> UserRecord | None:
        """Return the account if it exists, is enabled and `password` matches, else None.

        Unknown and disabled accounts cost the same scrypt work as a real check.
        """
        doc = await self._find_user(user_id)
        encoded = DUMMY_HASH if doc is None else str(doc.get("password", DUMMY_HASH))
        matches = await asyncio.to_thread(check_password, password, encoded)
        if doc is None or not matches:
            return None
        user = _user(doc)
        return None if user.disabled else user

    # -- messages ------------------------------------------------------------------------------
    async def append_messages(self, messages: Sequence[NewMessage]) -> list[AppendResult]:
        """Store a batch: dedup by (sender, client_id), assign seqs, persist; see `Storage`."""
        self._c()
        batch = list(messages)
        if not batch:
            return []
        await self._record_members(batch)
        appender = self._appender
        if appender is None:
            raise Unavailable("storage is closed")
        return await appender.append(batch)

    async def _record_members(self, batch: list[NewMessage]) -> None:
        """Record who takes part in conversations this process has not seen yet.

        Done before the messages are stored, so a conversation never has a message but no
        members; repeating it is harmless (upserts).
        """
        fresh = {m.conv: m for m in batch if m.conv not in self._known_convs}
        if not fresh:
            return
        ops: list[UpdateOne | DeleteOne] = [
            UpdateOne(
                {"user": user, "conv": conv}, {"$setOnInsert": {"user": user, "conv": conv}}, upsert=True
            )
            for conv, m in fresh.items()
            for user in initial_members(m)
        ]
        await self._o().bulk("append messages: members", self._c().conv_members, ops)
        if len(self._known_convs) + len(fresh) > MEMBER_CACHE_MAX:
            self._known_convs.clear()
        self._known_convs.update(fresh)

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
        messages = self._c().messages
        if limit <= 0:
            return []
        # Never below 0: the query must imply the partial index's filter (seq > 0) to use it.
        seq_range: Doc = {"$gt": max(0, after_seq)}
        if before_seq is not None:
            seq_range["$lt"] = before_seq

        async def find() -> list[MessageRecord]:
            cursor = messages.find({"conv": conv, "seq": seq_range}, {"pending_ts": 0})
            cursor = cursor.sort("seq", -1 if newest else 1).limit(limit)
            return [record_of(d) async for d in cursor]

        records = await self._o().retry("get messages", find)
        if newest:
            records.reverse()
        return records

    async def last_seq(self, conv: str) -> int:
        """The highest seq of `conv`, 0 if it has none."""
        return (await self._last_seqs([conv])).get(conv, 0)

    async def _last_seqs(self, convs: list[str]) -> dict[str, int]:
        conversations = self._c().conversations

        async def find() -> dict[str, int]:
            return {
                str(d["_id"]): int(d.get("last_seq", 0))
                async for d in conversations.find({"_id": {"$in": convs}})
            }

        return await self._o().retry("last seq", find) if convs else {}

    # -- groups --------------------------------------------------------------------------------
    async def create_group(
        self, group_id: str, *, name: str, owner: str, members: Sequence[str]
    ) -> GroupRecord:
        """Create a group owned by `owner`; raises `AlreadyExists`."""
        ops = self._o()
        cols = ops.cols
        doc = {"_id": group_id, "name": name, "created_ts": now_ms()}
        if not await ops.insert_new(f"create group {group_id!r}", cols.groups, doc):
            raise AlreadyExists(f"group {group_id!r} already exists")
        # Members left behind by an interrupted delete of an earlier group with this id.
        await self._o().retry(
            "create group: clear stale members",
            lambda: cols.group_members.delete_many({"group_id": group_id}),
        )
        changes: dict[str, Role | None] = {user: Role.MEMBER for user in members}
        changes[owner] = Role.OWNER
        await self._apply_members(group_id, changes)
        return await self._require_group(group_id)

    async def _find_group(self, group_id: str) -> Doc | None:
        groups = self._c().groups

        async def find() -> Doc | None:
            return await groups.find_one({"_id": group_id})

        return await self._o().retry("get group", find)

    async def _apply_members(self, group_id: str, changes: dict[str, Role | None]) -> None:
        ops: list[UpdateOne | DeleteOne] = []
        for user, role in changes.items():
            key = {"group_id": group_id, "user": user}
            if role is None:
                ops.append(DeleteOne(key))
            else:
                ops.append(UpdateOne(key, {"$set": {**key, "role": Role(role).value}}, upsert=True))
        await self._o().bulk("set members", self._c().group_members, ops)

    async def get_group(self, group_id: str) -> GroupRecord | None:
        """Return the group with its members, or None."""
        doc = await self._find_group(group_id)
        if doc is None:
            return None
        group_members = self._c().group_members

        async def find() -> dict[str, Role]:
            cursor = group_members.find({"group_id": group_id}).sort("user", 1)
            return {str(d["user"]): Role(d["role"]) async for d in cursor}

        members = await self._o().retry("get group members", find)
        return GroupRecord(
            group_id=group_id,
            name=str(doc["name"]),
            members=members,
            created_ts=int(doc.get("created_ts", 0)),
        )

    async def _require_group(self, group_id: str) -> GroupRecord:
        group = await self.get_group(group_id)
        if group is None:
            raise NotFound(f"no group {group_id!r}")
        return group

    async def set_members(self, group_id: str, changes: dict[str, Role | None]) -> GroupRecord:
        """Add, change or (with None) remove members; raises `NotFound`."""
        snapshot = dict(changes)
        if await self._find_group(group_id) is None:
            raise NotFound(f"no group {group_id!r}")
        await self._apply_members(group_id, snapshot)
        return await self._require_group(group_id)

    async def rename_group(self, group_id: str, name: str) -> GroupRecord:
        """Rename a group; raises `NotFound`."""
        groups = self._c().groups

        async def update() -> int:
            return (await groups.update_one({"_id": group_id}, {"$set": {"name": name}})).matched_count

        if await self._o().retry("rename group", update) == 0:
            raise NotFound(f"no group {group_id!r}")
        return await self._require_group(group_id)

    async def delete_group(self, group_id: str) -> None:
        """Delete a group (its messages and seq counter stay); raises `NotFound`."""
        cols = self._c()

        async def delete() -> int:
            return (await cols.groups.delete_one({"_id": group_id})).deleted_count

        if await self._o().retry("delete group", delete) == 0:
            raise NotFound(f"no group {group_id!r}")
        # Members go second: if this is interrupted, groups_of() hides them (no group document)
        # and create_group() of the same id clears them.
        await self._o().retry(
            "delete group: members", lambda: cols.group_members.delete_many({"group_id": group_id})
        )

    async def groups_of(self, user_id: str) -> list[str]:
        """Ids of the groups `user_id` belongs to, sorted."""
        cols = self._c()

        async def find() -> list[str]:
            ids = [str(d["group_id"]) async for d in cols.group_members.find({"user": user_id})]
            if not ids:
                return []
            return [str(d["_id"]) async for d in cols.groups.find({"_id": {"$in": ids}}, {"_id": 1})]

        return sorted(await self._o().retry("groups of", find))

    # -- cursors -------------------------------------------------------------------------------
    async def advance_cursor(
        self, user_id: str, conv: str, *, read_seq: int | None = None, delivered_seq: int | None = None
    ) -> ConvState:
        """Move a user's cursors forward (never back, never past the last seq); return the state."""
        cursors = self._c().cursors
        last = await self.last_seq(conv)
        read = 0 if read_seq is None else max(0, min(read_seq, last))
        delivered = 0 if delivered_seq is None else max(0, min(delivered_seq, last))

        key = {"user": user_id, "conv": conv}
        doc = await self._o().update_or_create(
            "advance cursor",
            cursors,
            key,
            {"$max": {"read_seq": read, "delivered_seq": delivered}},
            {**key, "read_seq": 0, "delivered_seq": 0},
        )
        return ConvState(
            conv=conv,
            last_seq=last,
            read_seq=int(doc.get("read_seq", 0)),
            delivered_seq=int(doc.get("delivered_seq", 0)),
        )

    async def conv_states(self, user_id: str, convs: Sequence[str] | None = None) -> list[ConvState]:
        """The user's state in `convs` (in that order), or in every conversation it takes part in.

        With `convs=None` the result lists the conversations the user is a member of, sorted by
        id: both sides of a direct conversation once it has a message, and the current members
        of a group.
        """
        cols = self._c()
        if convs is None:

            async def member_of() -> list[str]:
                return [str(d["conv"]) async for d in cols.conv_members.find({"user": user_id})]

            direct = await self._o().retry("conv states: members", member_of)
            wanted = sorted({*direct, *(_group_conv(g) for g in await self.groups_of(user_id))})
        else:
            wanted = list(dict.fromkeys(convs))
        if not wanted:
            return []
        lasts = await self._last_seqs(wanted)

        async def find_cursors() -> dict[str, Doc]:
            query = {"user": user_id, "conv": {"$in": wanted}}
            return {str(d["conv"]): d async for d in cols.cursors.find(query)}

        cursors = await self._o().retry("conv states: cursors", find_cursors)
        states: list[ConvState] = []
        for conv in wanted:
            cursor = cursors.get(conv, {})
            states.append(
                ConvState(
                    conv=conv,
                    last_seq=lasts.get(conv, 0),
                    read_seq=int(cursor.get("read_seq", 0)),
                    delivered_seq=int(cursor.get("delivered_seq", 0)),
                )
            )
        return states

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
        exists = await self._find_user(user_id) is not None
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
