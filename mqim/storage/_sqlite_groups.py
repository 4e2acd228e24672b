"""SQLite jobs on groups: create, read, change members, rename, delete, a user's groups.

The job functions are plain synchronous functions of a connection; `SqliteStorage`
(`mqim/storage/_sqlite.py`) runs them in its writer or reader thread, inside its transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from mqim.storage._clock import now_ms
from mqim.storage._exceptions import AlreadyExists, NotFound
from mqim.storage._records import GroupRecord, Role


def _group_conv(group_id: str) -> str:
    # Same shape as mqim.protocol.group_conv, without re-validating ids storage already holds.
    return f"g:{group_id}"


def get_group(conn: sqlite3.Connection, group_id: str) -> GroupRecord | None:
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
    group = get_group(conn, group_id)
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


def create_group(
    conn: sqlite3.Connection, group_id: str, name: str, owner: str, members: Sequence[str]
) -> GroupRecord:
    try:
        conn.execute("INSERT INTO groups (id, name, created_ts) VALUES (?, ?, ?)", (group_id, name, now_ms()))
    except sqlite3.IntegrityError as exc:
        raise AlreadyExists(f"group {group_id!r} already exists") from exc
    changes: dict[str, Role | None] = {user: Role.MEMBER for user in members}
    changes[owner] = Role.OWNER
    _apply_members(conn, group_id, changes)
    return _require_group(conn, group_id)


def set_members(conn: sqlite3.Connection, group_id: str, changes: dict[str, Role | None]) -> GroupRecord:
    _require_group(conn, group_id)
    _apply_members(conn, group_id, changes)
    return _require_group(conn, group_id)


def rename_group(conn: sqlite3.Connection, group_id: str, name: str) -> GroupRecord:
    if conn.execute("UPDATE groups SET name = ? WHERE id = ?", (name, group_id)).rowcount == 0:
        raise NotFound(f"no group {group_id!r}")
    return _require_group(conn, group_id)


def delete_group(conn: sqlite3.Connection, group_id: str) -> None:
    if conn.execute("DELETE FROM groups WHERE id = ?", (group_id,)).rowcount == 0:
        raise NotFound(f"no group {group_id!r}")
    conn.execute("DELETE FROM group_members WHERE group_id = ?", (group_id,))
    # The conversation row (and its last_seq) stays with the messages, so a group re-created
    # under the same id continues the sequence instead of colliding with stored seqs.
    conn.execute("DELETE FROM conv_members WHERE conv = ?", (_group_conv(group_id),))


def groups_of(conn: sqlite3.Connection, user_id: str) -> list[str]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT group_id FROM group_members WHERE user = ? ORDER BY group_id", (user_id,)
        )
    ]
