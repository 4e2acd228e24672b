"""The admin commands on the cluster's MongoDB (SecantusDB): `--mongo`, `MQIM_MONGO_URL`, `[cluster]`.

Same output as on SQLite, nothing written to the local SQLite, and no silent fallback to it when
a cluster is configured without a MongoDB URL.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from mqim.cli import app, load_config
from mqim.cli._exceptions import ConfigError
from mqim.server import membership_stamp_key
from mqim.storage import AccountKind, MongoStorage
from tests.support.servers import MongoServer, RedisServer, mongo_proc, redis_proc

__all__ = ["mongo_proc", "redis_proc"]


@pytest.fixture
def database() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def _runner(**env: str) -> CliRunner:
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MQIM_")}
    clean.update(env)
    return CliRunner(env=clean)


def _invoke(runner: CliRunner, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


async def _account(url: str, database: str, user: str) -> tuple[AccountKind, bool] | None:
    async with MongoStorage(url=url, database=database) as storage:
        record = await storage.get_user(user)
        if record is None:
            return None
        return record.kind, await storage.verify_password(user, "pw-1") is not None


# What an administrator sets up, with the output that must not depend on the storage.
SCRIPT: list[list[str]] = [
    ["user", "add", "alice", "-p", "pw-1"],
    ["user", "add", "bob", "-p", "pw-1"],
    ["user", "add", "logic-1", "--kind", "service", "-p", "pw-1"],
    ["user", "add-many", "dev", "-n", "3", "-p", "pw-1"],
    ["user", "passwd", "bob", "-p", "pw-2"],
    ["user", "disable", "dev2"],
    ["user", "list", "--json"],
    ["group", "create", "team", "--owner", "alice", "bob"],
    ["group", "add", "team", "dev0"],
    ["group", "remove", "team", "dev0"],
    ["group", "info", "team"],
    ["group", "list", "--user", "bob"],
    ["role", "add", "ops", "-d", "operators"],
    ["role", "assign", "ops", "alice"],
    ["role", "list"],
    ["acl", "add", "allow role:ops publish,subscribe sensors/#", "--name", "ops-sensors"],
    ["acl", "list", "--json"],
    ["acl", "test", "alice", "subscribe", "sensors/x"],
    ["acl", "test", "bob", "subscribe", "sensors/x"],
    ["bridge", "account", "add", "plant7", "-p", "pw-1"],
    ["bridge", "account", "list"],
    ["token", "revoke", "some-jti"],
    ["user", "remove", "dev1", "--yes"],
    ["user", "list"],
]


def _play(runner: CliRunner, common: list[str]) -> list[tuple[int, str]]:
    outputs = []
    for args in SCRIPT:
        code, out, err = _invoke(runner, *args, *common)
        assert code == 0, (args, out, err)
        outputs.append((code, out))
    return outputs


def test_every_admin_command_gives_the_same_output_on_mongodb_as_on_sqlite(
    mongo_proc: MongoServer, database: str, tmp_path: Path
) -> None:
    runner = _runner()
    on_sqlite = _play(runner, ["--data-dir", str(tmp_path / "sqlite")])
    cluster_dir = tmp_path / "node"
    on_mongo = _play(
        runner, ["--data-dir", str(cluster_dir), "--mongo", mongo_proc.url, "--database", database]
    )
    assert on_mongo == on_sqlite
    # Nothing went to a local SQLite file.
    assert not (cluster_dir / "mqim.db").exists()
    assert asyncio.run(_account(mongo_proc.url, database, "logic-1")) == (AccountKind.SERVICE, True)
    assert asyncio.run(_account(mongo_proc.url, database, "plant7")) == (AccountKind.BRIDGE, True)


def test_mqim_mongo_url_in_the_environment_is_the_cluster(
    mongo_proc: MongoServer, database: str, tmp_path: Path
) -> None:
    """The README's set-up: `MQIM_MONGO_URL` exported, `--data-dir` of a node given."""
    runner = _runner(MQIM_MONGO_URL=mongo_proc.url)
    code, out, err = _invoke(
        runner,
        "user",
        "add",
        "dave",
        "-p",
        "pw-1",
        "--data-dir",
        str(tmp_path / "n1"),
        "--database",
        database,
    )
    assert (code, out) == (0, "added user 'dave'\n"), err
    assert not (tmp_path / "n1" / "mqim.db").exists()
    assert asyncio.run(_account(mongo_proc.url, database, "dave")) == (AccountKind.USER, True)
    code, out, err = _invoke(
        runner, "token", "issue", "dave", "--database", database, "--data-dir", str(tmp_path)
    )
    assert code == 0, err
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+\n", out)
    code, _, err = _invoke(
        runner, "token", "issue", "nobody", "--database", database, "--data-dir", str(tmp_path)
    )
    assert (code, err) == (1, "error: user 'nobody' not found\n")


def test_the_cluster_section_of_the_config_file(
    mongo_proc: MongoServer, database: str, tmp_path: Path
) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(f'[cluster]\nnode_id = "n1"\nmongo_url = "{mongo_proc.url}"\ndatabase = "{database}"\n')
    runner = _runner()
    code, _, err = _invoke(runner, "bridge", "account", "add", "plant9", "-p", "pw-1", "-c", str(config))
    assert code == 0, err
    assert asyncio.run(_account(mongo_proc.url, database, "plant9")) == (AccountKind.BRIDGE, True)
    # The flag beats the file.
    other = f"{database}x"
    code, _, err = _invoke(
        runner, "user", "add", "erin", "-p", "pw-1", "-c", str(config), "--database", other
    )
    assert code == 0, err
    assert asyncio.run(_account(mongo_proc.url, other, "erin")) == (AccountKind.USER, True)
    assert asyncio.run(_account(mongo_proc.url, database, "erin")) is None


@pytest.mark.parametrize(
    ("env", "toml", "key"),
    [
        ({"MQIM_REDIS_URL": "redis://127.0.0.1:1/0"}, "", "cluster.redis_url"),
        ({"MQIM_CLUSTER__NODE_ID": "n1"}, "", "cluster.node_id"),
        ({}, '[cluster]\nredis_url = "redis://127.0.0.1:1/0"\n', "cluster.redis_url"),
    ],
)
def test_a_cluster_without_mongodb_never_falls_back_to_sqlite(
    env: dict[str, str], toml: str, key: str, tmp_path: Path
) -> None:
    config = tmp_path / "mqim.toml"
    config.write_text(toml)
    runner = _runner(**env)
    for args in (
        ["user", "add", "dave", "-p", "pw-1"],
        ["group", "list"],
        ["acl", "list"],
        ["role", "list"],
        ["token", "revoke", "jti-1"],
        ["bridge", "account", "list"],
    ):
        code, out, err = _invoke(runner, *args, "--data-dir", str(tmp_path / "n1"), "-c", str(config))
        assert code == 2, (args, out, err)
        assert key in err
        assert "no MongoDB URL" in err
    assert not (tmp_path / "n1" / "mqim.db").exists()


@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        ("[cluster]\nheartbeat_s = 5\nnode_ttl_s = 2\n", {}, "cluster (file"),
        ('[cluster]\nnode_id = "bad/id"\n', {}, "cluster.node_id = 'bad/id'"),
        ("", {"MQIM_CLUSTER__HEARTBEAT_S": "0"}, "cluster.heartbeat_s = '0' (env MQIM_CLUSTER__HEARTBEAT_S)"),
        ("[cluster]\nmongo = 'x'\n", {}, "cluster.mongo = 'x'"),
    ],
)
def test_cluster_section_errors_name_the_key(
    toml: str, env: dict[str, str], expected: str, tmp_path: Path
) -> None:
    path = tmp_path / "mqim.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=env)
    assert expected in caught.value.message


def test_cluster_section_from_the_environment(tmp_path: Path) -> None:
    config = load_config(
        None,
        environ={
            "MQIM_CLUSTER__NODE_ID": "n7",
            "MQIM_CLUSTER__REDIS_URL": "redis://r:6379/0",
            "MQIM_CLUSTER__MONGO_URL": "mongodb://m/",
            "MQIM_CLUSTER__HEARTBEAT_S": "0.5",
            "MQIM_CLUSTER__NODE_TTL_S": "3",
        },
    )
    cluster = config.cluster
    assert (cluster.node_id, cluster.redis_url, cluster.mongo_url) == (
        "n7",
        "redis://r:6379/0",
        "mongodb://m/",
    )
    assert (cluster.heartbeat_s, cluster.node_ttl_s, cluster.database, cluster.prefix) == (
        0.5,
        3.0,
        "mqim",
        "mqim",
    )


def test_group_changes_bump_the_cluster_membership_stamp(
    mongo_proc: MongoServer, redis_proc: RedisServer, database: str
) -> None:
    runner = _runner(MQIM_MONGO_URL=mongo_proc.url, MQIM_REDIS_URL=redis_proc.url)
    common = ["--database", database]
    for user in ("alice", "bob"):
        assert _invoke(runner, "user", "add", user, "-p", "pw-1", *common)[0] == 0
    client = redis.Redis.from_url(redis_proc.url)
    try:
        before = int(client.get(membership_stamp_key("mqim")) or 0)
        code, out, err = _invoke(runner, "group", "create", "team", "--owner", "alice", *common)
        assert (code, out, err) == (0, "created group 'team' with 1 members\n", "")
        assert _invoke(runner, "group", "add", "team", "bob", *common)[0] == 0
        assert int(client.get(membership_stamp_key("mqim")) or 0) == before + 2
    finally:
        client.close()
    # Without a Redis URL the change is stored, and the operator is told the nodes were not.
    code, out, err = _invoke(
        _runner(MQIM_MONGO_URL=mongo_proc.url), "group", "remove", "team", "bob", *common
    )
    assert code == 0
    assert "the running nodes were not told" in err


def test_bridge_mappings_and_routes_refuse_unknown_groups_and_users(tmp_path: Path) -> None:
    runner = _runner()
    common = ["--data-dir", str(tmp_path)]

    def mqim(*args: str) -> tuple[int, str]:
        code, _, err = _invoke(runner, *args, *common)
        return code, err

    source = ["--source", "bridge/plant7/alarms/+"]
    assert mqim("bridge", "map", "add", "alarms", *source, "--sender", "plant7", "--group", "nogroup") == (
        1,
        "error: unknown users: plant7 (create them with `mqim user add`)\n",
    )
    assert mqim("bridge", "account", "add", "plant7", "-p", "pw-1")[0] == 0
    assert mqim("bridge", "map", "add", "alarms", *source, "--sender", "plant7", "--group", "nogroup") == (
        1,
        "error: group 'nogroup' not found (create it with `mqim group create`)\n",
    )
    assert mqim("bridge", "map", "add", "alarms", *source, "--sender", "plant7", "--to", "nobody")[0] == 1
    assert mqim("user", "add", "alice", "-p", "pw-1")[0] == 0
    assert mqim("group", "create", "ops", "--owner", "alice")[0] == 0
    code, err = mqim("bridge", "map", "add", "alarms", *source, "--sender", "plant7", "--group", "ops")
    assert code == 1
    assert "'plant7' is not a member of group 'ops'" in err
    assert mqim("group", "add", "ops", "plant7")[0] == 0
    assert mqim("bridge", "map", "add", "alarms", *source, "--sender", "plant7", "--group", "ops") == (0, "")
    assert mqim("bridge", "map", "add", "dm", *source, "--sender", "plant7", "--to", "alice") == (0, "")
    prefix = ["--topic-prefix", "bridge/plant7/cmd"]
    assert mqim("bridge", "command", "add", "c1", *prefix, "--group", "nogroup")[0] == 1
    assert mqim("bridge", "command", "add", "c1", *prefix, "--user", "nobody")[0] == 1
    assert mqim("bridge", "command", "add", "c1", *prefix, "--group", "ops") == (0, "")
    code, out, _ = _invoke(runner, "bridge", "list", "--json", *common)
    doc = json.loads(out)
    assert [m["name"] for m in doc["mappings"]] == ["alarms", "dm"]
    assert [c["name"] for c in doc["commands"]] == ["c1"]


def test_mqim_broker_names_what_is_missing(tmp_path: Path) -> None:
    runner = _runner()
    code, _, err = _invoke(runner, "broker", "--redis", "redis://127.0.0.1:1/0", "--mongo", "mongodb://x/")
    assert (code, err) == (
        2,
        "error: cluster.node_id is not set: give --node-id, or set it in the [cluster] section\n",
    )
    code, _, err = _invoke(runner, "broker", "--node-id", "n1", "--mongo", "mongodb://x/")
    assert code == 2
    assert "cluster.redis_url is not set" in err
    code, _, err = _invoke(runner, "broker", "--node-id", "n1", "--redis", "redis://h/0", "--heartbeat", "9")
    assert code == 2
    assert "node_ttl_s (4.0) must exceed heartbeat_s (9.0)" in err
    code, _, err = _invoke(runner, "cluster", "status")
    assert code == 2
    assert "cluster.redis_url is not set" in err
