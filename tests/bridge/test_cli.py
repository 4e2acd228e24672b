"""`mqim bridge account|map|command ...` through typer's CliRunner."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqim.bridge import BRIDGES_FILENAME, load_bridges
from mqim.cli import app
from mqim.storage import AccountKind, SqliteStorage


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={k: None for k in os.environ if k.startswith("MQIM_")})


def _run(runner: CliRunner, data_dir: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--data-dir", str(data_dir)])
    return result.exit_code, result.output


async def _kind(data_dir: Path, user: str) -> AccountKind | None:
    async with SqliteStorage(path=data_dir / "mqim.db") as storage:
        record = await storage.get_user(user)
        return record.kind if record else None


def test_bridge_accounts(runner: CliRunner, tmp_path: Path) -> None:
    code, out = _run(runner, tmp_path, "bridge", "account", "add", "plant7", "--password", "pw")
    assert code == 0, out
    assert "bridge/plant7/#" in out
    assert asyncio.run(_kind(tmp_path, "plant7")) == AccountKind.BRIDGE
    assert _run(runner, tmp_path, "bridge", "account", "add", "plant7", "--password", "pw")[0] == 1
    assert _run(runner, tmp_path, "bridge", "account", "add", "bad/name", "--password", "pw")[0] == 2
    code, out = _run(runner, tmp_path, "bridge", "account", "list", "--json")
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["plant7"]
    assert _run(runner, tmp_path, "user", "add", "alice", "-p", "pw")[0] == 0
    # Only bridge accounts can be removed here.
    assert _run(runner, tmp_path, "bridge", "account", "remove", "alice", "--yes")[0] == 1
    assert _run(runner, tmp_path, "bridge", "account", "remove", "plant7", "--yes")[0] == 0
    assert asyncio.run(_kind(tmp_path, "plant7")) is None


def test_mappings_and_command_routes(runner: CliRunner, tmp_path: Path) -> None:
    # Mappings name real accounts and groups (`bridge map add` refuses unknown ones).
    for user in ("plant7", "p", "u"):
        assert _run(runner, tmp_path, "user", "add", user, "-p", "pw-123456")[0] == 0
    assert _run(runner, tmp_path, "group", "create", "ops", "--owner", "plant7")[0] == 0
    code, out = _run(
        runner, tmp_path, "bridge", "map", "add", "alarms", "--source", "bridge/plant7/alarms/+",
        "--sender", "plant7", "--group", "ops",
    )  # fmt: skip
    assert code == 0, out
    assert (
        _run(
            runner,
            tmp_path,
            "bridge",
            "map",
            "add",
            "alarms",
            "--source",
            "x/#",
            "--sender",
            "p",
            "--to",
            "u",
        )[0]
        == 1
    )
    code, _ = _run(
        runner,
        tmp_path,
        "bridge",
        "map",
        "add",
        "alarms",
        "--source",
        "x/#",
        "--sender",
        "p",
        "--to",
        "u",
        "--replace",
    )
    assert code == 0
    assert (
        _run(
            runner,
            tmp_path,
            "bridge",
            "map",
            "add",
            "m2",
            "--source",
            "im/v1/#",
            "--sender",
            "p",
            "--to",
            "u",
        )[0]
        == 2
    )
    assert _run(runner, tmp_path, "bridge", "map", "add", "m3", "--source", "a/#", "--sender", "p")[0] == 2
    code, out = _run(
        runner,
        tmp_path,
        "bridge",
        "command",
        "add",
        "cmd",
        "--group",
        "ops",
        "--topic-prefix",
        "bridge/plant7/cmd",
    )
    assert code == 0, out
    assert _run(runner, tmp_path, "bridge", "command", "add", "c2", "--topic-prefix", "bridge/x")[0] == 2
    config = load_bridges(tmp_path / BRIDGES_FILENAME)
    assert [(m.name, m.source, m.to) for m in config.mappings] == [("alarms", "x/#", "u")]
    assert [(c.name, c.group) for c in config.commands] == [("cmd", "ops")]
    code, out = _run(runner, tmp_path, "bridge", "list")
    assert "alarms" in out
    assert "bridge/plant7/cmd/..." in out
    assert _run(runner, tmp_path, "bridge", "map", "remove", "alarms")[0] == 0
    assert _run(runner, tmp_path, "bridge", "map", "remove", "alarms")[0] == 1
    assert _run(runner, tmp_path, "bridge", "command", "remove", "cmd")[0] == 0
    assert load_bridges(tmp_path / BRIDGES_FILENAME).mappings == []


def test_passwords_stay_out_of_the_listing(runner: CliRunner, tmp_path: Path) -> None:
    code, out = _run(
        runner, tmp_path, "bridge", "add", "edge", "--remote", "mqtts://h", "--topic", "a/# out 1",
        "--username", "u", "--password", "very-secret",
    )  # fmt: skip
    assert code == 0, out
    for args in (("bridge", "list"), ("bridge", "list", "--json")):
        code, out = _run(runner, tmp_path, *args)
        assert code == 0
        assert "very-secret" not in out
    assert "very-secret" in (tmp_path / BRIDGES_FILENAME).read_text()
    (tmp_path / BRIDGES_FILENAME).write_text("{broken")
    code, out = _run(runner, tmp_path, "bridge", "list")
    assert code == 2
    assert "not valid JSON" in out
