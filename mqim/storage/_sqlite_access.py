"""SQLite jobs on access control: rules, roles, revoked tokens and the account change log.

The job functions are plain synchronous functions of a connection; `SqliteStorage`
(`mqim/storage/_sqlite.py`) runs them in its writer or reader thread, inside its transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from mqim.storage._clock import now_ms
from mqim.storage._exceptions import AlreadyExists, NotFound, StorageError
from mqim.storage._records import AclRuleRecord, RoleRecord, UserChanges
from mqim.storage._sqlite_users import get_user

# Revocations are kept this long past their token's expiry (beyond any verifier's clock leeway).
REVOCATION_GRACE_S: Final = 86_400


def add_acl_rule(conn: sqlite3.Connection, text: str, name: str) -> AclRuleRecord:
    ts = now_ms()
    cur = conn.execute("INSERT INTO acl_rules (text, name, created_ts) VALUES (?, ?, ?)", (text, name, ts))
    if cur.lastrowid is None:
        raise StorageError("rule insert returned no id")
    return AclRuleRecord(rule_id=int(cur.lastrowid), text=text, name=name, created_ts=ts)


def list_acl_rules(conn: sqlite3.Connection) -> list[AclRuleRecord]:
    return [
        AclRuleRecord(rule_id=row[0], text=row[1], name=row[2], created_ts=row[3])
        for row in conn.execute("SELECT id, text, name, created_ts FROM acl_rules ORDER BY id")
    ]


def remove_acl_rule(conn: sqlite3.Connection, rule_id: int) -> None:
    if conn.execute("DELETE FROM acl_rules WHERE id = ?", (rule_id,)).rowcount == 0:
        raise NotFound(f"no ACL rule {rule_id}")


def create_role(conn: sqlite3.Connection, name: str, description: str) -> RoleRecord:
    ts = now_ms()
    try:
        conn.execute(
            "INSERT INTO roles (name, description, created_ts) VALUES (?, ?, ?)", (name, description, ts)
        )
    except sqlite3.IntegrityError as exc:
        raise AlreadyExists(f"role {name!r} already exists") from exc
    return RoleRecord(name=name, description=description, members=(), created_ts=ts)


def delete_role(conn: sqlite3.Connection, name: str) -> None:
    if conn.execute("DELETE FROM roles WHERE name = ?", (name,)).rowcount == 0:
        raise NotFound(f"no role {name!r}")
    conn.execute("DELETE FROM role_members WHERE role = ?", (name,))


def list_roles(conn: sqlite3.Connection) -> list[RoleRecord]:
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


def assign_role(conn: sqlite3.Connection, user_id: str, role: str) -> None:
    if get_user(conn, user_id) is None:
        raise NotFound(f"no user {user_id!r}")
    _require_role(conn, role)
    conn.execute("INSERT OR IGNORE INTO role_members (role, user) VALUES (?, ?)", (role, user_id))


def unassign_role(conn: sqlite3.Connection, user_id: str, role: str) -> None:
    _require_role(conn, role)
    if conn.execute("DELETE FROM role_members WHERE role = ? AND user = ?", (role, user_id)).rowcount == 0:
        raise NotFound(f"user {user_id!r} does not hold role {role!r}")


def roles_of(conn: sqlite3.Connection, user_id: str) -> list[str]:
    return [
        row[0]
        for row in conn.execute("SELECT role FROM role_members WHERE user = ? ORDER BY role", (user_id,))
    ]


def acl_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM counters WHERE name = 'acl'").fetchone()
    return 0 if row is None else int(row[0])


def revoke_token(conn: sqlite3.Connection, token_id: str, expires_ts: int | None) -> None:
    now_s = now_ms() // 1000
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


def is_token_revoked(conn: sqlite3.Connection, token_id: str) -> bool:
    return conn.execute("SELECT 1 FROM revoked_tokens WHERE jti = ?", (token_id,)).fetchone() is not None


def user_changes(conn: sqlite3.Connection, since: int | None, limit: int) -> UserChanges:
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
