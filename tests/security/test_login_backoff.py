"""Failed logins under attack: back-off without hashing, no lock-out of the real user, bounded checks.

Attackers connect from other loopback addresses (127.0.0.2...) so that source-address back-off
and the account's real user (127.0.0.5) can be told apart. What the server did is read from
the counters `StorageAuthenticator.stats` exposes, never from timing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mqim.auth import AuthenticationBusy, AuthOptions, StorageAuthenticator
from mqim.auth._authenticator import ConnectRequest
from mqim.auth._backoff import BackoffPolicy
from mqim.auth._password_auth import PasswordCheckStats
from mqim.server import EmbeddedServer
from mqim.storage import SqliteStorage
from tests.conftest import PASSWORD
from tests.security.conftest import settings, started
from tests.support.mqtt import Paho, Raw

# Long delays: while a test runs, a key that backs off stays blocked (no timing involved).
POLICY = BackoffPolicy(
    free_failures=3, address_free_failures=8, base_delay_s=60.0, max_delay_s=120.0, account_max_delay_s=120.0
)


async def raw_connack(port: int, *, source: str, user: str, password: str, cid: str = "x") -> int | None:
    """CONNECT from `source` (a loopback address); the CONNACK return code, None if none came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(Raw.connect_packet(client_id=cid, user=user, password=password))
        await writer.drain()
        head = await asyncio.wait_for(reader.read(4), 10)
    finally:
        writer.close()
    if len(head) < 4 or head[0] != 0x20:
        return None
    return head[3]


async def paho_connack(port: int, *, source: str, user: str, password: str, cid: str) -> int | None:
    """A real paho client connecting from `source`; its CONNACK return code."""
    client = Paho(port=port, user=user, password=password, client_id=cid)
    try:
        await asyncio.to_thread(client.client.connect, "127.0.0.1", port, 30, bind_address=source)
        client.client.loop_start()
        if not await asyncio.to_thread(client._connected.wait, 10):
            return None
        assert client.connack is not None
        return client.connack[1]
    finally:
        client.close()


def password_method(server: EmbeddedServer) -> StorageAuthenticator:
    assert server.broker is not None
    chain = server.broker.authenticator
    method = chain.method(StorageAuthenticator)  # type: ignore[attr-defined]
    assert isinstance(method, StorageAuthenticator)
    return method


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    async with started(
        tmp_path / "data",
        settings=settings(connect_rate_per_address=0),  # the back-off is under test, not the rate
        auth=AuthOptions(login_backoff=POLICY),
    ) as srv:
        await srv.storage.add_user("victim", password=PASSWORD)
        await srv.storage.add_user("other", password=PASSWORD)
        yield srv


async def test_backing_off_refuses_without_hashing(guarded: EmbeddedServer) -> None:
    stats = password_method(guarded).stats
    codes = [
        await raw_connack(guarded.port(), source="127.0.0.2", user="victim", password=f"guess-{i}")
        for i in range(POLICY.free_failures + 10)
    ]
    assert codes == [4] * len(codes)  # refused the same way, backing off or not
    assert stats.checks == POLICY.free_failures  # then only table look-ups
    assert stats.backoff_refusals == 10
    # Even the right password from the attacker's address waits for the pair's back-off.
    assert await raw_connack(guarded.port(), source="127.0.0.2", user="victim", password=PASSWORD) == 4
    assert stats.checks == POLICY.free_failures


async def test_address_backs_off_across_accounts(guarded: EmbeddedServer) -> None:
    stats = password_method(guarded).stats
    for i in range(POLICY.address_free_failures + 5):
        # A new account name each time: no pair and no account reaches its threshold.
        code = await raw_connack(guarded.port(), source="127.0.0.3", user=f"name-{i}", password="x")
        assert code == 4
    assert stats.checks == POLICY.address_free_failures
    assert stats.backoff_refusals == 5


async def test_real_user_logs_in_from_another_address_while_the_account_is_hammered(
    guarded: EmbeddedServer,
) -> None:
    stats = password_method(guarded).stats
    port = guarded.port()

    async def hammer(source: str, n: int) -> list[int | None]:
        return [await raw_connack(port, source=source, user="victim", password="nope") for _ in range(n)]

    # Several addresses at once, enough to put the account itself into back-off.
    attacks = [asyncio.create_task(hammer(f"127.0.0.{i}", 12)) for i in (2, 3, 4)]
    await asyncio.sleep(0)  # let the attack start
    results: list[int | None] = []
    for n in range(3):
        results.append(
            await paho_connack(port, source="127.0.0.5", user="victim", password=PASSWORD, cid=f"v{n}")
        )
    codes = [c for attack in await asyncio.gather(*attacks) for c in attack]
    # After the attack too: the account itself is backing off, and the real user still gets in.
    backoff = password_method(guarded).backoff
    assert backoff.account_blocked("victim", time.monotonic())
    results.append(await paho_connack(port, source="127.0.0.5", user="victim", password=PASSWORD, cid="v9"))
    assert results == [0, 0, 0, 0]
    assert set(codes) == {4}
    assert stats.backoff_refusals >= 3 * (12 - POLICY.free_failures)
    # The attacker's own addresses wait, even with the right password.
    assert await raw_connack(port, source="127.0.0.2", user="victim", password=PASSWORD) == 4


async def test_password_checks_are_bounded(tmp_path: Path) -> None:
    storage = SqliteStorage(path=tmp_path / "accounts.db")
    async with storage:
        await storage.add_user("alice", password=PASSWORD)
        auth = StorageAuthenticator(
            storage=storage, max_concurrent_checks=2, check_wait_s=30.0, max_waiting_checks=3
        )

        def request(n: int, password: str) -> ConnectRequest:
            # Distinct addresses: back-off stays out of the way.
            return ConnectRequest(
                username="alice",
                password=password.encode(),
                client_id=f"c{n}",
                listener="default",
                remote_address=f"127.0.1.{n}:1000",
            )

        results = await asyncio.gather(
            *(auth.authenticate(request(n, PASSWORD if n % 2 else "wrong")) for n in range(12)),
            return_exceptions=True,
        )
    stats: PasswordCheckStats = auth.stats
    busy = [r for r in results if isinstance(r, AuthenticationBusy)]
    answered = [r for r in results if not isinstance(r, BaseException)]
    # 2 run, 3 wait (each eventually runs), the other 7 are refused at once: no unbounded queue.
    assert stats.peak_concurrent == 2
    assert (len(answered), len(busy)) == (5, 7)
    assert stats.checks == 5
    assert stats.busy_refusals == 7
    assert auth.gate.active == 0
    assert auth.gate.waiting == 0


async def test_a_slot_that_does_not_come_free_in_time_is_busy(tmp_path: Path) -> None:
    storage = SqliteStorage(path=tmp_path / "accounts.db")
    async with storage:
        await storage.add_user("alice", password=PASSWORD)
        auth = StorageAuthenticator(storage=storage, max_concurrent_checks=1, check_wait_s=0.0)
        async with auth.gate.slot():  # the only slot is taken
            with pytest.raises(AuthenticationBusy):
                await auth.authenticate(
                    ConnectRequest(
                        username="alice",
                        password=PASSWORD.encode(),
                        client_id="c",
                        listener="default",
                        remote_address="127.0.0.1:1",
                    )
                )
    assert auth.stats.busy_refusals == 1
    assert auth.stats.checks == 0
