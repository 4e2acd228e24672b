"""The storage contract: one interface, several backends (SQLite embedded, MongoDB, Redis).

All methods are coroutines and must never block the event loop. Every backend exception is
translated into `mqim.storage.StorageError` (or a subclass) at this boundary.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType
from typing import Self

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


class Storage(abc.ABC):
    """Users, conversations, messages, groups and cursors.

    Use as an async context manager, or call `open()` and `close()`.
    """

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, create the schema or migrate it to the current version."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending writes and release the backend."""

    # -- users ---------------------------------------------------------------------------------
    @abc.abstractmethod
    async def add_user(
        self, user_id: str, *, password: str, kind: AccountKind = AccountKind.USER
    ) -> UserRecord:
        """Create an account; raises `AlreadyExists` if the id is taken."""

    @abc.abstractmethod
    async def add_users(
        self, user_ids: Sequence[str], *, password: str, kind: AccountKind = AccountKind.USER
    ) -> int:
        """Create many accounts sharing one password, hashed once (fleets of devices, load tests).

        Ids that already exist are skipped; returns how many accounts were created.
        """

    @abc.abstractmethod
    async def get_user(self, user_id: str) -> UserRecord | None:
        """Return the account, or None."""

    @abc.abstractmethod
    async def list_users(self) -> list[UserRecord]:
        """All accounts, sorted by id."""

    @abc.abstractmethod
    async def set_password(self, user_id: str, password: str) -> None:
        """Replace the password; raises `NotFound`."""

    @abc.abstractmethod
    async def set_disabled(self, user_id: str, disabled: bool) -> None:
        """Disable or enable an account; raises `NotFound`."""

    @abc.abstractmethod
    async def remove_user(self, user_id: str) -> None:
        """Delete an account (its messages stay); raises `NotFound`."""

    @abc.abstractmethod
    async def verify_password(self, user_id: str, password: str) -> UserRecord | None:
        """Return the account if it exists, is enabled and `password` matches, else None.

        The hash comparison is constant-time and runs off the event loop.
        """

    # -- messages ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def append_messages(self, messages: Sequence[NewMessage]) -> list[AppendResult]:
        """Store a batch atomically per message: dedup by (sender, client_id), assign seq, persist.

        Results come back in the order of `messages`. Seqs within a conversation follow the order
        of the batch. A message whose (sender, client_id) is already stored is not stored again:
        its result has `created=False` and the original record.
        """

    @abc.abstractmethod
    async def get_messages(
        self,
        conv: str,
        *,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int = 100,
        newest: bool = False,
    ) -> list[MessageRecord]:
        """Messages of `conv` with `after_seq < seq < before_seq`, in ascending seq order.

        With `newest=True` the page is the `limit` highest seqs of that range (for history).
        """

    @abc.abstractmethod
    async def last_seq(self, conv: str) -> int:
        """The highest seq of `conv`, 0 if it has none."""

    # -- groups --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_group(
        self, group_id: str, *, name: str, owner: str, members: Sequence[str]
    ) -> GroupRecord:
        """Create a group owned by `owner`; raises `AlreadyExists`."""

    @abc.abstractmethod
    async def get_group(self, group_id: str) -> GroupRecord | None:
        """Return the group with its members, or None."""

    @abc.abstractmethod
    async def set_members(self, group_id: str, changes: dict[str, Role | None]) -> GroupRecord:
        """Add, change or (with None) remove members; raises `NotFound`."""

    @abc.abstractmethod
    async def rename_group(self, group_id: str, name: str) -> GroupRecord:
        """Rename a group; raises `NotFound`."""

    @abc.abstractmethod
    async def delete_group(self, group_id: str) -> None:
        """Delete a group (its messages stay); raises `NotFound`."""

    @abc.abstractmethod
    async def groups_of(self, user_id: str) -> list[str]:
        """Ids of the groups `user_id` belongs to, sorted."""

    # -- cursors -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def advance_cursor(
        self, user_id: str, conv: str, *, read_seq: int | None = None, delivered_seq: int | None = None
    ) -> ConvState:
        """Move a user's cursors forward (never back) and return the resulting state."""

    @abc.abstractmethod
    async def conv_states(self, user_id: str, convs: Sequence[str] | None = None) -> list[ConvState]:
        """The user's state in `convs`, or in every conversation it takes part in."""

    # -- access control (rules, roles, revoked tokens, account changes) -------------------------
    @abc.abstractmethod
    async def add_acl_rule(self, text: str, *, name: str = "") -> AclRuleRecord:
        """Append a rule (text in the `mqim.acl` syntax, stored as given) after the others."""

    @abc.abstractmethod
    async def list_acl_rules(self) -> list[AclRuleRecord]:
        """Every stored rule, in evaluation order (ascending `rule_id`)."""

    @abc.abstractmethod
    async def remove_acl_rule(self, rule_id: int) -> None:
        """Delete a rule; raises `NotFound`."""

    @abc.abstractmethod
    async def create_role(self, name: str, *, description: str = "") -> RoleRecord:
        """Create a role; raises `AlreadyExists`."""

    @abc.abstractmethod
    async def delete_role(self, name: str) -> None:
        """Delete a role and every assignment of it; raises `NotFound`."""

    @abc.abstractmethod
    async def list_roles(self) -> list[RoleRecord]:
        """Every role with its members, sorted by name."""

    @abc.abstractmethod
    async def assign_role(self, user_id: str, role: str) -> None:
        """Give `role` to `user_id` (no-op if held); raises `NotFound` for an unknown user or role."""

    @abc.abstractmethod
    async def unassign_role(self, user_id: str, role: str) -> None:
        """Take `role` from `user_id`; raises `NotFound` if the user does not hold it."""

    @abc.abstractmethod
    async def roles_of(self, user_id: str) -> list[str]:
        """The roles `user_id` holds, sorted."""

    @abc.abstractmethod
    async def acl_version(self) -> int:
        """A number that changes whenever rules, roles or role assignments change.

        A running broker polls it and reloads rules and roles when it moves.
        """

    @abc.abstractmethod
    async def revoke_token(self, token_id: str, *, expires_ts: int | None) -> None:
        """Record that the token `token_id` (its `jti`) is revoked (idempotent).

        `expires_ts` is the token's expiry (seconds since the epoch) when known: the entry may
        be forgotten once it has passed, since the token is refused as expired anyway.
        """

    @abc.abstractmethod
    async def is_token_revoked(self, token_id: str) -> bool:
        """Return True if `token_id` was revoked."""

    @abc.abstractmethod
    async def user_changes(self, since: int | None, *, limit: int = 1000) -> UserChanges:
        """Accounts changed (created, updated, disabled, enabled, removed) after change `since`.

        With `since=None`, return the current change number and no users (a starting point).
        At most `limit` changes are returned at once; call again with the returned `rev`.
        The change log is bounded: when `since` is older than what it keeps, the result says
        `complete=False`.
        """


class SessionStore(abc.ABC):
    """Durable MQTT session state: persistent sessions, their queues, retained messages.

    Writes may be batched; `flush()` returns once everything written before it is durable.
    """

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create the schema."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and release the backend."""

    @abc.abstractmethod
    async def load(self) -> tuple[list[StoredSession], list[RetainedRecord]]:
        """Every stored session (with its queue, in qid order) and every retained message."""

    @abc.abstractmethod
    def save_session(
        self, client_id: str, *, user: str | None, subscriptions: dict[str, int], disconnected_ts: int | None
    ) -> None:
        """Create or replace a session's metadata (queued write)."""

    @abc.abstractmethod
    def delete_session(self, client_id: str) -> None:
        """Forget a session and its queue (queued write)."""

    @abc.abstractmethod
    def enqueue(self, client_id: str, message: QueuedMessage) -> None:
        """Append to a session's queue (queued write)."""

    @abc.abstractmethod
    def dequeue(self, client_id: str, qids: Sequence[int]) -> None:
        """Remove acknowledged or dropped entries (queued write)."""

    @abc.abstractmethod
    def set_retained(self, record: RetainedRecord) -> None:
        """Store a retained message; an empty payload clears the topic (queued write)."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Return when every write queued before this call is durable."""
