"""The outbox's bound (oldest dropped, counted) and persistence, on a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mqim.cli._config import load_config
from mqim.cli._exceptions import ConfigError
from mqim.hooks import HookOutbox


async def _commit(outbox: HookOutbox) -> None:
    task = asyncio.create_task(outbox.run(), name="outbox-under-test")
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not outbox.unwritten:
                break
        # A read queues behind the commit on the outbox's single thread: once it returns, the
        # writer task has seen that commit's result too.
        await outbox.fetch("-", after=0, limit=1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_at_the_bound_the_oldest_events_leave_and_are_counted(tmp_path: Path) -> None:
    outbox = HookOutbox(path=tmp_path / "o.db", max_rows=5, max_bytes=1_000_000)
    await outbox.open(["a"])
    try:
        for n in range(8):
            outbox.add(endpoint="a", event="message.offline", delivery=f"d{n}", body=b"x" * 10, now=0.0)
        await _commit(outbox)
        for n in range(8, 10):
            outbox.add(endpoint="a", event="message.offline", delivery=f"d{n}", body=b"x" * 10, now=0.0)
        await _commit(outbox)
        rows = await outbox.fetch("a", after=0, limit=100)
        assert [r.delivery for r in rows] == [f"d{n}" for n in range(5, 10)]
        assert (outbox.rows, outbox.size, outbox.dropped_full) == (5, 50, 5)
        outbox.done(rows[0].id)
        await _commit(outbox)
    finally:
        await outbox.close()
    # Reopened: what was committed is still there; rows of unknown endpoints are dropped.
    again = HookOutbox(path=tmp_path / "o.db", max_rows=5, max_bytes=35)
    await again.open(["a", "b"])
    try:
        assert again.rows == 4
        again.add(endpoint="b", event="user.online", delivery="p", body=b"y" * 10, now=0.0)
        await _commit(again)
        # 50 bytes > 35: the oldest leave until the bytes fit.
        assert [r.delivery for r in await again.fetch("a", after=0, limit=9)] == ["d8", "d9"]
        assert (again.rows, again.size) == (3, 30)
    finally:
        await again.close()


def test_hooks_and_proxy_configuration_is_validated(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[hooks.endpoints]]\nname = "x"\nurl = "ftp://h/"\nsecret = "s"\n')
    with pytest.raises(ConfigError, match=r"hooks\.endpoints\.0\.url"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="proxy_from"):
        load_config(None, {"server.proxy_protocol": True}, environ={})
    with pytest.raises(ConfigError, match="not an IP address"):
        load_config(None, {"server.proxy_from": "lb.example.com"}, environ={})
    config = load_config(
        None, {"server.proxy_protocol": True}, environ={"MQIM_SERVER__PROXY_FROM": "10.0.0.5, 10.1.0.0/16"}
    )
    assert config.server.proxy_from == ("10.0.0.5", "10.1.0.0/16")
