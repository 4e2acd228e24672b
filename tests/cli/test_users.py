"""`mqim user ...` end to end: through typer's CliRunner and through the installed console script."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqim.cli import app
from mqim.storage import AccountKind, SqliteStorage

MQIM = Path(sys.executable).parent / "mqim"

# Commands and sub-commands that must all answer --help.
ALL_COMMANDS = [
    [],
    ["serve"],
    ["logic"],
    ["send"],
    ["tail"],
    ["user"],
    ["user", "add"],
    ["user", "list"],
    ["user", "passwd"],
    ["user", "disable"],
    ["user", "enable"],
    ["user", "remove"],
]


@pytest.fixture
def runner() -> CliRunner:
    # No MQIM_* variables from the surrounding environment.
    return CliRunner(env={k: None for k in os.environ if k.startswith("MQIM_")})


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def cli(runner: CliRunner, data_dir: Path, *args: str, input: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--data-dir", str(data_dir)], input=input)
    return result.exit_code, result.stdout, result.stderr


def listed(runner: CliRunner, data_dir: Path) -> dict[str, dict[str, object]]:
    code, out, err = cli(runner, data_dir, "user", "list", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    return {row["id"]: row for row in rows}


def password_ok(data_dir: Path, user: str, password: str) -> bool:
    """Check a password in the real storage file (tests are sync: the CLI runs its own loop)."""

    async def check() -> bool:
        async with SqliteStorage(path=data_dir / "mqim.db") as storage:
            return await storage.verify_password(user, password) is not None

    return asyncio.run(check())


# -- CliRunner -------------------------------------------------------------------------------------


def test_add_and_list(runner: CliRunner, data_dir: Path) -> None:
    assert cli(runner, data_dir, "user", "add", "bob", "--password", "pw-bob")[0] == 0
    code, out, _ = cli(runner, data_dir, "user", "add", "svc", "-p", "pw-svc", "--kind", "service")
    assert code == 0
    assert "svc" in out
    assert (data_dir / "mqim.db").is_file()
    assert listed(runner, data_dir) == {
        "bob": {"id": "bob", "kind": "user", "disabled": False},
        "svc": {"id": "svc", "kind": "service", "disabled": False},
    }
    code, out, _ = cli(runner, data_dir, "user", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "KIND", "DISABLED"]
    assert [line.split() for line in lines[1:]] == [["bob", "user", "no"], ["svc", "service", "no"]]
    assert password_ok(data_dir, "bob", "pw-bob")
    assert not password_ok(data_dir, "bob", "wrong")


def test_add_duplicate_fails_with_one_line(runner: CliRunner, data_dir: Path) -> None:
    assert cli(runner, data_dir, "user", "add", "bob", "-p", "x")[0] == 0
    code, _, err = cli(runner, data_dir, "user", "add", "bob", "-p", "y")
    assert code == 1
    assert err == "error: user 'bob' already exists\n"


def test_add_prompts_for_password_twice(runner: CliRunner, data_dir: Path) -> None:
    code, _, err = cli(runner, data_dir, "user", "add", "carol", input="s3cret\ns3cret\n")
    assert code == 0, err
    assert password_ok(data_dir, "carol", "s3cret")


def test_add_prompt_mismatch_creates_nothing(runner: CliRunner, data_dir: Path) -> None:
    code, _, _ = cli(runner, data_dir, "user", "add", "carol", input="one\ntwo\n")
    assert code != 0
    assert "carol" not in listed(runner, data_dir)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["user", "add", "bad name", "-p", "x"], "invalid user id 'bad name'"),
        (["user", "add", "x" * 65, "-p", "x"], "invalid user id"),
        (["user", "add", "dave", "-p", ""], "password must not be empty"),
        (["user", "add", "dave", "-p", "x" * 1025], "longer than 1024"),
        (["user", "disable", "a/b"], "invalid user id"),
    ],
)
def test_bad_input_is_a_usage_error(runner: CliRunner, data_dir: Path, args: list[str], message: str) -> None:
    code, _, err = cli(runner, data_dir, *args)
    assert code == 2
    assert message in err


def test_add_unknown_kind(runner: CliRunner, data_dir: Path) -> None:
    code, _, _ = cli(runner, data_dir, "user", "add", "dave", "-p", "x", "--kind", "robot")
    assert code == 2


@pytest.mark.parametrize("kind", list(AccountKind))
def test_add_every_kind(runner: CliRunner, data_dir: Path, kind: AccountKind) -> None:
    assert cli(runner, data_dir, "user", "add", "acct", "-p", "x", "--kind", kind.value)[0] == 0
    assert listed(runner, data_dir)["acct"]["kind"] == kind.value


def test_passwd(runner: CliRunner, data_dir: Path) -> None:
    cli(runner, data_dir, "user", "add", "bob", "-p", "old")
    code, _, err = cli(runner, data_dir, "user", "passwd", "bob", "--password", "new")
    assert code == 0, err
    assert password_ok(data_dir, "bob", "new")
    assert not password_ok(data_dir, "bob", "old")
    code, _, err = cli(runner, data_dir, "user", "passwd", "bob", input="newer\nnewer\n")
    assert code == 0, err
    assert password_ok(data_dir, "bob", "newer")


def test_disable_and_enable(runner: CliRunner, data_dir: Path) -> None:
    cli(runner, data_dir, "user", "add", "bob", "-p", "pw")
    assert cli(runner, data_dir, "user", "disable", "bob")[0] == 0
    assert listed(runner, data_dir)["bob"]["disabled"] is True
    assert not password_ok(data_dir, "bob", "pw")  # a disabled account cannot log in
    _, out, _ = cli(runner, data_dir, "user", "list")
    assert out.splitlines()[1].split() == ["bob", "user", "yes"]
    assert cli(runner, data_dir, "user", "enable", "bob")[0] == 0
    assert listed(runner, data_dir)["bob"]["disabled"] is False
    assert password_ok(data_dir, "bob", "pw")


def test_remove(runner: CliRunner, data_dir: Path) -> None:
    cli(runner, data_dir, "user", "add", "bob", "-p", "pw")
    cli(runner, data_dir, "user", "add", "eve", "-p", "pw")
    assert cli(runner, data_dir, "user", "remove", "bob", "--yes")[0] == 0
    assert list(listed(runner, data_dir)) == ["eve"]
    # Confirmation: "n" keeps the account, "y" removes it.
    code, _, _ = cli(runner, data_dir, "user", "remove", "eve", input="n\n")
    assert code == 1
    assert list(listed(runner, data_dir)) == ["eve"]
    assert cli(runner, data_dir, "user", "remove", "eve", input="y\n")[0] == 0
    assert listed(runner, data_dir) == {}


@pytest.mark.parametrize(
    "args",
    [
        ["user", "passwd", "ghost", "-p", "x"],
        ["user", "disable", "ghost"],
        ["user", "enable", "ghost"],
        ["user", "remove", "ghost", "--yes"],
    ],
)
def test_unknown_user(runner: CliRunner, data_dir: Path, args: list[str]) -> None:
    code, _, err = cli(runner, data_dir, *args)
    assert code == 1
    assert err == "error: user 'ghost' not found\n"


def test_passwd_unknown_user_does_not_prompt(runner: CliRunner, data_dir: Path) -> None:
    code, out, err = cli(runner, data_dir, "user", "passwd", "ghost")
    assert code == 1
    assert "Password" not in out
    assert "not found" in err


def test_data_dir_precedence(runner: CliRunner, tmp_path: Path) -> None:
    """Flag beats MQIM_SERVER__DATA_DIR beats the config file."""
    from_file, from_env, from_flag = tmp_path / "file", tmp_path / "env", tmp_path / "flag"
    config = tmp_path / "mqim.toml"
    config.write_text(f"[server]\ndata_dir = {str(from_file)!r}\n", encoding="utf-8")
    base = ["user", "add", "u1", "-p", "x", "--config", str(config)]
    assert runner.invoke(app, base).exit_code == 0
    assert (from_file / "mqim.db").is_file()
    env = {"MQIM_SERVER__DATA_DIR": str(from_env)}
    assert runner.invoke(app, base, env=env).exit_code == 0
    assert (from_env / "mqim.db").is_file()
    assert runner.invoke(app, [*base, "--data-dir", str(from_flag)], env=env).exit_code == 0
    assert (from_flag / "mqim.db").is_file()


def test_unusable_data_dir(runner: CliRunner, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    code, _, err = cli(runner, blocker / "data", "user", "list")
    assert code == 1
    assert err.startswith("error: cannot create data directory")


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: " ".join(c) or "mqim")
def test_help(runner: CliRunner, command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.stdout


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("mqim ")


# -- the installed console script ----------------------------------------------------------------


def mqim(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQIM_")}
    return subprocess.run(
        [str(MQIM), *args], capture_output=True, text=True, input=input, env=env, timeout=60, check=False
    )


def test_console_script_users(data_dir: Path) -> None:
    d = ["--data-dir", str(data_dir)]
    assert mqim("user", "add", "bob", "-p", "pw", *d).returncode == 0
    dup = mqim("user", "add", "bob", "-p", "pw", *d)
    assert (dup.returncode, dup.stderr) == (1, "error: user 'bob' already exists\n")
    assert mqim("user", "add", "svc", "-p", "pw", "--kind", "bridge", *d).returncode == 0
    assert mqim("user", "passwd", "bob", "-p", "pw2", *d).returncode == 0
    assert mqim("user", "disable", "bob", *d).returncode == 0
    out = mqim("user", "list", *d)
    assert out.returncode == 0
    assert [line.split() for line in out.stdout.splitlines()] == [
        ["ID", "KIND", "DISABLED"],
        ["bob", "user", "yes"],
        ["svc", "bridge", "no"],
    ]
    assert mqim("user", "enable", "bob", *d).returncode == 0
    assert "no" in mqim("user", "list", *d).stdout.splitlines()[1].split()
    # No terminal and no --yes: the confirmation cannot be given, nothing is removed.
    assert mqim("user", "remove", "bob", *d, input="").returncode == 1
    assert mqim("user", "remove", "bob", "--yes", *d).returncode == 0
    assert [line.split()[0] for line in mqim("user", "list", *d).stdout.splitlines()] == ["ID", "svc"]
    for args in (
        ["passwd", "ghost", "-p", "x"],
        ["disable", "ghost"],
        ["enable", "ghost"],
        ["remove", "ghost", "-y"],
    ):
        result = mqim("user", *args, *d)
        assert (result.returncode, result.stderr) == (1, "error: user 'ghost' not found\n")


def test_console_script_config_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQIM_")}
    env["MQIM_LIMITS__MAX_INFLIGHT"] = "-3"
    result = subprocess.run(
        [str(MQIM), "user", "list"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "limits.max_inflight" in result.stderr
    assert "MQIM_LIMITS__MAX_INFLIGHT" in result.stderr


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: " ".join(c) or "mqim")
def test_console_script_help(command: list[str]) -> None:
    result = mqim(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
