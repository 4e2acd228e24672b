"""The accounts part of `MongoStorage`: create, read, update, remove users, check passwords.

Passwords are hashed with scrypt in a worker thread (`asyncio.to_thread`), never on the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from mqim.storage._exceptions import AlreadyExists, NotFound
from mqim.storage._mongo_acl import MongoAcl
from mqim.storage._mongo_append import now_ms
from mqim.storage._mongo_ops import Ops
from mqim.storage._mongo_schema import Collections, Doc
from mqim.storage._passwords import DUMMY_HASH, hash_password
from mqim.storage._passwords import verify_password as check_password
from mqim.storage._records import AccountKind, UserRecord


def _user(doc: Doc) -> UserRecord:
    return UserRecord(
        user_id=str(doc["_id"]),
        kind=AccountKind(doc.get("kind", AccountKind.USER.value)),
        disabled=bool(doc.get("disabled", False)),
        created_ts=int(doc.get("created_ts", 0)),
    )


class MongoUsers:
    """Accounts on the `users` collection; every change is logged through `MongoAcl`."""

    def __init__(self, *, ops: Callable[[], Ops], acl: Callable[[], MongoAcl]) -> None:
        # Accessors, not objects: each call checks that the storage is still open, between
        # awaits too, as `MongoStorage`'s own methods do (`mqim/storage/_mongo.py`).
        self._o = ops
        self._a = acl

    def _c(self) -> Collections:
        return self._o().cols

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

    async def find_user(self, user_id: str) -> Doc | None:
        users = self._c().users

        async def find() -> Doc | None:
            return await users.find_one({"_id": user_id})

        return await self._o().retry("get user", find)

    async def get_user(self, user_id: str) -> UserRecord | None:
        """Return the account, or None."""
        doc = await self.find_user(user_id)
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
        doc = await self.find_user(user_id)
        encoded = DUMMY_HASH if doc is None else str(doc.get("password", DUMMY_HASH))
        matches = await asyncio.to_thread(check_password, password, encoded)
        if doc is None or not matches:
            return None
        user = _user(doc)
        return None if user.disabled else user
