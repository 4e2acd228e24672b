"""SQLite jobs on accounts: create, read, update and remove users.

The job functions are plain synchronous functions of a connection; `SqliteStorage`
(`mqim/storage/_sqlite.py`) runs them in its writer or reader thread, inside its transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from mqim.storage._clock import now_ms
from mqim.storage._exceptions import AlreadyExists, NotFound
from mqim.storage._records import AccountKind, UserRecord

_USER_COLS = "id, kind, disabled, created_ts"


def _user(row: tuple[Any, ...]) -> UserRecord:
    return UserRecord(user_id=row[0], kind=AccountKind(row[1]), disabled=bool(row[2]), created_ts=row[3])


def add_user(conn: sqlite3.Connection, user_id: str, kind: AccountKind, pw_hash: str) -> UserRecord:
    record = UserRecord(user_id=user_id, kind=AccountKind(kind), disabled=False, created_ts=now_ms())
    try:
        conn.execute(
            "INSERT INTO users (id, kind, password, disabled, created_ts) VALUES (?, ?, ?, 0, ?)",
            (user_id, record.kind.value, pw_hash, record.created_ts),
        )
    except sqlite3.IntegrityError as exc:
        raise AlreadyExists(f"user {user_id!r} already exists") from exc
    return record


def add_users(conn: sqlite3.Connection, user_ids: list[str], kind: AccountKind, pw_hash: str) -> int:
    now = now_ms()
    # Counted by rows, not total_changes, which also counts what the change-log triggers write.
    before = conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]
    conn.executemany(
        "INSERT OR IGNORE INTO users (id, kind, password, disabled, created_ts) VALUES (?, ?, ?, 0, ?)",
        [(user_id, AccountKind(kind).value, pw_hash, now) for user_id in user_ids],
    )
    return int(conn.execute("SELECT COUNT(*) FROM users").fetchone()[0] - before)


def update_user(conn: sqlite3.Connection, user_id: str, column: str, value: object) -> None:
    # `column` is one of our own literals, never caller input.
    if conn.execute(f"UPDATE users SET {column} = ? WHERE id = ?", (value, user_id)).rowcount == 0:
        raise NotFound(f"no user {user_id!r}")


def remove_user(conn: sqlite3.Connection, user_id: str) -> None:
    if conn.execute("DELETE FROM users WHERE id = ?", (user_id,)).rowcount == 0:
        raise NotFound(f"no user {user_id!r}")


def get_user(conn: sqlite3.Connection, user_id: str) -> UserRecord | None:
    row = conn.execute(f"SELECT {_USER_COLS} FROM users WHERE id = ?", (user_id,)).fetchone()
    return None if row is None else _user(row)


def get_user_and_hash(conn: sqlite3.Connection, user_id: str) -> tuple[UserRecord, str] | None:
    row = conn.execute(f"SELECT {_USER_COLS}, password FROM users WHERE id = ?", (user_id,)).fetchone()
    return None if row is None else (_user(row), str(row[4]))


def list_users(conn: sqlite3.Connection) -> list[UserRecord]:
    return [_user(row) for row in conn.execute(f"SELECT {_USER_COLS} FROM users ORDER BY id")]
