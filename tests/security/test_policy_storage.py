"""Storage of the access policy (SQLite): rules, roles, revoked tokens, the account change log."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mqim.storage import AlreadyExists, NotFound, SqliteStorage, Storage, UserChanges
from mqim.storage._sqlite_schema import STORAGE_SCHEMA, USER_CHANGES_KEPT, Schema, connect, migrate


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async with SqliteStorage(path=tmp_path / "mqim.db") as s:
        yield s


async def test_rules_keep_their_order_and_ids(storage: Storage) -> None:
    a = await storage.add_acl_rule("allow all publish a/#", name="first")
    b = await storage.add_acl_rule("deny user:x receive a/b")
    assert b.rule_id > a.rule_id
    assert [(r.rule_id, r.text, r.name) for r in await storage.list_acl_rules()] == [
        (a.rule_id, "allow all publish a/#", "first"),
        (b.rule_id, "deny user:x receive a/b", ""),
    ]
    await storage.remove_acl_rule(a.rule_id)
    with pytest.raises(NotFound):
        await storage.remove_acl_rule(a.rule_id)
    c = await storage.add_acl_rule("allow all subscribe c")
    assert c.rule_id > b.rule_id  # ids are never reused
    assert [r.rule_id for r in await storage.list_acl_rules()] == [b.rule_id, c.rule_id]


async def test_every_policy_change_moves_the_acl_version(storage: Storage) -> None:
    await storage.add_user("alice", password="pw")
    versions = [await storage.acl_version()]

    async def moved() -> None:
        version = await storage.acl_version()
        assert version != versions[-1]
        versions.append(version)

    rule = await storage.add_acl_rule("allow all publish x")
    await moved()
    await storage.create_role("ops")
    await moved()
    await storage.assign_role("alice", "ops")
    await moved()
    await storage.unassign_role("alice", "ops")
    await moved()
    await storage.assign_role("alice", "ops")
    await moved()
    await storage.delete_role("ops")
    await moved()
    await storage.remove_acl_rule(rule.rule_id)
    await moved()
    # Reads and unrelated writes leave it alone.
    await storage.list_roles()
    await storage.set_password("alice", "pw2")
    assert await storage.acl_version() == versions[-1]


async def test_roles_and_assignments(storage: Storage) -> None:
    for user in ("alice", "bob"):
        await storage.add_user(user, password="pw")
    await storage.create_role("ops", description="operators")
    await storage.create_role("audit")
    with pytest.raises(AlreadyExists):
        await storage.create_role("ops")
    await storage.assign_role("bob", "ops")
    await storage.assign_role("alice", "ops")
    await storage.assign_role("alice", "ops")  # idempotent
    await storage.assign_role("alice", "audit")
    with pytest.raises(NotFound):
        await storage.assign_role("carol", "ops")
    with pytest.raises(NotFound):
        await storage.assign_role("alice", "nope")
    assert await storage.roles_of("alice") == ["audit", "ops"]
    roles = {r.name: r for r in await storage.list_roles()}
    assert roles["ops"].members == ("alice", "bob")
    assert roles["ops"].description == "operators"
    await storage.unassign_role("alice", "audit")
    with pytest.raises(NotFound):
        await storage.unassign_role("alice", "audit")
    await storage.delete_role("ops")
    with pytest.raises(NotFound):
        await storage.delete_role("ops")
    assert await storage.roles_of("alice") == []
    assert await storage.roles_of("bob") == []


async def test_removing_a_user_drops_its_roles(storage: Storage) -> None:
    await storage.add_user("alice", password="pw")
    await storage.create_role("ops")
    await storage.assign_role("alice", "ops")
    await storage.remove_user("alice")
    await storage.add_user("alice", password="pw")  # a new account with the same id
    assert await storage.roles_of("alice") == []


async def test_revoked_tokens(storage: Storage) -> None:
    assert not await storage.is_token_revoked("j-1")
    await storage.revoke_token("j-1", expires_ts=None)
    await storage.revoke_token("j-1", expires_ts=10)  # again: idempotent, keeps "unknown expiry"
    assert await storage.is_token_revoked("j-1")
    # An entry whose token expired long ago is pruned by the next revocation.
    await storage.revoke_token("old", expires_ts=1)
    await storage.revoke_token("j-2", expires_ts=None)
    assert not await storage.is_token_revoked("old")
    assert await storage.is_token_revoked("j-1")


async def test_user_change_log(storage: Storage) -> None:
    start = await storage.user_changes(None)
    assert start == UserChanges(rev=start.rev, users=(), complete=True)
    await storage.add_user("alice", password="pw")
    await storage.add_user("bob", password="pw")
    await storage.set_disabled("alice", True)
    await storage.set_disabled("alice", False)
    await storage.remove_user("bob")
    changes = await storage.user_changes(start.rev)
    assert changes.users == ("alice", "bob")  # each once, oldest change first
    assert changes.complete
    assert changes.rev > start.rev
    assert await storage.user_changes(changes.rev) == UserChanges(rev=changes.rev, users=(), complete=True)
    paged = await storage.user_changes(start.rev, limit=1)
    assert paged.users == ("alice",)
    assert (await storage.user_changes(paged.rev, limit=100)).users == ("bob", "alice")
    # A position this database never reached (a restored backup): start over.
    assert not (await storage.user_changes(changes.rev + 100)).complete


async def test_user_change_log_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "mqim.db"
    async with SqliteStorage(path=path) as storage:
        await storage.add_user("alice", password="pw")
        start = await storage.user_changes(None)
    # Many changes, written directly (scrypt per password change would be slow).
    conn = sqlite3.connect(path)
    with conn:
        for i in range(USER_CHANGES_KEPT + 5):
            conn.execute("UPDATE users SET disabled = ? WHERE id = 'alice'", (i % 2,))
    count = conn.execute("SELECT count(*) FROM user_changes").fetchone()[0]
    conn.close()
    assert count == USER_CHANGES_KEPT
    async with SqliteStorage(path=path) as storage:
        changes = await storage.user_changes(start.rev)
        assert not changes.complete  # the caller must re-check everyone
        assert changes.users == ("alice",)


async def test_version_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "mqim.db"
    v1 = Schema(
        name=STORAGE_SCHEMA.name,
        application_id=STORAGE_SCHEMA.application_id,
        migrations=STORAGE_SCHEMA.migrations[:1],
    )
    conn = connect(path, read_only=False)
    try:
        assert migrate(conn, v1, path=path) == [1]
        conn.execute(
            "INSERT INTO users (id, kind, password, disabled, created_ts) VALUES ('old', 'user', 'x', 0, 0)"
        )
    finally:
        conn.close()
    async with SqliteStorage(path=path) as storage:
        assert [u.user_id for u in await storage.list_users()] == ["old"]
        await storage.create_role("ops")
        await storage.assign_role("old", "ops")
        assert await storage.roles_of("old") == ["ops"]
        start = await storage.user_changes(None)
        await storage.set_disabled("old", True)
        assert (await storage.user_changes(start.rev)).users == ("old",)
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")] == [1, 2]
    conn.close()
