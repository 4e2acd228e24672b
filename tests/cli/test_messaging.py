"""`mqim send` / `mqim tail` argument handling and connection errors (no server needed).

Their happy paths against the real server are in tests/client/test_client_live.py.
"""

from __future__ import annotations

import os
import socket

import pytest
from typer.testing import CliRunner

from mqim.cli import app


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={k: None for k in os.environ if k.startswith("MQIM_")})


@pytest.fixture
def refused_port() -> int:
    # A port that was free a moment ago; nothing listens on it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


BASE = ["send", "--as", "alice", "--password", "pw"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([*BASE, "hi"], "exactly one of --to and --group"),
        ([*BASE, "--to", "bob", "--group", "team", "hi"], "exactly one of --to and --group"),
        ([*BASE, "--to", "bob"], "give a TEXT argument or --data"),
        ([*BASE, "--to", "bob", "--data", "{nope"], "--data is not JSON"),
        ([*BASE, "--to", "bob", "--data", "[1]"], "--data must be a JSON object"),
    ],
)
def test_send_usage_errors(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_send_invalid_ids_are_refused_before_sending(runner: CliRunner, refused_port: int) -> None:
    result = runner.invoke(app, [*BASE, "--port", str(refused_port), "--to", "b o b", "hi"])
    assert result.exit_code != 0
    assert result.stderr.startswith("error:")


def test_send_connection_refused(runner: CliRunner, refused_port: int) -> None:
    result = runner.invoke(app, [*BASE, "--port", str(refused_port), "--to", "bob", "hi"])
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"error: cannot connect to 127.0.0.1:{refused_port}: [Errno 111] Connection refused\n"
    )


def test_tail_connection_refused(runner: CliRunner, refused_port: int) -> None:
    result = runner.invoke(app, ["tail", "--as", "bob", "-p", "pw", "--port", str(refused_port), "-n", "1"])
    assert result.exit_code == 1
    assert "cannot connect" in result.stderr


def test_password_from_environment(runner: CliRunner, refused_port: int) -> None:
    result = runner.invoke(
        app,
        ["send", "--as", "alice", "--port", str(refused_port), "--to", "bob", "hi"],
        env={"MQIM_PASSWORD": "pw"},
    )
    assert result.exit_code == 1
    assert "cannot connect" in result.stderr  # got past the password, to the network


def test_bad_cafile(runner: CliRunner, tmp_path: object, refused_port: int) -> None:
    result = runner.invoke(
        app, [*BASE, "--port", str(refused_port), "--cafile", "/nonexistent.pem", "--to", "b", "x"]
    )
    assert result.exit_code == 2
    assert "cannot load CA file" in result.stderr
