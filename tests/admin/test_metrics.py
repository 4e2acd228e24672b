"""The admin listener through real sockets while real MQTT traffic flows (paho clients)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mqim.acl import parse_rule
from mqim.admin import AdminOptions
from mqim.broker import BrokerSettings, Listener
from mqim.server import EmbeddedServer
from mqim.storage import SqliteStorage
from tests.conftest import PASSWORD
from tests.support.mqtt import Paho


def http_get(url: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET, 4xx/5xx included (blocking: run in a thread)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


async def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of `/metrics`, by (name, sorted labels)."""
    status, content_type, body = await asyncio.to_thread(http_get, base + "metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
async def node(
    tmp_path: Path, uid: Callable[[str], str]
) -> AsyncIterator[tuple[EmbeddedServer, dict[str, str]]]:
    users = {name: uid(name) for name in ("alice", "bob", "ops")}
    data = tmp_path / "data"
    data.mkdir()
    async with SqliteStorage(path=data / "mqim.db") as storage:
        await storage.add_users(list(users.values()), password=PASSWORD)
    async with EmbeddedServer(
        data_dir=data,
        listeners=[Listener(name="default", port=0)],
        settings=BrokerSettings(connect_timeout_s=3.0),
        rules=[parse_rule(f"allow user:{users['ops']} subscribe,receive $SYS/#")],
        admin=AdminOptions(port=0),
        sys_interval_s=0.2,
    ) as server:
        yield server, users


def base_url(server: EmbeddedServer) -> str:
    assert server.observability is not None
    assert server.observability.admin is not None
    return server.observability.admin.url


async def test_counters_move_as_the_traffic_says(node: tuple[EmbeddedServer, dict[str, str]]) -> None:
    server, users = node
    base = base_url(server)
    before = await scrape(base)
    alice = Paho(port=server.port(), user=users["alice"], password=PASSWORD, client_id="alice-m")
    bob = Paho(port=server.port(), user=users["bob"], password=PASSWORD, client_id="bob-m")
    try:
        await alice.connect()
        await bob.connect()
        during = await scrape(base)
        assert value(during, "mqim_connections", listener="default", kind="user") == 2
        assert value(during, "mqim_sessions", state="live") >= 2
        for n in range(5):
            body = {"v": 1, "id": f"m-{n}", "to": users["bob"], "text": f"hi {n}"}
            await alice.publish(f"im/v1/up/{users['alice']}/msg", body, qos=1)  # PUBACK: stored
        for _ in range(5):
            await bob.receive_on("/msg")
        after = await scrape(base)
    finally:
        alice.close()
        bob.close()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("mqim_messages_received_total", **{"class": "up", "qos": "1"}) == 5
    # Each message reaches bob's inbox and, as an ack, alice's: u/ copies at QoS 1.
    assert delta("mqim_messages_sent_total", **{"class": "u", "qos": "1"}) >= 10
    assert delta("mqim_logic_requests_total") == 5
    assert delta("mqim_deliveries_total") >= 10
    assert delta("mqim_bytes_received_total") > 0
    assert delta("mqim_bytes_sent_total") > 0
    assert value(after, "mqim_uplink_durable_seconds_count") >= value(
        before, "mqim_uplink_durable_seconds_count"
    )
    assert value(after, "mqim_publishes_refused_total", reason="forbidden") == 0


async def test_refusals_and_auth_failures_are_counted(node: tuple[EmbeddedServer, dict[str, str]]) -> None:
    server, users = node
    base = base_url(server)
    intruder = Paho(port=server.port(), user=users["alice"], password="wrong", client_id="bad")
    try:
        await intruder.connect(expect_rc=4)
    finally:
        intruder.close()
    alice = Paho(port=server.port(), user=users["alice"], password=PASSWORD, client_id="alice-r")
    try:
        await alice.connect()
        await alice.publish(f"im/v1/up/{users['bob']}/msg", {"v": 1, "id": "x", "to": users["alice"]}, qos=0)
        await alice.receive_on("/error")
    finally:
        alice.close()
    samples = await scrape(base)
    assert value(samples, "mqim_auth_failures_total", method="password", reason="bad_credentials") == 1
    assert value(samples, "mqim_publishes_refused_total", reason="forbidden") == 1
    assert value(samples, "mqim_acl_denials_total", action="publish") == 1


async def test_health_readiness_and_status(node: tuple[EmbeddedServer, dict[str, str]]) -> None:
    server, _ = node
    base = base_url(server)
    status, _, body = await asyncio.to_thread(http_get, base + "healthz")
    assert (status, json.loads(body)) == (200, {"status": "alive"})
    status, _, body = await asyncio.to_thread(http_get, base + "readyz")
    doc = json.loads(body)
    assert status == 200, doc
    assert set(doc["checks"]) == {"listeners", "storage"}
    assert all(check["ok"] for check in doc["checks"].values())
    status, _, body = await asyncio.to_thread(http_get, base + "status")
    st: dict[str, Any] = json.loads(body)
    assert status == 200
    assert st["mode"] == "standalone"
    assert st["listeners"] == [{"name": "default", "kind": "tcp", "host": "127.0.0.1", "port": server.port()}]
    assert st["storage"]["kind"] == "sqlite"
    status, _, _ = await asyncio.to_thread(http_get, base + "nope")
    assert status == 404


async def test_sys_topics_for_a_permitted_user_only(node: tuple[EmbeddedServer, dict[str, str]]) -> None:
    server, users = node
    ops = Paho(port=server.port(), user=users["ops"], password=PASSWORD, client_id="ops-s")
    bob = Paho(port=server.port(), user=users["bob"], password=PASSWORD, client_id="bob-s")
    try:
        await ops.connect()
        await bob.connect()
        assert await bob.subscribe("$SYS/#", 0) == 0x80
        assert await ops.subscribe("$SYS/#", 0) == 0
        seen: dict[str, str] = {}
        for _ in range(500):  # the retained values at once, then one round per interval
            msg = await ops.receive()
            seen[msg.topic] = msg.payload.decode()
            if "$SYS/broker/version" in seen and seen.get("$SYS/broker/clients/connected") == "2":
                break
        else:
            raise AssertionError(f"clients/connected never said 2: {seen}")
        assert seen["$SYS/broker/version"].startswith("mqim version ")
        assert seen["$SYS/broker/uptime"].endswith(" seconds")
        assert int(seen["$SYS/broker/clients/total"]) >= 0
        for _ in range(200):
            msg = await ops.receive()
            if msg.topic == "$SYS/broker/load/messages/received/1min":
                float(msg.payload)
                break
        else:
            raise AssertionError("no load topic")
        await bob.nothing(0.5)
    finally:
        ops.close()
        bob.close()
