"""Storage errors. Backend exceptions (sqlite3, pymongo, redis) never escape this package.

Hierarchy::

    StorageError              any storage failure; backends translate theirs with `raise ... from`
    ├── NotFound              the user, group or record does not exist
    ├── AlreadyExists         creating something whose id is taken
    ├── Conflict              a rule of the model forbids the change (e.g. group full)
    └── Unavailable           the backend cannot be reached or is closed; safe to retry later
"""

from __future__ import annotations


class StorageError(Exception):
    """Any storage failure."""


class NotFound(StorageError):
    """The requested user, group or record does not exist."""


class AlreadyExists(StorageError):
    """An object with this id already exists."""


class Conflict(StorageError):
    """The change breaks a rule of the model (for example a full group)."""


class Unavailable(StorageError):
    """The backend is closed or cannot be reached."""
