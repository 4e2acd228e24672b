"""Storage: one contract (`Storage`, `SessionStore`) and its backends."""

from mqim.storage._base import SessionStore, Storage
from mqim.storage._exceptions import AlreadyExists, Conflict, NotFound, StorageError, Unavailable
from mqim.storage._passwords import hash_password, verify_password
from mqim.storage._records import (
    AccountKind,
    AppendResult,
    ConvState,
    GroupRecord,
    MessageRecord,
    NewMessage,
    QueuedMessage,
    RetainedRecord,
    Role,
    StoredSession,
    UserRecord,
)
from mqim.storage._sqlite import SqliteStorage
from mqim.storage._sqlite_sessions import SqliteSessionStore

__all__ = [
    "AccountKind",
    "AlreadyExists",
    "AppendResult",
    "Conflict",
    "ConvState",
    "GroupRecord",
    "MessageRecord",
    "NewMessage",
    "NotFound",
    "QueuedMessage",
    "RetainedRecord",
    "Role",
    "SessionStore",
    "SqliteSessionStore",
    "SqliteStorage",
    "Storage",
    "StorageError",
    "StoredSession",
    "Unavailable",
    "UserRecord",
    "hash_password",
    "verify_password",
]
