"""Storage: one contract (`Storage`, `SessionStore`) and its backends."""

from mqim.storage._contracts import SessionStore, Storage
from mqim.storage._exceptions import AlreadyExists, Conflict, NotFound, StorageError, Unavailable
from mqim.storage._mongo import MongoStorage
from mqim.storage._passwords import hash_password, verify_password
from mqim.storage._records import (
    AccountKind,
    AclRuleRecord,
    AppendResult,
    ConvState,
    GroupRecord,
    MessageRecord,
    NewMessage,
    QueuedMessage,
    RetainedRecord,
    Role,
    RoleRecord,
    StoredSession,
    UserChanges,
    UserRecord,
)
from mqim.storage._redis_sessions import RedisSessionStore
from mqim.storage._sqlite import SqliteStorage
from mqim.storage._sqlite_sessions import SqliteSessionStore

__all__ = [
    "AccountKind",
    "AclRuleRecord",
    "AlreadyExists",
    "AppendResult",
    "Conflict",
    "ConvState",
    "GroupRecord",
    "MessageRecord",
    "MongoStorage",
    "NewMessage",
    "NotFound",
    "QueuedMessage",
    "RedisSessionStore",
    "RetainedRecord",
    "Role",
    "RoleRecord",
    "SessionStore",
    "SqliteSessionStore",
    "SqliteStorage",
    "Storage",
    "StorageError",
    "StoredSession",
    "Unavailable",
    "UserChanges",
    "UserRecord",
    "hash_password",
    "verify_password",
]
