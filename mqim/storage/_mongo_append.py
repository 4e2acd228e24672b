"""`append_messages` on MongoDB: idempotent inserts, then atomic seq blocks.

Without multi-document transactions the append runs in three steps, each safe to repeat:

1. Insert every distinct (sender, client_id) of the batch with ``seq: null`` (one unordered
   ``insert_many``). The unique index on (sender, client_id) is the dedup signal: a
   duplicate-key error means the message is already stored (or being stored), never a race to
   resolve by locking.
2. Take one block of seqs per conversation with ``find_one_and_update($inc: n)`` on the
   conversation's counter, so concurrent batches (from any number of workers) get disjoint,
   gapless ranges, and each batch's messages are numbered in batch order.
3. Set each message's seq with an update conditioned on ``seq: null``.

A duplicate whose original still has ``seq: null`` is either ours (an earlier attempt of this
call, recognised by its server id), or another worker's append in flight: we wait for it, and
only if it stays pending longer than `STALE_PENDING_MS` (its writer died between steps 1 and 3)
do we complete it ourselves; that retry is then the one that reports ``created=True``. A crash or
a retried ``$inc`` between steps 2 and 3 can leave a gap in the seqs, never a duplicate or a
reordering. History reads only see messages with a seq.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from mqim.protocol import InvalidId, parse_conv
from mqim.storage._exceptions import StorageError
from mqim.storage._mongo_errors import (
    bulk_write_errors,
    is_duplicate_error,
    translate,
    with_retries,
)
from mqim.storage._mongo_ops import Ops
from mqim.storage._mongo_schema import Doc
from mqim.storage._records import AppendResult, MessageRecord, NewMessage

# A pending message older than this is taken over: its writer is presumed dead.
STALE_PENDING_MS: Final = 5_000
# Pause between looks at another writer's pending message (doubles up to the cap).
PENDING_POLL_S: Final = 0.02
PENDING_POLL_MAX_S: Final = 0.25


def now_ms() -> int:
    """Wall-clock milliseconds."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One distinct (sender, client_id) of a batch, ready to insert."""

    first: int  # index in the batch of its first occurrence
    message: NewMessage
    server_id: str
    body: str

    @property
    def key(self) -> tuple[str, str]:
        """The idempotency key."""
        return (self.message.sender, self.message.client_id)


def dump_body(body: dict[str, Any]) -> str:
    """The body as compact JSON (the same text SQLite stores)."""
    try:
        return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StorageError(f"message body is not JSON-serialisable: {exc}") from exc


def plan(batch: Sequence[NewMessage]) -> tuple[list[Candidate], list[int]]:
    """Distinct messages of `batch`, and for each batch entry the index of its candidate.

    A later entry with the key of an earlier one is a duplicate inside the batch: it maps to the
    earlier candidate and is reported with ``created=False``.
    """
    candidates: list[Candidate] = []
    by_key: dict[tuple[str, str], int] = {}
    slots: list[int] = []
    for index, message in enumerate(batch):
        key = (message.sender, message.client_id)
        slot = by_key.get(key)
        if slot is None:
            slot = by_key[key] = len(candidates)
            candidates.append(Candidate(index, message, uuid.uuid4().hex, dump_body(message.body)))
        slots.append(slot)
    return candidates, slots


def new_doc(candidate: Candidate, pending_ts: int) -> Doc:
    """The document inserted (with a null seq) for a candidate."""
    m = candidate.message
    return {
        "_id": candidate.server_id,
        "conv": m.conv,
        "seq": None,
        "sender": m.sender,
        "client_id": m.client_id,
        "ts": m.ts,
        "kind": m.kind,
        "body": candidate.body,
        "pending_ts": pending_ts,
    }


def record_of(doc: Doc) -> MessageRecord:
    """The `MessageRecord` of a stored message document with a seq."""
    try:
        body = json.loads(doc["body"])
        return MessageRecord(
            conv=str(doc["conv"]),
            seq=int(doc["seq"]),
            server_id=str(doc["_id"]),
            sender=str(doc["sender"]),
            client_id=str(doc["client_id"]),
            ts=int(doc["ts"]),
            kind=str(doc["kind"]),
            body=body if isinstance(body, dict) else {},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StorageError(f"malformed message document {doc.get('_id')!r}: {exc}") from exc


def initial_members(message: NewMessage) -> tuple[str, ...]:
    """Who takes part in a conversation started by `message` (groups manage their own)."""
    try:
        kind, ids = parse_conv(message.conv)
    except InvalidId:
        return (message.sender,)
    return ids if kind == "d" else ()


def seq_blocks(order: Sequence[tuple[int, str]]) -> dict[str, int]:
    """How many seqs each conversation needs, for candidates in `order` (index, conv)."""
    counts: dict[str, int] = {}
    for _, conv in order:
        counts[conv] = counts.get(conv, 0) + 1
    return counts


def assign_seqs(order: Sequence[tuple[int, str]], lasts: dict[str, int]) -> dict[int, int]:
    """Number candidates within each conversation's block, in `order`.

    Args:
        order: (candidate index, conv) sorted by position in the batch.
        lasts: Per conversation, the counter value after the block was taken.
    """
    counts = seq_blocks(order)
    next_seq = {conv: lasts[conv] - n + 1 for conv, n in counts.items()}
    seqs: dict[int, int] = {}
    for index, conv in order:
        seqs[index] = next_seq[conv]
        next_seq[conv] += 1
    return seqs


class Appender:
    """Runs the three steps for one batch against the collections."""

    def __init__(self, *, ops: Ops) -> None:
        self._ops = ops
        self._cols = ops.cols
        self._policy = ops.policy

    async def append(self, batch: Sequence[NewMessage]) -> list[AppendResult]:
        """See `Storage.append_messages`."""
        candidates, slots = plan(batch)
        if not candidates:
            return []
        duplicates = await self._insert(candidates)
        done: dict[int, AppendResult] = {}
        # (candidate index, doc id, conv) whose seq this call sets.
        mine: list[tuple[int, str, str]] = [
            (i, c.server_id, c.message.conv) for i, c in enumerate(candidates) if i not in duplicates
        ]
        if duplicates:
            mine += await self._resolve_duplicates(candidates, sorted(duplicates), done)
        if mine:
            mine.sort()
            await self._number(candidates, mine, done)
        results: list[AppendResult] = []
        for index, slot in enumerate(slots):
            result = done[slot]
            if index != candidates[slot].first and result.created:
                result = AppendResult(record=result.record, created=False)
            results.append(result)
        return results

    # -- step 1 ------------------------------------------------------------------------------------
    async def _insert(self, candidates: list[Candidate]) -> set[int]:
        """Insert all candidates; return the indexes that hit the idempotency index."""
        docs = [new_doc(c, now_ms()) for c in candidates]
        messages = self._cols.messages

        async def insert() -> set[int]:
            try:
                await messages.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                errors = bulk_write_errors(exc)
                if not errors or not all(is_duplicate_error(e) for e in errors):
                    raise translate("append messages", exc) from exc
                # A duplicate _id is our own insert from an earlier attempt: same signal.
                return {int(e["index"]) for e in errors}
            return set()

        return await with_retries("append messages", self._policy, insert)

    # -- duplicates --------------------------------------------------------------------------------
    async def _originals(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Doc]:
        query = {"$or": [{"sender": s, "client_id": c} for s, c in keys]}

        async def find() -> dict[tuple[str, str], Doc]:
            found: dict[tuple[str, str], Doc] = {}
            async for doc in self._cols.messages.find(query):
                found[(doc["sender"], doc["client_id"])] = doc
            return found

        return await with_retries("append messages: read originals", self._policy, find)

    async def _resolve_duplicates(
        self, candidates: list[Candidate], duplicates: list[int], done: dict[int, AppendResult]
    ) -> list[tuple[int, str, str]]:
        """Settle candidates already stored; return those this call must still number."""
        mine: list[tuple[int, str, str]] = []
        waiting = duplicates
        delay = PENDING_POLL_S
        while waiting:
            originals = await self._originals([candidates[i].key for i in waiting])
            still: list[int] = []
            for i in waiting:
                doc = originals.get(candidates[i].key)
                if doc is None:
                    # Hit on _id but no such key: our own insert of an earlier attempt was
                    # removed meanwhile, which nothing in mqim does.
                    raise StorageError(f"append messages: message {candidates[i].key} vanished")
                if doc.get("seq") is not None:
                    done[i] = AppendResult(record=record_of(doc), created=False)
                elif doc["_id"] == candidates[i].server_id:
                    mine.append((i, candidates[i].server_id, str(doc["conv"])))
                elif now_ms() - int(doc.get("pending_ts") or 0) > STALE_PENDING_MS:
                    mine.append((i, str(doc["_id"]), str(doc["conv"])))
                else:
                    still.append(i)  # another writer is numbering it right now
            waiting = still
            if waiting:
                await asyncio.sleep(delay)
                delay = min(delay * 2, PENDING_POLL_MAX_S)
        return mine

    # -- steps 2 and 3 -----------------------------------------------------------------------------
    async def _take_block(self, conv: str, n: int) -> int:
        doc = await self._ops.update_or_create(
            "append messages: take seqs",
            self._cols.conversations,
            {"_id": conv},
            {"$inc": {"last_seq": n}},
            {"_id": conv, "last_seq": 0},
        )
        return int(doc["last_seq"])

    async def _number(
        self, candidates: list[Candidate], mine: list[tuple[int, str, str]], done: dict[int, AppendResult]
    ) -> None:
        order = [(i, conv) for i, _, conv in mine]
        lasts = {conv: await self._take_block(conv, n) for conv, n in seq_blocks(order).items()}
        seqs = assign_seqs(order, lasts)
        updates = [
            UpdateOne({"_id": doc_id, "seq": None}, {"$set": {"seq": seqs[i]}}) for i, doc_id, _ in mine
        ]
        messages = self._cols.messages

        async def update() -> int:
            result = await messages.bulk_write(updates, ordered=False)
            return result.matched_count

        matched = await with_retries("append messages: set seqs", self._policy, update)
        docs: dict[str, Doc] = {}
        if matched != len(updates):
            # Someone else numbered some of them (a stale take-over), or an earlier attempt of
            # this update already did: read what is stored.
            ids = [doc_id for _, doc_id, _ in mine]

            async def read() -> dict[str, Doc]:
                return {str(d["_id"]): d async for d in messages.find({"_id": {"$in": ids}})}

            docs = await with_retries("append messages: read back", self._policy, read)
        for i, doc_id, _ in mine:
            stored = docs.get(doc_id)
            if stored is not None and stored.get("seq") != seqs[i]:
                done[i] = AppendResult(record=record_of(stored), created=False)
                continue
            m, c = candidates[i].message, candidates[i]
            if doc_id == c.server_id:
                record = MessageRecord(
                    conv=m.conv,
                    seq=seqs[i],
                    server_id=c.server_id,
                    sender=m.sender,
                    client_id=m.client_id,
                    ts=m.ts,
                    kind=m.kind,
                    body=dict(m.body),
                )
            else:
                # A stale message of a dead writer, completed by us: its stored fields count.
                original = stored if stored is not None else await self._read_one(doc_id)
                record = record_of({**original, "seq": seqs[i]})
            done[i] = AppendResult(record=record, created=True)

    async def _read_one(self, doc_id: str) -> Doc:
        messages = self._cols.messages

        async def read() -> Doc | None:
            return await messages.find_one({"_id": doc_id})

        doc = await with_retries("append messages: read back", self._policy, read)
        if doc is None:
            raise StorageError(f"append messages: message {doc_id!r} vanished")
        return doc
