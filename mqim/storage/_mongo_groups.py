"""The groups part of `MongoStorage`: create, read, change members, rename, delete, a user's groups."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pymongo import DeleteOne, UpdateOne

from mqim.storage._exceptions import AlreadyExists, NotFound
from mqim.storage._mongo_append import now_ms
from mqim.storage._mongo_ops import Ops
from mqim.storage._mongo_schema import Collections, Doc
from mqim.storage._records import GroupRecord, Role


class MongoGroups:
    """Groups on the `groups` and `group_members` collections."""

    def __init__(self, *, ops: Callable[[], Ops]) -> None:
        # Accessors, not objects: each call checks that the storage is still open, between
        # awaits too, as `MongoStorage`'s own methods do (`mqim/storage/_mongo.py`).
        self._o = ops

    def _c(self) -> Collections:
        return self._o().cols

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
