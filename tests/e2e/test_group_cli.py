"""`mqim group ...` on the data directory of a running server, which follows the change."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable

from typer.testing import CliRunner

from mqim.cli import app
from tests.conftest import Users


async def _cli(users: Users, *args: str) -> tuple[int, str, str]:
    runner = CliRunner(env={k: None for k in os.environ if k.startswith("MQIM_")})
    argv = [*args, "--data-dir", str(users.server.data_dir)]
    # The command runs its own event loop: give it a thread.
    result = await asyncio.to_thread(runner.invoke, app, argv)
    return result.exit_code, result.stdout, result.stderr


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the server did not follow the change")


async def test_cli_changes_reach_a_running_server(users: Users, uid: Callable[[str], str]) -> None:
    alice, bob, carol = await users.add("alice"), await users.add("bob"), await users.add("carol")
    group = uid("team")
    alice_c, bob_c = await users.connected(alice), await users.connected(bob)

    code, out, err = await _cli(users, "group", "create", group, bob, "--owner", alice, "--name", "Team")
    assert code == 0, err
    assert "2 members" in out
    membership = users.server.membership
    await _until(lambda: membership.is_member(bob, group))
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "g-1", "group": group, "text": "cli"})
    assert (await bob_c.receive_on(f"{group}/msg")).json()["text"] == "cli"

    code, _, err = await _cli(users, "group", "add", group, carol)
    assert code == 0, err
    code, out, err = await _cli(users, "group", "info", group, "--json")
    assert code == 0, err
    assert json.loads(out)["members"] == {alice: "owner", bob: "member", carol: "member"}
    code, out, err = await _cli(users, "group", "list", "--user", carol, "--json")
    assert code == 0, err
    assert json.loads(out) == {"group": group, "name": "Team", "count": 3, "role": "member"}

    code, _, err = await _cli(users, "group", "remove", group, bob)
    assert code == 0, err
    await _until(lambda: not membership.is_member(bob, group))
    await alice_c.publish(f"im/v1/up/{alice}/msg", {"v": 1, "id": "g-2", "group": group, "text": "gone"})
    await alice_c.receive_on("/ack")
    await bob_c.nothing(0.3, suffix="/msg")


async def test_cli_refuses_bad_requests(users: Users, uid: Callable[[str], str]) -> None:
    alice = await users.add("alice")
    group = uid("team")
    code, _, err = await _cli(users, "group", "create", group, "nobody-xyz", "--owner", alice)
    assert code == 1
    assert "unknown users: nobody-xyz" in err
    code, _, err = await _cli(users, "group", "create", "bad id!", "--owner", alice)
    assert code == 2
    code, _, err = await _cli(users, "group", "info", uid("missing"))
    assert code == 1
    assert "not found" in err
    code, _, _ = await _cli(users, "group", "create", group, "--owner", alice)
    assert code == 0
    code, _, err = await _cli(users, "group", "remove", group, alice)
    assert code == 1
    assert "owner" in err
