"""SQLite schemas as ordered migrations, connection setup and sqlite3 error translation.

Every database file carries a `schema_version` table (one row per applied migration) and an
`application_id` naming which mqim component owns it. `migrate()` applies the missing migrations
in one transaction and refuses files written by a newer mqim or by something else.

Durability: connections use WAL with ``synchronous=NORMAL``. A committed transaction survives a
crash of the process (including ``kill -9``); after an operating-system crash or power loss the
last few transactions before the crash may be lost, but the file stays consistent.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from mqim.storage._exceptions import StorageError, Unavailable

# How long a connection waits for a lock held by another process (e.g. the CLI) before failing.
BUSY_TIMEOUT_MS = 5000

USER_CHANGES_KEPT = 10_000
"""Entries the account change log keeps (older ones are pruned by a trigger)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Schema:
    """The migrations of one kind of database file.

    Attributes:
        name: What the file is, for error messages ("storage", "sessions").
        application_id: Stored in the file header; tells mqim's databases apart.
        migrations: SQL statements per version; ``migrations[0]`` is version 1.
    """

    name: str
    application_id: int
    migrations: tuple[tuple[str, ...], ...]

    @property
    def version(self) -> int:
        """The schema version this code writes."""
        return len(self.migrations)


STORAGE_SCHEMA = Schema(
    name="storage",
    application_id=0x6D71696D,  # "mqim"
    migrations=(
        (
            """CREATE TABLE users (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                password TEXT NOT NULL,
                disabled INTEGER NOT NULL DEFAULT 0,
                created_ts INTEGER NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE conversations (
                conv TEXT PRIMARY KEY,
                last_seq INTEGER NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE messages (
                conv TEXT NOT NULL,
                seq INTEGER NOT NULL,
                server_id TEXT NOT NULL UNIQUE,
                sender TEXT NOT NULL,
                client_id TEXT NOT NULL,
                ts INTEGER NOT NULL,
                kind TEXT NOT NULL,
                body TEXT NOT NULL,
                PRIMARY KEY (conv, seq)
            )""",
            """CREATE TABLE idempotency (
                sender TEXT NOT NULL,
                client_id TEXT NOT NULL,
                conv TEXT NOT NULL,
                seq INTEGER NOT NULL,
                PRIMARY KEY (sender, client_id)
            ) WITHOUT ROWID""",
            """CREATE TABLE conv_members (
                user TEXT NOT NULL,
                conv TEXT NOT NULL,
                PRIMARY KEY (user, conv)
            ) WITHOUT ROWID""",
            "CREATE INDEX conv_members_conv ON conv_members (conv)",
            """CREATE TABLE groups (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                created_ts INTEGER NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE group_members (
                group_id TEXT NOT NULL,
                user TEXT NOT NULL,
                role TEXT NOT NULL,
                PRIMARY KEY (group_id, user)
            ) WITHOUT ROWID""",
            "CREATE INDEX group_members_user ON group_members (user, group_id)",
            """CREATE TABLE cursors (
                user TEXT NOT NULL,
                conv TEXT NOT NULL,
                read_seq INTEGER NOT NULL DEFAULT 0,
                delivered_seq INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (user, conv)
            ) WITHOUT ROWID""",
        ),
        # Version 2: access control. Triggers keep the change counters, so every write (through
        # any code path, or a manual fix in the sqlite3 shell) moves them and a running broker
        # notices.
        (
            """CREATE TABLE acl_rules (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                text TEXT NOT NULL,
                name TEXT NOT NULL DEFAULT '',
                created_ts INTEGER NOT NULL
            )""",
            """CREATE TABLE roles (
                name TEXT PRIMARY KEY,
                description TEXT NOT NULL DEFAULT '',
                created_ts INTEGER NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE role_members (
                role TEXT NOT NULL,
                user TEXT NOT NULL,
                PRIMARY KEY (role, user)
            ) WITHOUT ROWID""",
            "CREATE INDEX role_members_user ON role_members (user, role)",
            """CREATE TABLE revoked_tokens (
                jti TEXT PRIMARY KEY,
                expires_ts INTEGER,
                revoked_ts INTEGER NOT NULL
            ) WITHOUT ROWID""",
            "CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_ts)",
            """CREATE TABLE counters (
                name TEXT PRIMARY KEY,
                value INTEGER NOT NULL
            ) WITHOUT ROWID""",
            "INSERT INTO counters (name, value) VALUES ('acl', 0)",
            *(
                f"""CREATE TRIGGER {table}_{event.lower()}_acl AFTER {event} ON {table}
                BEGIN UPDATE counters SET value = value + 1 WHERE name = 'acl'; END"""
                for table in ("acl_rules", "roles", "role_members")
                for event in ("INSERT", "UPDATE", "DELETE")
            ),
            """CREATE TABLE user_changes (
                rev INTEGER PRIMARY KEY AUTOINCREMENT,
                user TEXT NOT NULL
            )""",
            """CREATE TRIGGER users_insert_log AFTER INSERT ON users
                BEGIN INSERT INTO user_changes (user) VALUES (NEW.id); END""",
            """CREATE TRIGGER users_update_log AFTER UPDATE ON users
                BEGIN INSERT INTO user_changes (user) VALUES (OLD.id); END""",
            """CREATE TRIGGER users_delete_log AFTER DELETE ON users
                BEGIN
                    INSERT INTO user_changes (user) VALUES (OLD.id);
                    DELETE FROM role_members WHERE user = OLD.id;
                END""",
            # The change log keeps the newest USER_CHANGES_KEPT entries.
            f"""CREATE TRIGGER user_changes_prune AFTER INSERT ON user_changes
                BEGIN DELETE FROM user_changes WHERE rev <= NEW.rev - {USER_CHANGES_KEPT}; END""",
        ),
    ),
)

SESSIONS_SCHEMA = Schema(
    name="sessions",
    application_id=0x6D71736E,  # "mqsn"
    migrations=(
        (
            """CREATE TABLE sessions (
                client_id TEXT PRIMARY KEY,
                user TEXT,
                subscriptions TEXT NOT NULL,
                disconnected_ts INTEGER
            ) WITHOUT ROWID""",
            """CREATE TABLE queue (
                client_id TEXT NOT NULL,
                qid INTEGER NOT NULL,
                topic TEXT NOT NULL,
                payload BLOB NOT NULL,
                qos INTEGER NOT NULL,
                PRIMARY KEY (client_id, qid)
            )""",
            """CREATE TABLE retained (
                topic TEXT PRIMARY KEY,
                payload BLOB NOT NULL,
                qos INTEGER NOT NULL
            )""",
        ),
    ),
)


def translate(exc: BaseException, what: str) -> StorageError:
    """Map a sqlite3 (or unexpected) exception to a `StorageError` subclass.

    Args:
        exc: The exception raised while running `what`.
        what: A short description of the operation, for the message.
    """
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, sqlite3.OperationalError):
        # Locked/busy database, I/O errors, full disk, unreadable file: retry may succeed.
        return Unavailable(f"{what}: {exc}")
    return StorageError(f"{what}: {type(exc).__name__}: {exc}")


def _switch_to_wal(conn: sqlite3.Connection) -> object:
    # Changing the journal mode takes an exclusive lock and SQLite does not always run the busy
    # handler for it: two processes opening a fresh file at once (two `mqim user add`) would see
    # "database is locked". Retry within the busy timeout; this runs in a storage thread.
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    """Open a connection configured for mqim (WAL, synchronous=NORMAL, manual transactions).

    Must be called in the thread that will use the connection.

    Raises:
        StorageError: The file cannot be opened (`Unavailable` when it may be transient).
    """
    try:
        # isolation_level=None: the sqlite3 module never opens transactions behind our back;
        # every transaction is an explicit BEGIN ... COMMIT.
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise translate(exc, f"cannot open {path}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if read_only:
            conn.execute("PRAGMA query_only = 1")
        else:
            mode = _switch_to_wal(conn)
            if str(mode).lower() != "wal":
                raise StorageError(f"{path}: cannot switch to WAL journal mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise translate(exc, f"cannot open {path}") from exc
        raise
    return conn


def migrate(conn: sqlite3.Connection, schema: Schema, *, path: Path) -> list[int]:
    """Bring the database to `schema.version`, in one transaction.

    Args:
        conn: A writable connection from `connect`.
        schema: The migrations to apply.
        path: The file, for error messages.

    Returns:
        The versions applied now (empty when the file was up to date).

    Raises:
        StorageError: The file belongs to something else or has a newer schema than this code.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            applied = _migrate_in_transaction(conn, schema, path=path)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise translate(exc, f"cannot migrate {schema.name} database {path}") from exc
    return applied


def _migrate_in_transaction(conn: sqlite3.Connection, schema: Schema, *, path: Path) -> list[int]:
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    has_tables = conn.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").fetchone()[0] > 0
    if app_id not in (0, schema.application_id) or (app_id == 0 and has_tables):
        raise StorageError(f"{path} is not an mqim {schema.name} database (application_id={app_id:#x})")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_ts INTEGER NOT NULL)"
    )
    current = int(conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0])
    if current > schema.version:
        raise StorageError(
            f"{path} has {schema.name} schema version {current}, newer than the version {schema.version} "
            "this mqim knows; upgrade mqim to open it"
        )
    applied: list[int] = []
    now = int(time.time() * 1000)
    for version in range(current + 1, schema.version + 1):
        statements = schema.migrations[version - 1]
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version, applied_ts) VALUES (?, ?)", (version, now))
        applied.append(version)
    if app_id == 0:
        # PRAGMA arguments cannot be bound; the value is our own integer constant.
        conn.execute(f"PRAGMA application_id = {int(schema.application_id)}")
    return applied
