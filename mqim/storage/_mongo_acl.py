"""The access-control part of `MongoStorage`: rules, roles, revoked tokens, account change log.

MongoDB has no triggers, so the counters SQLite keeps with triggers are moved explicitly, *after*
the change they announce: a broker that polls `acl_version` and sees it move then reads the new
state. (A process dying between a change and its bump delays the announcement until the next
change; that is the price of having no multi-document transactions.)

The account change log takes a number from a counter, then inserts the entry. Two writers may
insert out of order, so a reader must not skip a number that is merely late: `user_changes`
stops before a missing number unless the entries after it are older than `LOG_GAP_WAIT_MS`
(the missing one then belongs to a writer that died).
"""

from __future__ import annotations

import time
from typing import Final

from pymongo import UpdateOne

from mqim.storage._exceptions import AlreadyExists, NotFound, StorageError
from mqim.storage._mongo_ops import Ops
from mqim.storage._mongo_schema import Doc
from mqim.storage._records import AclRuleRecord, RoleRecord, UserChanges

# Revocations are kept this long past their token's expiry (beyond any verifier's clock leeway).
REVOCATION_GRACE_S: Final = 86_400
# Entries the account change log keeps (older ones are pruned).
USER_CHANGES_KEPT: Final = 10_000
# A hole in the change log younger than this may still be filled by a slower writer.
LOG_GAP_WAIT_MS: Final = 10_000

ACL_COUNTER: Final = "acl"
RULES_COUNTER: Final = "acl_rules"
USERS_COUNTER: Final = "user_changes"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _rule(doc: Doc) -> AclRuleRecord:
    return AclRuleRecord(
        rule_id=int(doc["_id"]),
        text=str(doc["text"]),
        name=str(doc.get("name", "")),
        created_ts=int(doc.get("created_ts", 0)),
    )


def settled_changes(since: int, rows: list[Doc], now_ms: int) -> tuple[int, list[str]]:
    """The change-log entries a reader may consume after `since`, and the rev it reaches.

    `rows` are entries with ``_id > since`` in ascending order. Reading stops before the first
    missing number when the entry after the hole is recent (its writer may be slow), and goes
    past it when it is old (its writer died).
    """
    rev = since
    users: list[str] = []
    for row in rows:
        number = int(row["_id"])
        if number != rev + 1 and now_ms - int(row.get("ts", 0)) < LOG_GAP_WAIT_MS:
            break
        rev = number
        users.append(str(row["user"]))
    return rev, users


class MongoAcl:
    """Rules, roles, revocations and the account change log on `ops`' collections."""

    def __init__(self, *, ops: Ops) -> None:
        self._ops = ops

    async def _bump_acl(self) -> None:
        await self._ops.bump(ACL_COUNTER)

    # -- rules ---------------------------------------------------------------------------------
    async def add_acl_rule(self, text: str, name: str) -> AclRuleRecord:
        """See `Storage.add_acl_rule`."""
        ops = self._ops
        rule_id = await ops.bump(RULES_COUNTER)
        ts = _now_ms()
        doc = {"_id": rule_id, "text": text, "name": name, "created_ts": ts}
        if not await ops.insert_new("add ACL rule", ops.cols.acl_rules, doc):
            raise StorageError(f"ACL rule id {rule_id} taken: the rules counter is behind")
        await self._bump_acl()
        return AclRuleRecord(rule_id=rule_id, text=text, name=name, created_ts=ts)

    async def list_acl_rules(self) -> list[AclRuleRecord]:
        """See `Storage.list_acl_rules`."""
        rules = self._ops.cols.acl_rules

        async def find() -> list[AclRuleRecord]:
            return [_rule(d) async for d in rules.find({}).sort("_id", 1)]

        return await self._ops.retry("list ACL rules", find)

    async def remove_acl_rule(self, rule_id: int) -> None:
        """See `Storage.remove_acl_rule`."""
        rules = self._ops.cols.acl_rules

        async def delete() -> int:
            return (await rules.delete_one({"_id": rule_id})).deleted_count

        if await self._ops.retry("remove ACL rule", delete) == 0:
            raise NotFound(f"no ACL rule {rule_id}")
        await self._bump_acl()

    # -- roles ---------------------------------------------------------------------------------
    async def create_role(self, name: str, description: str) -> RoleRecord:
        """See `Storage.create_role`."""
        ops = self._ops
        ts = _now_ms()
        doc = {"_id": name, "description": description, "created_ts": ts}
        if not await ops.insert_new("create role", ops.cols.roles, doc):
            raise AlreadyExists(f"role {name!r} already exists")
        # Assignments left behind by an interrupted delete of an earlier role of this name.
        await ops.retry("create role", lambda: ops.cols.role_members.delete_many({"role": name}))
        await self._bump_acl()
        return RoleRecord(name=name, description=description, members=(), created_ts=ts)

    async def delete_role(self, name: str) -> None:
        """See `Storage.delete_role`."""
        ops = self._ops

        async def delete() -> int:
            return (await ops.cols.roles.delete_one({"_id": name})).deleted_count

        if await ops.retry("delete role", delete) == 0:
            raise NotFound(f"no role {name!r}")
        await ops.retry("delete role", lambda: ops.cols.role_members.delete_many({"role": name}))
        await self._bump_acl()

    async def list_roles(self) -> list[RoleRecord]:
        """See `Storage.list_roles`."""
        cols = self._ops.cols

        async def find() -> list[RoleRecord]:
            members: dict[str, list[str]] = {}
            async for d in cols.role_members.find({}).sort([("role", 1), ("user", 1)]):
                members.setdefault(str(d["role"]), []).append(str(d["user"]))
            return [
                RoleRecord(
                    name=str(d["_id"]),
                    description=str(d.get("description", "")),
                    members=tuple(members.get(str(d["_id"]), ())),
                    created_ts=int(d.get("created_ts", 0)),
                )
                async for d in cols.roles.find({}).sort("_id", 1)
            ]

        return await self._ops.retry("list roles", find)

    async def _require_role(self, role: str) -> None:
        roles = self._ops.cols.roles

        async def find() -> Doc | None:
            return await roles.find_one({"_id": role}, {"_id": 1})

        if await self._ops.retry("find role", find) is None:
            raise NotFound(f"no role {role!r}")

    async def assign_role(self, user_id: str, role: str, *, user_exists: bool) -> None:
        """See `Storage.assign_role` (the caller checks the user)."""
        if not user_exists:
            raise NotFound(f"no user {user_id!r}")
        await self._require_role(role)
        ops = self._ops
        key = {"role": role, "user": user_id}
        await ops.bulk(
            "assign role", ops.cols.role_members, [UpdateOne(key, {"$setOnInsert": key}, upsert=True)]
        )
        await self._bump_acl()

    async def unassign_role(self, user_id: str, role: str) -> None:
        """See `Storage.unassign_role`."""
        await self._require_role(role)
        members = self._ops.cols.role_members

        async def delete() -> int:
            return (await members.delete_one({"role": role, "user": user_id})).deleted_count

        if await self._ops.retry("unassign role", delete) == 0:
            raise NotFound(f"user {user_id!r} does not hold role {role!r}")
        await self._bump_acl()

    async def roles_of(self, user_id: str) -> list[str]:
        """See `Storage.roles_of`."""
        members = self._ops.cols.role_members

        async def find() -> list[str]:
            return [str(d["role"]) async for d in members.find({"user": user_id}).sort("role", 1)]

        return await self._ops.retry("roles of", find)

    async def forget_user(self, user_id: str) -> None:
        """Drop a removed account's role assignments (announced if there were any)."""
        members = self._ops.cols.role_members

        async def delete() -> int:
            return (await members.delete_many({"user": user_id})).deleted_count

        if await self._ops.retry("remove user: roles", delete):
            await self._bump_acl()

    async def acl_version(self) -> int:
        """See `Storage.acl_version`."""
        return await self._ops.counter(ACL_COUNTER)

    # -- revoked tokens ------------------------------------------------------------------------
    async def revoke_token(self, token_id: str, expires_ts: int | None) -> None:
        """See `Storage.revoke_token`."""
        ops = self._ops
        tokens = ops.cols.revoked_tokens
        now_s = _now_ms() // 1000

        async def insert() -> None:
            await tokens.update_one(
                {"_id": token_id},
                {"$setOnInsert": {"expires_ts": expires_ts, "revoked_ts": now_s}},
                upsert=True,
            )

        await ops.upsert("revoke token", insert)

        # Revoking again never shortens what is kept: None (unknown expiry) wins, else the later.
        async def extend() -> None:
            if expires_ts is None:
                await tokens.update_one({"_id": token_id}, {"$set": {"expires_ts": None}})
            else:
                await tokens.update_one(
                    {"_id": token_id, "expires_ts": {"$type": "number", "$lt": expires_ts}},
                    {"$set": {"expires_ts": expires_ts}},
                )

        await ops.retry("revoke token", extend)

        # Entries of tokens long expired protect nothing: the collection stays as small as the
        # live tokens.
        async def prune() -> None:
            await tokens.delete_many({"expires_ts": {"$type": "number", "$lt": now_s - REVOCATION_GRACE_S}})

        await ops.retry("revoke token: prune", prune)

    async def is_token_revoked(self, token_id: str) -> bool:
        """See `Storage.is_token_revoked`."""
        tokens = self._ops.cols.revoked_tokens

        async def find() -> bool:
            return await tokens.find_one({"_id": token_id}, {"_id": 1}) is not None

        return await self._ops.retry("token revoked?", find)

    # -- account change log --------------------------------------------------------------------
    async def log_user_change(self, user_id: str) -> None:
        """Append `user_id` to the change log (after its account changed) and prune the log."""
        ops = self._ops
        rev = await ops.bump(USERS_COUNTER)
        log = ops.cols.user_changes

        async def insert() -> None:
            await log.update_one(
                {"_id": rev}, {"$setOnInsert": {"user": user_id, "ts": _now_ms()}}, upsert=True
            )

        await ops.upsert("log account change", insert)
        if rev > USER_CHANGES_KEPT:

            async def prune() -> None:
                await log.delete_many({"_id": {"$lte": rev - USER_CHANGES_KEPT}})

            await ops.retry("prune account change log", prune)

    async def user_changes(self, since: int | None, limit: int) -> UserChanges:
        """See `Storage.user_changes`."""
        ops = self._ops
        current = await ops.counter(USERS_COUNTER)
        if since is None:
            # Every number up to `current` was taken after its account write: a caller that
            # reads the accounts now sees those changes, so this is a safe starting point.
            return UserChanges(rev=current, users=(), complete=True)
        if since > current:
            # The caller has seen changes this database never had (a restored backup).
            return UserChanges(rev=current, users=(), complete=False)
        log = ops.cols.user_changes

        async def read() -> tuple[int | None, list[Doc]]:
            first = await log.find_one({}, sort=[("_id", 1)])
            # limit(0) would mean "no limit" to MongoDB.
            rows = (
                []
                if limit <= 0
                else [d async for d in log.find({"_id": {"$gt": since}}).sort("_id", 1).limit(limit)]
            )
            return (None if first is None else int(first["_id"])), rows

        oldest, rows = await ops.retry("user changes", read)
        complete = oldest is None or since >= oldest - 1
        # Numbers below the oldest entry were pruned, not late: no reason to wait for them.
        start = since if complete or oldest is None else oldest - 1
        rev, users = settled_changes(start, rows, _now_ms()) if rows else (since, [])
        return UserChanges(rev=rev, users=tuple(dict.fromkeys(users)), complete=complete)
