"""The MongoDB layout of `MongoStorage`: collections, document shapes and indexes.

Collections (one database, default ``mqim``)::

    users          {_id: user_id, kind, password, disabled, created_ts}
    conversations  {_id: conv, last_seq}                 seq counter, $inc'ed atomically
    messages       {_id: server_id, conv, seq, sender, client_id, ts, kind, body, pending_ts}
                   unique (sender, client_id): the idempotency key
                   unique (conv, seq) where seq > 0: history pages
                   seq is null while the message is being appended (see `_mongo_append`)
    conv_members   {user, conv}                          direct conversations a user takes part in
                   unique (user, conv)
    groups         {_id: group_id, name, created_ts, token}
    group_members  {group_id, user, role}                unique (group_id, user), index (user)
    cursors        {user, conv, read_seq, delivered_seq} unique (user, conv)
    counters       {_id: name, value}                    "acl" (version), "rules", "user_changes"
    acl_rules      {_id: rule_id, text, name, created_ts, token}
    roles          {_id: name, description, created_ts, token}
    role_members   {role, user}                          unique (role, user), index (user)
    revoked_tokens {_id: jti, expires_ts, revoked_ts}    index (expires_ts)
    user_changes   {_id: rev, user, ts}                  the bounded account change log

Bodies are stored as the JSON text SQLite stores, so both backends accept and return exactly the
same values (BSON would refuse keys with ``$`` or ``.`` and integers beyond 64 bits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

Doc = dict[str, Any]

# Bumped when a change of layout needs a migration; stored in the `meta` collection.
SCHEMA_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Collections:
    """The collections of one mqim database."""

    meta: AsyncCollection[Doc]
    users: AsyncCollection[Doc]
    conversations: AsyncCollection[Doc]
    messages: AsyncCollection[Doc]
    conv_members: AsyncCollection[Doc]
    groups: AsyncCollection[Doc]
    group_members: AsyncCollection[Doc]
    cursors: AsyncCollection[Doc]
    counters: AsyncCollection[Doc]
    acl_rules: AsyncCollection[Doc]
    roles: AsyncCollection[Doc]
    role_members: AsyncCollection[Doc]
    revoked_tokens: AsyncCollection[Doc]
    user_changes: AsyncCollection[Doc]

    @classmethod
    def of(cls, db: AsyncDatabase[Doc]) -> Collections:
        """The collections of `db` (no I/O)."""
        return cls(
            meta=db["meta"],
            users=db["users"],
            conversations=db["conversations"],
            messages=db["messages"],
            conv_members=db["conv_members"],
            groups=db["groups"],
            group_members=db["group_members"],
            cursors=db["cursors"],
            counters=db["counters"],
            acl_rules=db["acl_rules"],
            roles=db["roles"],
            role_members=db["role_members"],
            revoked_tokens=db["revoked_tokens"],
            user_changes=db["user_changes"],
        )


# Index names are fixed so a changed definition fails loudly at open() instead of duplicating.
IDEMPOTENCY_INDEX: Final = ("sender", "client_id")

INDEXES: Final[dict[str, list[IndexModel]]] = {
    "messages": [
        IndexModel([("sender", ASCENDING), ("client_id", ASCENDING)], name="idempotency", unique=True),
        IndexModel(
            [("conv", ASCENDING), ("seq", ASCENDING)],
            name="conv_seq",
            unique=True,
            # Pending messages (seq null) do not collide with each other. A history query
            # (seq > after_seq >= 0) implies this filter, so MongoDB's planner can use the index.
            partialFilterExpression={"seq": {"$gt": 0}},
        ),
    ],
    "conv_members": [
        IndexModel([("user", ASCENDING), ("conv", ASCENDING)], name="user_conv", unique=True),
    ],
    "group_members": [
        IndexModel([("group_id", ASCENDING), ("user", ASCENDING)], name="group_user", unique=True),
        IndexModel([("user", ASCENDING), ("group_id", ASCENDING)], name="user_group"),
    ],
    "cursors": [
        IndexModel([("user", ASCENDING), ("conv", ASCENDING)], name="user_conv", unique=True),
    ],
    "role_members": [
        IndexModel([("role", ASCENDING), ("user", ASCENDING)], name="role_user", unique=True),
        IndexModel([("user", ASCENDING), ("role", ASCENDING)], name="user_role"),
    ],
    "revoked_tokens": [
        IndexModel([("expires_ts", ASCENDING)], name="expires_ts"),
    ],
}
