"""pymongo errors at the storage boundary: which are transient, retries, and translation.

Every call `MongoStorage` makes goes through `with_retries`, so no pymongo or bson exception
leaves the package: transient failures (a lost connection, no reachable server, a primary stepping
down) are retried with capped exponential back-off and end as `Unavailable`; a duplicate key
becomes the private `DuplicateKey` (an `AlreadyExists`) that callers use as a signal; everything
else becomes `StorageError`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from bson.errors import BSONError
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from mqim.storage._exceptions import AlreadyExists, StorageError, Unavailable

T = TypeVar("T")

# MongoDB error codes of failures that go away by themselves (a node restarting, an election).
_TRANSIENT_CODES: Final = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)
_DUPLICATE_KEY: Final = 11000


class DuplicateKey(AlreadyExists):
    """A write hit a unique index. Callers treat it as a signal (dedup, id taken).

    Attributes:
        key_pattern: The fields of the unique index that was hit, e.g. ``{"sender": 1, ...}``.
    """

    def __init__(self, message: str, *, key_pattern: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.key_pattern: dict[str, Any] = dict(key_pattern)

    def on(self, *fields: str) -> bool:
        """Whether the index hit is exactly the one on `fields` (or `_id` when none given)."""
        wanted = list(fields) if fields else ["_id"]
        # A server that does not report the pattern: only the primary key can be assumed.
        if not self.key_pattern:
            return wanted == ["_id"]
        return list(self.key_pattern) == wanted


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried.

    Attributes:
        attempts: Tries in total (at least 1).
        first_delay_s: Pause after the first failure; doubles each time, with jitter.
        max_delay_s: Cap on one pause.
    """

    attempts: int = 4
    first_delay_s: float = 0.05
    max_delay_s: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.first_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("delays must not be negative")


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same operation later may succeed."""
    if isinstance(exc, ConnectionFailure):  # AutoReconnect, NetworkTimeout, server selection
        return True
    if isinstance(exc, OperationFailure) and not isinstance(exc, BulkWriteError):
        return exc.code in _TRANSIENT_CODES or exc.has_error_label("RetryableWriteError")
    return False


def bulk_write_errors(exc: BulkWriteError) -> list[dict[str, Any]]:
    """The per-operation errors of a bulk write."""
    errors = exc.details.get("writeErrors", []) if isinstance(exc.details, dict) else []
    return [e for e in errors if isinstance(e, dict)]


def is_duplicate_error(error: Mapping[str, Any]) -> bool:
    """Whether one entry of a bulk write's ``writeErrors`` is a duplicate key."""
    return error.get("code") == _DUPLICATE_KEY


def translate(what: str, exc: BaseException) -> StorageError:
    """The `StorageError` for a pymongo or bson exception (raise it ``from exc``)."""
    if isinstance(exc, DuplicateKeyError):
        details = exc.details if isinstance(exc.details, dict) else {}
        pattern = details.get("keyPattern")
        return DuplicateKey(
            f"{what}: duplicate key: {exc}", key_pattern=pattern if isinstance(pattern, dict) else {}
        )
    if isinstance(exc, BulkWriteError):
        first = bulk_write_errors(exc)[:1]
        reason = first[0].get("errmsg", "?") if first else str(exc)
        return StorageError(f"{what}: MongoDB rejected the write: {reason}")
    if is_transient(exc):
        return Unavailable(f"{what}: MongoDB unavailable: {exc}")
    if isinstance(exc, ConfigurationError):
        return StorageError(f"{what}: bad MongoDB configuration: {exc}")
    if isinstance(exc, BSONError):
        return StorageError(f"{what}: value cannot be stored: {exc}")
    return StorageError(f"{what}: MongoDB error: {exc}")


async def with_retries(what: str, policy: RetryPolicy, op: Callable[[], Awaitable[T]]) -> T:
    """Run `op`, retrying transient failures; translate every pymongo/bson exception.

    `op` is called again from the start on each retry, so it must be safe to repeat (the callers
    make repeated inserts and updates harmless or detect them).

    Raises:
        Unavailable: Still failing transiently after `policy.attempts` tries.
        DuplicateKey: A unique index was hit.
        StorageError: Any other failure.
    """
    delay = policy.first_delay_s
    attempt = 1
    while True:
        try:
            return await op()
        except (PyMongoError, BSONError) as exc:
            if not is_transient(exc):
                raise translate(what, exc) from exc
            if attempt >= policy.attempts:
                raise Unavailable(f"{what}: MongoDB unavailable after {attempt} attempt(s): {exc}") from exc
        # Jitter spreads the retries of many concurrent callers after a shared outage.
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, policy.max_delay_s)
        attempt += 1
