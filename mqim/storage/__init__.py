"""Storage: one contract (`Storage`, `SessionStore`) and its backends."""

from mqim.storage._base import SessionStore, Storage
from mqim.storage._exceptions import AlreadyExists, Conflict, NotFound, StorageError, Unavailable
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
    "Storage",
    "StorageError",
    "StoredSession",
    "Unavailable",
    "UserRecord",
]
