"""Repeat-safe MongoDB building blocks shared by `MongoStorage` and its ACL part.

Each helper runs through `with_retries`, so a transient failure is retried and a retried write
does no harm: inserts carry a token that recognises our own earlier attempt, upserts that lose a
race on a unique index are repeated (the document exists then), counters are atomic ``$inc``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from pymongo import DeleteOne, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from mqim.storage._exceptions import StorageError
from mqim.storage._mongo_errors import (
    DuplicateKey,
    RetryPolicy,
    bulk_write_errors,
    is_duplicate_error,
    with_retries,
)
from mqim.storage._mongo_schema import Collections, Doc

T = TypeVar("T")

# Retries of an upsert that lost a race on a unique index (the document exists afterwards).
UPSERT_ATTEMPTS: Final = 3


class Ops:
    """The collections of one database plus the retry policy."""

    def __init__(self, *, cols: Collections, policy: RetryPolicy) -> None:
        self.cols = cols
        self.policy = policy

    async def retry(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """`with_retries` with this policy."""
        return await with_retries(what, self.policy, op)

    async def upsert(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run one upsert, repeating it when two first upserts of a document raced."""
        for attempt in range(1, UPSERT_ATTEMPTS + 1):
            try:
                return await self.retry(what, op)
            except DuplicateKey:
                if attempt == UPSERT_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def bulk(
        self, what: str, collection: AsyncCollection[Doc], ops: list[UpdateOne | DeleteOne]
    ) -> None:
        """Run idempotent upserts/deletes (unordered); repeat those that lost an upsert race."""
        pending = ops

        async def run() -> list[UpdateOne | DeleteOne]:
            try:
                await collection.bulk_write(pending, ordered=False)
            except BulkWriteError as exc:
                errors = bulk_write_errors(exc)
                if errors and all(is_duplicate_error(e) for e in errors):
                    return [pending[int(e["index"])] for e in errors]
                raise
            return []

        for _ in range(UPSERT_ATTEMPTS):
            if not pending:
                return
            pending = await self.retry(what, run)
        if pending:
            raise StorageError(f"{what}: upsert kept colliding on a unique index")

    async def update_or_create(
        self, what: str, collection: AsyncCollection[Doc], query: Doc, update: Doc, initial: Doc
    ) -> Doc:
        """Apply `update` to the document matching `query` and return it, creating it first.

        The document is created (from `initial`, a duplicate meaning someone else did) only
        when the update finds nothing, and then updated: no upserting ``find_one_and_update``,
        whose race between two first callers some MongoDB-wire servers answer with no document
        even though they applied the update, so the caller could not learn its result.
        """

        async def modify() -> Doc | None:
            return await collection.find_one_and_update(query, update, return_document=ReturnDocument.AFTER)

        doc = await self.retry(what, modify)
        if doc is None:

            async def create() -> None:
                await collection.insert_one(dict(initial))

            with contextlib.suppress(DuplicateKey):
                await self.retry(what, create)
            doc = await self.retry(what, modify)
        if doc is None:
            raise StorageError(f"{what}: the document vanished while it was being updated")
        return doc

    async def bump(self, name: str, n: int = 1) -> int:
        """Add `n` to the counter `name` atomically; return its new value.

        A retried ``$inc`` may count twice: counters are used where a skipped value is harmless.
        """
        doc = await self.update_or_create(
            f"counter {name!r}",
            self.cols.counters,
            {"_id": name},
            {"$inc": {"value": n}},
            {"_id": name, "value": 0},
        )
        return int(doc["value"])

    async def counter(self, name: str) -> int:
        """The counter's current value, 0 if never bumped."""
        counters = self.cols.counters

        async def read() -> int:
            doc = await counters.find_one({"_id": name})
            return 0 if doc is None else int(doc.get("value", 0))

        return await self.retry(f"counter {name!r}", read)

    async def insert_new(self, what: str, collection: AsyncCollection[Doc], doc: Doc) -> bool:
        """Insert `doc` (with a fresh ``token``); False if its ``_id`` is already taken.

        A duplicate ``_id`` whose stored token is ours is our own insert from an attempt that
        succeeded before its reply was lost: that counts as inserted.
        """
        token = uuid.uuid4().hex
        stored_doc = {**doc, "token": token}

        async def insert() -> None:
            await collection.insert_one(dict(stored_doc))

        try:
            await self.retry(what, insert)
        except DuplicateKey:

            async def find() -> Doc | None:
                return await collection.find_one({"_id": doc["_id"]}, {"token": 1})

            stored = await self.retry(what, find)
            return stored is not None and stored.get("token") == token
        return True
