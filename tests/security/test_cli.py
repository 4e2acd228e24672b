"""`mqim acl`, `mqim role` and `mqim token` through typer's CliRunner, on a real data directory."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqim.auth import TOKEN_KEYS_FILENAME, load_keyring, verify_token
from mqim.cli import app
from mqim.server import EmbeddedServer
from mqim.storage import SqliteStorage
from tests.conftest import Users
from tests.security.conftest import eventually

HELP = [
    ["acl"], ["acl", "add"], ["acl", "list"], ["acl", "remove"], ["acl", "test"],
    ["role"], ["role", "add"], ["role", "remove"], ["role", "list"], ["role", "assign"], ["role", "unassign"],
    ["token"], ["token", "issue"], ["token", "revoke"], ["token", "rotate"], ["token", "keys"],
]  # fmt: skip


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={k: None for k in os.environ if k.startswith("MQIM_")})


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(runner: CliRunner, data_dir: Path) -> Cli:
    def invoke(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, [*args, "--data-dir", str(data_dir)])
        return result.exit_code, result.stdout, result.stderr

    return invoke


def add_users(data_dir: Path, *names: str) -> None:
    async def go() -> None:
        async with SqliteStorage(path=data_dir / "mqim.db") as storage:
            for name in names:
                await storage.add_user(name, password="pw-123456")

    data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(go())


@pytest.mark.parametrize("command", HELP, ids=" ".join)
def test_help(runner: CliRunner, command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_acl_add_list_test_remove(cli: Cli, data_dir: Path) -> None:
    add_users(data_dir, "alice", "bob")
    code, out, err = cli(
        "acl", "add", "allow   user:alice publish,subscribe sensors/%u/#", "--name", "alice-sensors"
    )
    assert code == 0, err
    assert "allow user:alice publish,subscribe sensors/%u/#" in out  # canonical form stored
    code, out, _ = cli("acl", "add", "deny all subscribe sensors/+/secret/#")
    assert code == 0
    rows = [json.loads(line) for line in cli("acl", "list", "--json")[1].splitlines()]
    assert [(r["name"], r["rule"]) for r in rows] == [
        ("alice-sensors", "allow user:alice publish,subscribe sensors/%u/#"),
        ("", "deny all subscribe sensors/+/secret/#"),
    ]
    code, out, _ = cli("acl", "test", "alice", "publish", "sensors/alice/temp")
    assert code == 0
    assert out.splitlines()[:2] == ["allow", "rule: alice-sensors"]
    code, out, _ = cli("acl", "test", "alice", "subscribe", "sensors/alice/secret/#", "--json")
    assert json.loads(out) == {
        "decision": "deny",
        "rule": f"#{rows[1]['id']}",
        "reason": json.loads(out)["reason"],
    }
    code, out, _ = cli("acl", "test", "bob", "publish", "sensors/alice/temp")
    assert out.splitlines()[:2] == ["deny", "rule: default-deny"]
    code, out, _ = cli("acl", "test", "alice", "subscribe", "im/v1/u/bob/#")
    assert out.splitlines()[:2] == ["deny", "rule: builtin:user-lock"]
    code, out, _ = cli("acl", "test", "alice", "subscribe", "im/v1/u/alice/#")
    assert out.splitlines()[:2] == ["allow", "rule: builtin:user-inbox"]
    assert cli("acl", "remove", str(rows[0]["id"]))[0] == 0
    assert cli("acl", "remove", str(rows[0]["id"]))[0] == 1
    code, out, _ = cli("acl", "test", "alice", "publish", "sensors/alice/temp")
    assert out.splitlines()[0] == "deny"
    code, out, _ = cli("acl", "list", "--builtin")
    assert "builtin:user-lock" in out


@pytest.mark.parametrize(
    "rule",
    [
        "allow user:alice publish foo%u/#",
        "allow someone publish x",
        "permit all publish x",
        "allow all write x",
        "allow all publish a/#/b",
    ],
)
def test_acl_add_refuses_bad_rules(cli: Cli, rule: str) -> None:
    code, _, err = cli("acl", "add", rule)
    assert code == 2
    assert "invalid rule" in err


def test_acl_test_unknown_user(cli: Cli) -> None:
    code, _, err = cli("acl", "test", "nobody", "publish", "x")
    assert code == 1
    assert "not found" in err


def test_roles(cli: Cli, data_dir: Path) -> None:
    add_users(data_dir, "alice", "bob")
    assert cli("role", "add", "ops", "-d", "operators")[0] == 0
    assert cli("role", "add", "ops")[0] == 1
    assert cli("role", "add", "bad role")[0] == 2
    assert cli("role", "assign", "ops", "alice")[0] == 0
    assert cli("role", "assign", "ops", "bob")[0] == 0
    assert cli("role", "assign", "ops", "carol")[0] == 1
    assert cli("role", "assign", "nope", "alice")[0] == 1
    rows = [json.loads(line) for line in cli("role", "list", "--json")[1].splitlines()]
    assert rows == [{"role": "ops", "description": "operators", "members": ["alice", "bob"]}]
    assert cli("acl", "add", "allow role:ops subscribe ops/#")[0] == 0
    assert cli("acl", "test", "alice", "subscribe", "ops/#")[1].splitlines()[0] == "allow"
    assert cli("role", "unassign", "ops", "alice")[0] == 0
    assert cli("role", "unassign", "ops", "alice")[0] == 1
    assert cli("acl", "test", "alice", "subscribe", "ops/#")[1].splitlines()[0] == "deny"
    assert cli("role", "remove", "ops", "--yes")[0] == 0
    assert "ops" not in cli("role", "list")[1]


def test_token_issue_keys_rotate_revoke(cli: Cli, data_dir: Path) -> None:
    add_users(data_dir, "alice")
    assert cli("token", "issue", "nobody")[0] == 1  # unknown user: no token
    code, out, err = cli("token", "issue", "alice", "--ttl", "120")
    assert code == 0, err
    token = out.strip()
    keys_path = data_dir / TOKEN_KEYS_FILENAME
    assert stat.S_IMODE(keys_path.stat().st_mode) == 0o600
    keyring = load_keyring(keys_path)
    claims = verify_token(keyring, token, audience="mqim", now=time.time())
    assert claims.subject == "alice"
    assert 110 <= claims.expires_at - claims.issued_at <= 120
    code, out, _ = cli("token", "issue", "alice", "--aud", "other", "--json")
    issued = json.loads(out)
    assert verify_token(keyring, issued["token"], audience="other", now=time.time()).token_id == issued["jti"]
    assert cli("token", "rotate", "--keep", "2")[0] == 0
    code, out, _ = cli("token", "keys")
    assert len(out.splitlines()) == 2
    assert "(signs)" in out.splitlines()[-1]
    assert cli("token", "revoke", token)[0] == 0  # by the token itself
    assert cli("token", "revoke", issued["jti"])[0] == 0  # by its id

    async def revoked() -> list[bool]:
        async with SqliteStorage(path=data_dir / "mqim.db") as storage:
            return [await storage.is_token_revoked(j) for j in (claims.token_id, issued["jti"], "other")]

    assert asyncio.run(revoked()) == [True, True, False]


async def test_role_unassigned_by_the_cli_reaches_a_running_server(
    server: EmbeddedServer, users: Users, runner: CliRunner
) -> None:
    alice, pub = await users.add("alice"), await users.add("pub")
    await server.storage.create_role("ops")
    await server.storage.assign_role(alice, "ops")
    await server.storage.add_acl_rule("allow role:ops subscribe,receive ops/#")
    await server.storage.add_acl_rule(f"allow user:{pub} publish ops/#")
    await server.reload_policy()
    alice_c = await users.connected(alice, client_id=f"{alice}-cli")
    assert await alice_c.subscribe("ops/#") == 1

    def unassign() -> int:
        args = ["role", "unassign", "ops", alice, "--data-dir", str(server.data_dir)]
        return runner.invoke(app, args).exit_code

    assert await asyncio.to_thread(unassign) == 0
    assert server.broker is not None
    hub = server.broker.hub
    await eventually(lambda: "ops/#" not in hub.sessions[f"{alice}-cli"].subscriptions, what="revoked")
    pub_c = await users.connected(pub)
    await pub_c.publish("ops/x", b"after")
    await alice_c.nothing(0.3)


def test_configuration_maps_onto_the_server() -> None:
    from mqim.cli._config import load_config
    from mqim.cli._serve import auth_options, broker_settings

    config = load_config(
        None,
        environ={
            "MQIM_AUTH__METHODS": "token, password",
            "MQIM_AUTH__TOKEN_AUDIENCE": "chat",
            "MQIM_AUTH__RELOAD_INTERVAL_S": "0.5",
            "MQIM_LIMITS__PUBLISH_RATE": "5",
            "MQIM_LIMITS__MAX_CONNECTIONS_PER_USER": "3",
            "MQIM_LIMITS__CONNECT_RATE_PER_ADDRESS": "7.5",
        },
    )
    options = auth_options(config)
    assert options.methods == ("token", "password")
    assert options.token_audience == "chat"
    settings = broker_settings(config)
    assert (settings.publish_rate, settings.max_connections_per_user) == (5.0, 3)
    assert settings.connect_rate_per_address == 7.5
    assert settings.policy_poll_interval_s == 0.5
    assert settings.max_payload_bytes == config.limits.max_payload_bytes


@pytest.mark.parametrize("methods", ["", "token,token", "magic"])
def test_configuration_refuses_bad_auth_methods(methods: str) -> None:
    from mqim.cli._config import load_config
    from mqim.cli._exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"auth\.methods"):
        load_config(None, environ={"MQIM_AUTH__METHODS": methods})
