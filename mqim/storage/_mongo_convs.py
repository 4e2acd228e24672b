"""The conversations part of `MongoStorage`: append and read messages, move and read cursors.

The append itself is `Appender` (`mqim/storage/_mongo_append.py`); this records a new
conversation's members first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from pymongo import DeleteOne, UpdateOne

from mqim.storage._mongo_append import Appender, initial_members, record_of
from mqim.storage._mongo_groups import MongoGroups
from mqim.storage._mongo_ops import Ops
from mqim.storage._mongo_schema import Collections, Doc
from mqim.storage._records import AppendResult, ConvState, MessageRecord, NewMessage

# Conversations whose members this process has already recorded; cleared when full.
MEMBER_CACHE_MAX: Final = 65_536


def _group_conv(group_id: str) -> str:
    return f"g:{group_id}"


class MongoConversations:
    """Messages, conversation members and cursors; a user's groups come from `groups`."""

    def __init__(
        self, *, ops: Callable[[], Ops], appender: Callable[[], Appender], groups: MongoGroups
    ) -> None:
        # Accessors, not objects: each call checks that the storage is still open, between
        # awaits too, as `MongoStorage`'s own methods do (`mqim/storage/_mongo.py`).
        self._o = ops
        self._appender = appender
        self._groups = groups
        self._known_convs: set[str] = set()

    def _c(self) -> Collections:
        return self._o().cols

    async def append_messages(self, messages: Sequence[NewMessage]) -> list[AppendResult]:
        """Store a batch: dedup by (sender, client_id), assign seqs, persist; see `Storage`."""
        self._c()
        batch = list(messages)
        if not batch:
            return []
        await self._record_members(batch)
        return await self._appender().append(batch)

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
            wanted = sorted({*direct, *(_group_conv(g) for g in await self._groups.groups_of(user_id))})
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
