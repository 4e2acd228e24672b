"""MqimClient against the real embedded server on a free loopback port."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path

import pytest

from mqim.broker import BrokerSettings, Listener
from mqim.client import AuthError, Incoming, MqimClient, SendError
from mqim.protocol import DeliveredMessage, ErrorCode, direct_conv
from mqim.server import EmbeddedServer
from tests.conftest import PASSWORD, Users, free_port

MQIM = Path(sys.executable).parent / "mqim"


def client(server: EmbeddedServer, user: str, **kwargs: object) -> MqimClient:
    return MqimClient(port=server.port(), user=user, password=PASSWORD, ack_timeout=5.0, **kwargs)  # type: ignore[arg-type]


async def next_message(stream: MqimClient) -> Incoming:
    async with aclosing(stream.messages()) as messages:
        async for item in messages:
            if item.kind == "msg":
                return item
    raise AssertionError("stream ended")


async def test_send_ack_and_receive(server: EmbeddedServer, users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    async with client(server, alice) as a, client(server, bob) as b:
        ack = await a.send(to=bob, text="hi", data={"k": 1})
        assert ack.conv == direct_conv(alice, bob)
        assert ack.seq == 1
        got = await asyncio.wait_for(next_message(b), 10)
        message = got.message
        assert isinstance(message, DeliveredMessage)
        assert (message.sender, message.text, message.data, message.seq) == (alice, "hi", {"k": 1}, 1)
        assert message.id == ack.id
        # The same id again: the same ack, nothing new stored.
        again = await a.send(to=bob, text="hi", data={"k": 1}, id=ack.id)
        assert again == ack
        second = await a.send(to=bob, text="next")
        assert second.seq == 2
        got = await asyncio.wait_for(next_message(b), 10)
        assert got.message is not None
        assert got.message.seq == 2  # the retry was not delivered a second time


async def test_refusal_raises_send_error(
    server: EmbeddedServer, users: Users, uid: Callable[[str], str]
) -> None:
    alice = await users.add("alice")
    async with client(server, alice, receive=False) as a:
        with pytest.raises(SendError) as info:
            await a.send(to=uid("ghost"), text="anyone?")
        assert info.value.code is ErrorCode.NOT_FOUND
        assert info.value.error.ref is not None


async def test_wrong_password(server: EmbeddedServer, users: Users) -> None:
    alice = await users.add("alice")
    with pytest.raises(AuthError):
        async with MqimClient(port=server.port(), user=alice, password="wrong"):
            pass


async def test_offline_messages_arrive_on_reconnect(server: EmbeddedServer, users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    # Bob's persistent session exists, then he goes away.
    async with client(server, bob, client_id=f"{bob}-phone"):
        pass
    async with client(server, alice, receive=False) as a:
        ack = await a.send(to=bob, text="while you were out")
    async with client(server, bob, client_id=f"{bob}-phone") as b:
        got = await asyncio.wait_for(next_message(b), 10)
        assert got.message is not None
        assert (got.message.id, got.message.seq) == (ack.id, ack.seq)


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(MQIM), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_send_and_tail(server: EmbeddedServer, users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    port = str(server.port())
    # Bob's tail session (client id "<user>-tail") exists before anything is sent, so what is
    # sent next waits in it for the tail below: no race between the processes.
    async with client(server, bob, client_id=f"{bob}-tail"):
        pass
    code, out, err = await run_cli("send", "--as", alice, "-p", PASSWORD, "--port", port, "--to", bob, "one")
    assert code == 0, err
    first = json.loads(out)
    assert first["conv"] == direct_conv(alice, bob)
    assert first["seq"] == 1
    code, out, err = await run_cli(
        "send", "--as", alice, "-p", PASSWORD, "--port", port, "--to", bob, "--data", '{"t": 21.5}'
    )
    assert code == 0, err
    code, out, err = await run_cli("tail", "--as", bob, "-p", PASSWORD, "--port", port, "--count", "2")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["payload"].get("text") for line in lines] == ["one", None]
    assert lines[1]["payload"]["data"] == {"t": 21.5}
    assert all(line["kind"] == "msg" and line["payload"]["from"] == alice for line in lines)


async def test_cli_send_errors(server: EmbeddedServer, users: Users, uid: Callable[[str], str]) -> None:
    alice = await users.add("alice")
    port = str(server.port())
    code, _, err = await run_cli(
        "send", "--as", alice, "-p", PASSWORD, "--port", port, "--to", uid("ghost"), "x"
    )
    assert code == 1
    assert err.startswith("error: server refused the message: not_found")
    code, _, err = await run_cli("send", "--as", alice, "-p", "wrong", "--port", port, "--to", alice, "x")
    assert code == 1
    assert err.startswith("error: authentication failed")


async def test_reconnects_after_a_server_restart(tmp_path: Path) -> None:
    port = free_port()

    def make_server() -> EmbeddedServer:
        return EmbeddedServer(
            data_dir=tmp_path / "data",
            listeners=[Listener(name="default", port=port)],
            settings=BrokerSettings(connect_timeout_s=3.0),
        )

    first = make_server()
    await first.__aenter__()
    try:
        for user in ("alice", "bob"):
            await first.storage.add_user(user, password=PASSWORD)
        bob = MqimClient(
            port=port, user="bob", password=PASSWORD, reconnect_base_delay=0.05, reconnect_max_delay=0.5
        )
        await bob.connect()
    finally:
        await first.__aexit__(None, None, None)
    try:
        async with make_server() as second:
            assert second.port() == port
            # Bounded wait for Bob's supervisor to notice the drop and come back.
            for _ in range(400):
                if bob.reconnects >= 1 and bob.connected:
                    break
                await asyncio.sleep(0.05)
            assert bob.reconnects >= 1
            async with MqimClient(port=port, user="alice", password=PASSWORD, ack_timeout=5.0) as alice:
                ack = await alice.send(to="bob", text="after the restart")
            got = await asyncio.wait_for(next_message(bob), 20)
            assert got.message is not None
            assert got.message.id == ack.id
            assert bob.reconnects >= 1
            assert bob.connected
    finally:
        await bob.close()
    assert not bob.connected


async def test_cli_tail_stops_on_ctrl_c(server: EmbeddedServer, users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    port = str(server.port())
    async with client(server, bob, client_id=f"{bob}-tail"):
        pass  # the session exists, so the message below waits for the tail
    async with client(server, alice, receive=False) as a:
        await a.send(to=bob, text="one")
    tail = await asyncio.create_subprocess_exec(
        str(MQIM),
        "tail",
        "--as",
        bob,
        "-p",
        PASSWORD,
        "--port",
        port,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert tail.stdout is not None
    try:
        line = await asyncio.wait_for(tail.stdout.readline(), 30)
        assert json.loads(line)["payload"]["text"] == "one"
    finally:
        if tail.returncode is None:
            tail.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(tail.communicate(), 30)
    assert tail.returncode == 130, err.decode()
    assert b"Traceback" not in err
