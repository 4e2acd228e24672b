"""`SqliteStorage`: the embedded, single-node `Storage` backend.

Threads: one writer thread owns the only writable connection and commits whatever is queued in
one transaction (group commit, a SAVEPOINT per request); one reader thread owns a ``query_only``
connection. The event loop only queues jobs and awaits futures. Password hashing runs in the
default executor (`asyncio.to_thread`).

Durability: WAL with ``synchronous=NORMAL``. Once a write coroutine returns, the data survives a
crash or ``kill -9`` of the process; an operating-system crash or power loss may lose the last
transactions (never corrupt the file).

The job functions below are plain synchronous functions of a connection; they run in a worker
thread inside its transaction.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from mqim.protocol import InvalidId, parse_conv
from mqim.storage._base import Storage
from mqim.storage._exceptions import AlreadyExists, NotFound, StorageError, Unavailable
from mqim.storage._passwords import DUMMY_HASH, hash_password
from mqim.storage._passwords import verify_password as check_password
from mqim.storage._records import (
    AccountKind,
    AclRuleRecord,
    AppendResult,
    ConvState,
    GroupRecord,
    MessageRecord,
    NewMessage,
    Role,
    RoleRecord,
    UserChanges,
    UserRecord,
)
from mqim.storage._sqlite_schema import STORAGE_SCHEMA, migrate
from mqim.storage._sqlite_writer import SqliteWorker

# How long close() waits for each worker thread to finish its queue.
CLOSE_TIMEOUT_S: Final = 30.0

# Revocations are kept this long past their token's expiry (beyond any verifier's clock leeway).
REVOCATION_GRACE_S: Final = 86_400


def _now_ms() -> int:
    return int(time.time() * 1000)


def _group_conv(group_id: str) -> str:
    # Same shape as mqim.protocol.group_conv, without re-validating ids storage already holds.
    return f"g:{group_id}"


def _dump_body(body: dict[str, Any]) -> str:
    try:
        return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StorageError(f"message body is not JSON-serialisable: {exc}") from exc


# -- users ---------------------------------------------------------------------------------------
_USER_COLS = "id, kind, disabled, created_ts"


def _user(row: tuple[Any, ...]) -> UserRecord:
    return UserRecord(user_id=row[0], kind=AccountKind(row[1]), disabled=bool(row[2]), created_ts=row[3])


def _add_user(conn: sqlite3.Connection, user_id: str, kind: AccountKind, pw_hash: str) -> UserRecord:
    record = UserRecord(user_id=user_id, kind=AccountKind(kind), disabled=False, created_ts=_now_ms())
    try:
        conn.execute(
            "INSERT INTO users (id, kind, password, disabled, created_ts) VALUES (?, ?, ?, 0, ?)",
            (user_id, record.kind.value, pw_hash, record.created_ts),
        )
    except sqlite3.IntegrityError as exc:
        raise AlreadyExists(f"user {user_id!r} already exists") from exc
    return record


def _add_users(conn: sqlite3.Connection, user_ids: list[str], kind: AccountKind, pw_hash: str) -> int:
    now = _now_ms()
    # Counted by rows, not total_changes, which also counts what the change-log triggers write.
    before = conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]
    conn.executemany(
        "INSERT OR IGNORE INTO users (id, kind, password, disabled, created_ts) VALUES (?, ?, ?, 0, ?)",
        [(user_id, AccountKind(kind).value, pw_hash, now) for user_id in user_ids],
    )
    return int(conn.execute("SELECT COUNT(*) FROM users").fetchone()[0] - before)


def _update_user(conn: sqlite3.Connection, user_id: str, column: str, value: object) -> None:
    # `column` is one of our own literals, never caller input.
    if conn.execute(f"UPDATE users SET {column} = ? WHERE id = ?", (value, user_id)).rowcount == 0:
        raise NotFound(f"no user {user_id!r}")


def _remove_user(conn: sqlite3.Connection, user_id: str) -> None:
    if conn.execute("DELETE FROM users WHERE id = ?", (user_id,)).rowcount == 0:
        raise NotFound(f"no user {user_id!r}")


def _get_user(conn: sqlite3.Connection, user_id: str) -> UserRecord | None:
    row = conn.execute(f"SELECT {_USER_COLS} FROM users WHERE id = ?", (user_id,)).fetchone()
    return None if row is None else _user(row)


def _get_user_and_hash(conn: sqlite3.Connection, user_id: str) -> tuple[UserRecord, str] | None:
    row = conn.execute(f"SELECT {_USER_COLS}, password FROM users WHERE id = ?", (user_id,)).fetchone()
    return None if row is None else (_user(row), str(row[4]))


def _list_users(conn: sqlite3.Connection) -> list[UserRecord]:
    return [_user(row) for row in conn.execute(f"SELECT {_USER_COLS} FROM users ORDER BY id")]


# -- messages ------------------------------------------------------------------------------------
_MSG_COLS = "conv, seq, server_id, sender, client_id, ts, kind, body"


def _message(row: tuple[Any, ...]) -> MessageRecord:
    body = json.loads(row[7])
    return MessageRecord(
        conv=row[0],
        seq=row[1],
        server_id=row[2],
        sender=row[3],
        client_id=row[4],
        ts=row[5],
        kind=row[6],
        body=body if isinstance(body, dict) else {},
    )


def _initial_members(message: NewMessage) -> tuple[str, ...]:
    """Who takes part in a conversation created by `message` (groups manage their own)."""
    try:
        kind, ids = parse_conv(message.conv)
    except InvalidId:
        return (message.sender,)
    return ids if kind == "d" else ()


def _append(conn: sqlite3.Connection, messages: Sequence[NewMessage]) -> list[AppendResult]:
    results: list[AppendResult] = []
    for m in messages:
        seen = conn.execute(
            "SELECT conv, seq FROM idempotency WHERE sender = ? AND client_id = ?", (m.sender, m.client_id)
        ).fetchone()
        if seen is not None:
            row = conn.execute(
                f"SELECT {_MSG_COLS} FROM messages WHERE conv = ? AND seq = ?", seen
            ).fetchone()
            if row is None:
                raise StorageError(f"idempotency entry {m.sender}/{m.client_id} points to a missing message")
            results.append(AppendResult(record=_message(row), created=False))
            continue
        body = _dump_body(m.body)
        # One statement both creates the conversation and takes the next seq.
        seq = int(
            conn.execute(
                "INSERT INTO conversations (conv, last_seq) VALUES (?, 1) "
                "ON CONFLICT (conv) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
                (m.conv,),
            ).fetchall()[0][0]
        )
        record = MessageRecord(
            conv=m.conv,
            seq=seq,
            server_id=uuid.uuid4().hex,
            sender=m.sender,
            client_id=m.client_id,
            ts=m.ts,
            kind=m.kind,
            body=dict(m.body),
        )
        conn.execute(
            f"INSERT INTO messages ({_MSG_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (m.conv, seq, record.server_id, m.sender, m.client_id, m.ts, m.kind, body),
        )
        conn.execute(
            "INSERT INTO idempotency (sender, client_id, conv, seq) VALUES (?, ?, ?, ?)",
            (m.sender, m.client_id, m.conv, seq),
        )
        if seq == 1:
            conn.executemany(
                "INSERT OR IGNORE INTO conv_members (user, conv) VALUES (?, ?)",
                [(user, m.conv) for user in _initial_members(m)],
            )
        results.append(AppendResult(record=record, created=True))
    return results


def _get_messages(
    conn: sqlite3.Connection, conv: str, after_seq: int, before_seq: int | None, limit: int, newest: bool
) -> list[MessageRecord]:
    if limit <= 0:
        return []
    upper = before_seq if before_seq is not None else 2**63 - 1
    order = "DESC" if newest else "ASC"
    rows = conn.execute(
        f"SELECT {_MSG_COLS} FROM messages WHERE conv = ? AND seq > ? AND seq < ? "
        f"ORDER BY seq {order} LIMIT ?",
        (conv, after_seq, upper, limit),
    ).fetchall()
    if newest:
        rows.reverse()
    return [_message(row) for row in rows]


def _last_seq(conn: sqlite3.Connection, conv: str) -> int:
    row = conn.execute("SELECT last_seq FROM conversations WHERE conv = ?", (conv,)).fetchone()
    return 0 if row is None else int(row[0])


# -- groups --------------------------------------------------------------------------------------
def _get_group(conn: sqlite3.Connection, group_id: str) -> GroupRecord | None:
    row = conn.execute("SELECT name, created_ts FROM groups WHERE id = ?", (group_id,)).fetchone()
    if row is None:
        return None
    members = {
        user: Role(role)
        for user, role in conn.execute(
            "SELECT user, role FROM group_members WHERE group_id = ? ORDER BY user", (group_id,)
        )
    }
    return GroupRecord(group_id=group_id, name=row[0], members=members, created_ts=row[1])


def _require_group(conn: sqlite3.Connection, group_id: str) -> GroupRecord:
    group = _get_group(conn, group_id)
    if group is None:
        raise NotFound(f"no group {group_id!r}")
    return group


def _apply_members(conn: sqlite3.Connection, group_id: str, changes: dict[str, Role | None]) -> None:
    conv = _group_conv(group_id)
    for user, role in changes.items():
        if role is None:
            conn.execute("DELETE FROM group_members WHERE group_id = ? AND user = ?", (group_id, user))
            conn.execute("DELETE FROM conv_members WHERE user = ? AND conv = ?", (user, conv))
        else:
            conn.execute(
                "INSERT INTO group_members (group_id, user, role) VALUES (?, ?, ?) "
                "ON CONFLICT (group_id, user) DO UPDATE SET role = excluded.role",
                (group_id, user, Role(role).value),
            )
            conn.execute("INSERT OR IGNORE INTO conv_members (user, conv) VALUES (?, ?)", (user, conv))


def _create_group(
    conn: sqlite3.Connection, group_id: str, name: str, owner: str, members: Sequence[str]
) -> GroupRecord:
    try:
        conn.execute(
            "INSERT INTO groups (id, name, created_ts) VALUES (?, ?, ?)", (group_id, name, _now_ms())
        )
    except sqlite3.IntegrityError as exc:
        raise AlreadyExists(f"group {group_id!r} already exists") from exc
    changes: dict[str, Role | None] = {user: Role.MEMBER for user in members}
    changes[owner] = Role.OWNER
    _apply_members(conn, group_id, changes)
    return _require_group(conn, group_id)


def _set_members(conn: sqlite3.Connection, group_id: str, changes: dict[str, Role | None]) -> GroupRecord:
    _require_group(conn, group_id)
    _apply_members(conn, group_id, changes)
    return _require_group(conn, group_id)


def _rename_group(conn: sqlite3.Connection, group_id: str, name: str) -> GroupRecord:
    if conn.execute("UPDATE groups SET name = ? WHERE id = ?", (name, group_id)).rowcount == 0:
        raise NotFound(f"no group {group_id!r}")
    return _require_group(conn, group_id)


def _delete_group(conn: sqlite3.Connection, group_id: str) -> None:
    if conn.execute("DELETE FROM groups WHERE id = ?", (group_id,)).rowcount == 0:
        raise NotFound(f"no group {group_id!r}")
    conn.execute("DELETE FROM group_members WHERE group_id = ?", (group_id,))
    # The conversation row (and its last_seq) stays with the messages, so a group re-created
    # under the same id continues the sequence instead of colliding with stored seqs.
    conn.execute("DELETE FROM conv_members WHERE conv = ?", (_group_conv(group_id),))


def _groups_of(conn: sqlite3.Connection, user_id: str) -> list[str]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT group_id FROM group_members WHERE user = ? ORDER BY group_id", (user_id,)
        )
    ]


# -- cursors -------------------------------------------------------------------------------------
_STATE_SQL = (
    "SELECT coalesce((SELECT last_seq FROM conversations WHERE conv = :conv), 0), "
    "coalesce((SELECT read_seq FROM cursors WHERE user = :user AND conv = :conv), 0), "
    "coalesce((SELECT delivered_seq FROM cursors WHERE user = :user AND conv = :conv), 0)"
)


def _conv_state(conn: sqlite3.Connection, user_id: str, conv: str) -> ConvState:
    last, read, delivered = conn.execute(_STATE_SQL, {"user": user_id, "conv": conv}).fetchone()
    return ConvState(conv=conv, last_seq=last, read_seq=read, delivered_seq=delivered)


def _advance_cursor(
    conn: sqlite3.Connection, user_id: str, conv: str, read_seq: int | None, delivered_seq: int | None
) -> ConvState:
    last = _last_seq(conn, conv)
    # Cursors never pass the last stored seq and never move back.
    read = 0 if read_seq is None else max(0, min(read_seq, last))
    delivered = 0 if delivered_seq is None else max(0, min(delivered_seq, last))
    conn.execute(
        "INSERT INTO cursors (user, conv, read_seq, delivered_seq) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (user, conv) DO UPDATE SET read_seq = max(read_seq, excluded.read_seq), "
        "delivered_seq = max(delivered_seq, excluded.delivered_seq)",
        (user_id, conv, read, delivered),
    )
    return _conv_state(conn, user_id, conv)


def _conv_states(conn: sqlite3.Connection, user_id: str, convs: Sequence[str] | None) -> list[ConvState]:
    if convs is None:
        rows = conn.execute(
            "SELECT m.conv, coalesce(c.last_seq, 0), coalesce(k.read_seq, 0), coalesce(k.delivered_seq, 0) "
            "FROM conv_members m "
            "LEFT JOIN conversations c ON c.conv = m.conv "
            "LEFT JOIN cursors k ON k.user = m.user AND k.conv = m.conv "
            "WHERE m.user = ? ORDER BY m.conv",
            (user_id,),
        )
        return [ConvState(conv=r[0], last_seq=r[1], read_seq=r[2], delivered_seq=r[3]) for r in rows]
    return [_conv_state(conn, user_id, conv) for conv in dict.fromkeys(convs)]


# -- access control ------------------------------------------------------------------------------
def _add_acl_rule(conn: sqlite3.Connection, text: str, name: str) -> AclRuleRecord:
    ts = _now_ms()
    cur = conn.execute("INSERT INTO acl_rules (text, name, created_ts) VALUES (?, ?, ?)", (text, name, ts))
    if cur.lastrowid is None:
        raise StorageError("rule insert returned no id")
    return AclRuleRecord(rule_id=int(cur.lastrowid), text=text, name=name, created_ts=ts)


def _list_acl_rules(conn: sqlite3.Connection) -> list[AclRuleRecord]:
    return [
        AclRuleRecord(rule_id=row[0], text=row[1], name=row[2], created_ts=row[3])
        for row in conn.execute("SELECT id, text, name, created_ts FROM acl_rules ORDER BY id")
    ]


def _remove_acl_rule(conn: sqlite3.Connection, rule_id: int) -> None:
    if conn.execute("DELETE FROM acl_rules WHERE id = ?", (rule_id,)).rowcount == 0:
        raise NotFound(f"no ACL rule {rule_id}")


def _create_role(conn: sqlite3.Connection, name: str, description: str) -> RoleRecord:
    ts = _now_ms()
    try:
        conn.execute(
            "INSERT INTO roles (name, description, created_ts) VALUES (?, ?, ?)", (name, description, ts)
        )
    except sqlite3.IntegrityError as exc:
        raise AlreadyExists(f"role {name!r} already exists") from exc
    return RoleRecord(name=name, description=description, members=(), created_ts=ts)


def _delete_role(conn: sqlite3.Connection, name: str) -> None:
    if conn.execute("DELETE FROM roles WHERE name = ?", (name,)).rowcount == 0:
        raise NotFound(f"no role {name!r}")
    conn.execute("DELETE FROM role_members WHERE role = ?", (name,))


def _list_roles(conn: sqlite3.Connection) -> list[RoleRecord]:
    members: dict[str, list[str]] = {}
    for role, user in conn.execute("SELECT role, user FROM role_members ORDER BY role, user"):
        members.setdefault(role, []).append(user)
    return [
        RoleRecord(name=row[0], description=row[1], members=tuple(members.get(row[0], ())), created_ts=row[2])
        for row in conn.execute("SELECT name, description, created_ts FROM roles ORDER BY name")
    ]


def _require_role(conn: sqlite3.Connection, role: str) -> None:
    if conn.execute("SELECT 1 FROM roles WHERE name = ?", (role,)).fetchone() is None:
        raise NotFound(f"no role {role!r}")


def _assign_role(conn: sqlite3.Connection, user_id: str, role: str) -> None:
    if _get_user(conn, user_id) is None:
        raise NotFound(f"no user {user_id!r}")
    _require_role(conn, role)
    conn.execute("INSERT OR IGNORE INTO role_members (role, user) VALUES (?, ?)", (role, user_id))


def _unassign_role(conn: sqlite3.Connection, user_id: str, role: str) -> None:
    _require_role(conn, role)
    if conn.execute("DELETE FROM role_members WHERE role = ? AND user = ?", (role, user_id)).rowcount == 0:
        raise NotFound(f"user {user_id!r} does not hold role {role!r}")


def _roles_of(conn: sqlite3.Connection, user_id: str) -> list[str]:
    return [
        row[0]
        for row in conn.execute("SELECT role FROM role_members WHERE user = ? ORDER BY role", (user_id,))
    ]


def _acl_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM counters WHERE name = 'acl'").fetchone()
    return 0 if row is None else int(row[0])


def _revoke_token(conn: sqlite3.Connection, token_id: str, expires_ts: int | None) -> None:
    now_s = _now_ms() // 1000
    conn.execute(
        "INSERT INTO revoked_tokens (jti, expires_ts, revoked_ts) VALUES (?, ?, ?) "
        # Revoking again never shortens what is kept: NULL (unknown expiry) wins, else the later.
        "ON CONFLICT (jti) DO UPDATE SET expires_ts = CASE "
        "WHEN revoked_tokens.expires_ts IS NULL OR excluded.expires_ts IS NULL THEN NULL "
        "ELSE max(revoked_tokens.expires_ts, excluded.expires_ts) END",
        (token_id, expires_ts, now_s),
    )
    # Entries of tokens long expired protect nothing: the table stays as small as the live tokens.
    conn.execute(
        "DELETE FROM revoked_tokens WHERE expires_ts IS NOT NULL AND expires_ts < ?",
        (now_s - REVOCATION_GRACE_S,),
    )


def _is_token_revoked(conn: sqlite3.Connection, token_id: str) -> bool:
    return conn.execute("SELECT 1 FROM revoked_tokens WHERE jti = ?", (token_id,)).fetchone() is not None


def _user_changes(conn: sqlite3.Connection, since: int | None, limit: int) -> UserChanges:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'user_changes'").fetchone()
    current = 0 if row is None else int(row[0])
    if since is None:
        return UserChanges(rev=current, users=(), complete=True)
    if since > current:
        # The caller has seen changes this database never had (a restored backup): start over.
        return UserChanges(rev=current, users=(), complete=False)
    oldest = conn.execute("SELECT min(rev) FROM user_changes").fetchone()[0]
    complete = oldest is None or since >= int(oldest) - 1
    rows = conn.execute(
        "SELECT rev, user FROM user_changes WHERE rev > ? ORDER BY rev LIMIT ?", (since, max(0, limit))
    ).fetchall()
    rev = int(rows[-1][0]) if rows else (current if limit > 0 else since)
    return UserChanges(rev=rev, users=tuple(dict.fromkeys(user for _, user in rows)), complete=complete)


class SqliteStorage(Storage):
    """`Storage` in one SQLite file: the embedded default.

    Args:
        path: The database file; created with its schema if missing.
        batch_max: Most write requests committed in one transaction.
    """

    def __init__(self, *, path: Path, batch_max: int = 512) -> None:
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        self._path = Path(path)
        self._batch_max = batch_max
        self._writer: SqliteWorker | None = None
        self._reader: SqliteWorker | None = None
        self._closed = False

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    async def open(self) -> None:
        """Start the worker threads, create or migrate the schema.

        Raises:
            StorageError: The file cannot be opened, is not an mqim storage database, or has a
                schema newer than this code.
        """
        if self._closed:
            raise Unavailable("storage is closed")
        if self._writer is not None:
            return
        path = self._path
        writer = SqliteWorker(
            name=f"mqim-sqlite-writer:{path.name}",
            path=path,
            read_only=False,
            batch_max=self._batch_max,
            init=lambda conn: migrate(conn, STORAGE_SCHEMA, path=path),
        )
        await writer.start()
        reader = SqliteWorker(
            name=f"mqim-sqlite-reader:{path.name}", path=path, read_only=True, batch_max=self._batch_max
        )
        try:
            await reader.start()
        except BaseException:
            await writer.stop(join_timeout_s=CLOSE_TIMEOUT_S)
            raise
        self._writer, self._reader = writer, reader

    async def close(self) -> None:
        """Commit every queued write, stop the threads and close the connections."""
        self._closed = True
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        if writer is not None:
            await writer.stop(join_timeout_s=CLOSE_TIMEOUT_S)
        if reader is not None:
            await reader.stop(join_timeout_s=CLOSE_TIMEOUT_S)

    def _w(self) -> SqliteWorker:
        if self._writer is None:
            raise Unavailable("storage is closed" if self._closed else "storage is not open")
        return self._writer

    def _r(self) -> SqliteWorker:
        if self._reader is None:
            raise Unavailable("storage is closed" if self._closed else "storage is not open")
        return self._reader

    # -- users ---------------------------------------------------------------------------------
    async def add_user(
        self, user_id: str, *, password: str, kind: AccountKind = AccountKind.USER
    ) -> UserRecord:
        """Create an account; raises `AlreadyExists` if the id is taken."""
        writer = self._w()
        pw_hash = await asyncio.to_thread(hash_password, password)
        return await writer.run(lambda c: _add_user(c, user_id, kind, pw_hash), what=f"add user {user_id!r}")

    async def add_users(
        self, user_ids: Sequence[str], *, password: str, kind: AccountKind = AccountKind.USER
    ) -> int:
        """Create many accounts with one shared password hash; existing ids are skipped."""
        writer = self._w()
        ids = list(dict.fromkeys(user_ids))
        pw_hash = await asyncio.to_thread(hash_password, password)
        return await writer.run(lambda c: _add_users(c, ids, kind, pw_hash), what=f"add {len(ids)} users")

    async def get_user(self, user_id: str) -> UserRecord | None:
        """Return the account, or None."""
        return await self._r().run(lambda c: _get_user(c, user_id), what="get user")

    async def list_users(self) -> list[UserRecord]:
        """All accounts, sorted by id."""
        return await self._r().run(_list_users, what="list users")

    async def set_password(self, user_id: str, password: str) -> None:
        """Replace the password; raises `NotFound`."""
        writer = self._w()
        pw_hash = await asyncio.to_thread(hash_password, password)
        await writer.run(lambda c: _update_user(c, user_id, "password", pw_hash), what="set password")

    async def set_disabled(self, user_id: str, disabled: bool) -> None:
        """Disable or enable an account; raises `NotFound`."""
        flag = 1 if disabled else 0
        await self._w().run(lambda c: _update_user(c, user_id, "disabled", flag), what="set disabled")

    async def remove_user(self, user_id: str) -> None:
        """Delete an account (its messages stay); raises `NotFound`."""
        await self._w().run(lambda c: _remove_user(c, user_id), what="remove user")

    async def verify_password(self, user_id: str, password: str) -> UserRecord | None:
        """Return the account if it exists, is enabled and `password` matches, else None.

        Unknown and disabled accounts cost the same scrypt work as a real check, so response
        time does not reveal which accounts exist.
        """
        found = await self._r().run(lambda c: _get_user_and_hash(c, user_id), what="verify password")
        encoded = DUMMY_HASH if found is None else found[1]
        matches = await asyncio.to_thread(check_password, password, encoded)
        if found is None or found[0].disabled or not matches:
            return None
        return found[0]

    # -- messages ------------------------------------------------------------------------------
    async def append_messages(self, messages: Sequence[NewMessage]) -> list[AppendResult]:
        """Store a batch: dedup by (sender, client_id), assign seqs, persist; see `Storage`."""
        batch = list(messages)
        if not batch:
            self._w()
            return []
        return await self._w().run(lambda c: _append(c, batch), what="append messages")

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
        return await self._r().run(
            lambda c: _get_messages(c, conv, after_seq, before_seq, limit, newest), what="get messages"
        )

    async def last_seq(self, conv: str) -> int:
        """The highest seq of `conv`, 0 if it has none."""
        return await self._r().run(lambda c: _last_seq(c, conv), what="last seq")

    # -- groups --------------------------------------------------------------------------------
    async def create_group(
        self, group_id: str, *, name: str, owner: str, members: Sequence[str]
    ) -> GroupRecord:
        """Create a group owned by `owner`; raises `AlreadyExists`."""
        member_list = list(members)
        return await self._w().run(
            lambda c: _create_group(c, group_id, name, owner, member_list), what=f"create group {group_id!r}"
        )

    async def get_group(self, group_id: str) -> GroupRecord | None:
        """Return the group with its members, or None."""
        return await self._r().run(lambda c: _get_group(c, group_id), what="get group")

    async def set_members(self, group_id: str, changes: dict[str, Role | None]) -> GroupRecord:
        """Add, change or (with None) remove members; raises `NotFound`."""
        snapshot = dict(changes)
        return await self._w().run(lambda c: _set_members(c, group_id, snapshot), what="set members")

    async def rename_group(self, group_id: str, name: str) -> GroupRecord:
        """Rename a group; raises `NotFound`."""
        return await self._w().run(lambda c: _rename_group(c, group_id, name), what="rename group")

    async def delete_group(self, group_id: str) -> None:
        """Delete a group (its messages stay); raises `NotFound`."""
        await self._w().run(lambda c: _delete_group(c, group_id), what="delete group")

    async def groups_of(self, user_id: str) -> list[str]:
        """Ids of the groups `user_id` belongs to, sorted."""
        return await self._r().run(lambda c: _groups_of(c, user_id), what="groups of")

    # -- cursors -------------------------------------------------------------------------------
    async def advance_cursor(
        self, user_id: str, conv: str, *, read_seq: int | None = None, delivered_seq: int | None = None
    ) -> ConvState:
        """Move a user's cursors forward (never back, never past the last seq); return the state."""
        return await self._w().run(
            lambda c: _advance_cursor(c, user_id, conv, read_seq, delivered_seq), what="advance cursor"
        )

    async def conv_states(self, user_id: str, convs: Sequence[str] | None = None) -> list[ConvState]:
        """The user's state in `convs` (in that order), or in every conversation it takes part in.

        With `convs=None` the result lists the conversations the user is a member of, sorted by id:
        both sides of a direct conversation once it has a message, and the current members of a
        group.
        """
        wanted = None if convs is None else list(convs)
        return await self._r().run(lambda c: _conv_states(c, user_id, wanted), what="conv states")

    # -- access control ------------------------------------------------------------------------
    async def add_acl_rule(self, text: str, *, name: str = "") -> AclRuleRecord:
        """Append a rule after the others (its text is stored as given)."""
        return await self._w().run(lambda c: _add_acl_rule(c, text, name), what="add ACL rule")

    async def list_acl_rules(self) -> list[AclRuleRecord]:
        """Every stored rule, in evaluation order."""
        return await self._r().run(_list_acl_rules, what="list ACL rules")

    async def remove_acl_rule(self, rule_id: int) -> None:
        """Delete a rule; raises `NotFound`."""
        await self._w().run(lambda c: _remove_acl_rule(c, rule_id), what="remove ACL rule")

    async def create_role(self, name: str, *, description: str = "") -> RoleRecord:
        """Create a role; raises `AlreadyExists`."""
        return await self._w().run(lambda c: _create_role(c, name, description), what="create role")

    async def delete_role(self, name: str) -> None:
        """Delete a role and its assignments; raises `NotFound`."""
        await self._w().run(lambda c: _delete_role(c, name), what="delete role")

    async def list_roles(self) -> list[RoleRecord]:
        """Every role with its members, sorted by name."""
        return await self._r().run(_list_roles, what="list roles")

    async def assign_role(self, user_id: str, role: str) -> None:
        """Give `role` to `user_id`; raises `NotFound` for an unknown user or role."""
        await self._w().run(lambda c: _assign_role(c, user_id, role), what="assign role")

    async def unassign_role(self, user_id: str, role: str) -> None:
        """Take `role` from `user_id`; raises `NotFound` if not held."""
        await self._w().run(lambda c: _unassign_role(c, user_id, role), what="unassign role")

    async def roles_of(self, user_id: str) -> list[str]:
        """The roles `user_id` holds, sorted."""
        return await self._r().run(lambda c: _roles_of(c, user_id), what="roles of")

    async def acl_version(self) -> int:
        """A counter moved by triggers on every rule, role or assignment change."""
        return await self._r().run(_acl_version, what="ACL version")

    async def revoke_token(self, token_id: str, *, expires_ts: int | None) -> None:
        """Record a revoked token id (idempotent); long-expired entries are pruned."""
        await self._w().run(lambda c: _revoke_token(c, token_id, expires_ts), what="revoke token")

    async def is_token_revoked(self, token_id: str) -> bool:
        """Return True if `token_id` was revoked."""
        return await self._r().run(lambda c: _is_token_revoked(c, token_id), what="token revoked?")

    async def user_changes(self, since: int | None, *, limit: int = 1000) -> UserChanges:
        """Accounts changed after change number `since` (a log kept by triggers); see `Storage`."""
        return await self._r().run(lambda c: _user_changes(c, since, limit), what="user changes")
