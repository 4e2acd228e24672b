"""A running three-node cluster accepts what `mqim` admin commands create in its MongoDB.

The commands run as processes with the README's environment (`MQIM_MONGO_URL`,
`MQIM_REDIS_URL`), the service account they create serves the cluster as `mqim logic --shared`,
and a group created while the nodes run reaches them through the Redis membership stamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from mqim.auth import AuthOptions
from mqim.broker import BrokerSettings, Listener
from mqim.cluster import ClusterSettings
from mqim.protocol import group_filter
from mqim.server import ClusterServer
from tests.cluster.conftest import Cluster
from tests.cluster.test_routing import _wait_routes
from tests.cluster.test_shared import SHARED_UP, worker_process
from tests.conftest import PASSWORD, free_port
from tests.support.mqtt import Paho

BAD_CREDENTIALS = 4
NODES = ("n1", "n2", "n3")


async def mqim(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run the `mqim` command line as its own process (the nodes keep running meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mqim.cli", *args,
        cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def nodes(cluster: Cluster, keys: Path) -> AsyncIterator[dict[str, ClusterServer]]:
    """Three nodes without embedded logic (as in the README), sharing one token key file."""
    async with contextlib.AsyncExitStack() as stack:
        for node_id in NODES:
            server = ClusterServer(
                node_id=node_id,
                redis_url=cluster.redis.url,
                mongo_url=cluster.mongo.url,
                database=cluster.database,
                data_dir=cluster.tmp_path / node_id,
                listeners=[Listener(name="default", port=0)],
                settings=BrokerSettings(connect_timeout_s=3.0),
                # No failover here: a generous TTL keeps a loaded machine from fencing a node.
                cluster=ClusterSettings(node_id=node_id, heartbeat_s=0.5, node_ttl_s=10.0),
                embedded_logic=False,
                auth=AuthOptions(token_keys_file=keys),
            )
            cluster.nodes[node_id] = await stack.enter_async_context(server)
        try:
            yield cluster.nodes
        finally:
            cluster.nodes.clear()


async def _granted_eventually(client: Paho, topic: str) -> int:
    code = 0x80
    for _ in range(100):  # the nodes re-read stored rules every 2 s
        code = await client.subscribe(topic)
        if code != 0x80:
            break
        await asyncio.sleep(0.1)
    return code


async def test_accounts_groups_rules_and_tokens_made_with_the_cli_work_on_every_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    keys = tmp_path / "token-keys.json"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MQIM_")},
        "MQIM_REDIS_URL": cluster.redis.url,
        "MQIM_MONGO_URL": cluster.mongo.url,
        # One key file for the nodes and the token commands (the README's advice).
        "MQIM_AUTH__TOKEN_KEYS_FILE": str(keys),
    }
    t = cluster.token
    alice, bob, service, plant, team = f"alice-{t}", f"bob-{t}", f"logic-{t}", f"plant-{t}", f"team-{t}"
    db = ["--database", cluster.database]

    async def cli(*args: str) -> str:
        code, out, err = await mqim(*args, *db, "--data-dir", str(tmp_path / "n1"), env=env, cwd=tmp_path)
        assert code == 0, (args, out, err)
        return out

    async with nodes(cluster, keys) as running:
        assert await cli("user", "add", alice, "-p", PASSWORD) == f"added user {alice!r}\n"
        await cli("user", "add", bob, "-p", PASSWORD)
        assert await cli("user", "add", service, "--kind", "service", "-p", PASSWORD) == (
            f"added service {service!r}\n"
        )
        await cli("bridge", "account", "add", plant, "-p", PASSWORD)
        token = (await cli("token", "issue", bob)).strip()
        assert not (tmp_path / "n1" / "mqim.db").exists()

        # Every node accepts the new accounts (and refuses a wrong password).
        for node_id, node in running.items():
            (await cluster.connected(node_id, alice)).close()
            device = await cluster.connected(node_id, plant)
            assert await device.subscribe(f"bridge/{plant}/#") == 1
            device.close()
            for password, code in (("nope", BAD_CREDENTIALS), (token, 0)):
                client = Paho(port=node.port(), user=bob, password=password, client_id=f"{bob}-t-{node_id}")
                try:
                    await client.connect(expect_rc=code)
                finally:
                    client.close()

        # A group created while bob is connected: his node learns it from the Redis stamp.
        bob_c = await cluster.connected("n3", bob)
        alice_c = await cluster.connected("n1", alice)
        await cli("group", "create", team, "--owner", alice, bob)
        await _wait_routes(cluster, group_filter(team), ["n3"], on="n1")

        # A stored ACL rule reaches the nodes too.
        await cli("acl", "add", f"allow user:{alice} publish,subscribe,receive sensors/%u/#")
        assert await _granted_eventually(alice_c, f"sensors/{alice}/#") == 1

        # The service account serves the cluster as `mqim logic --shared` (MongoDB from the env).
        argv = [
            # `env` execs the worker with the README's variables (its pid is the worker's).
            "env", *(f"{k}={v}" for k, v in env.items() if k.startswith("MQIM_")),
            sys.executable, "-m", "mqim.cli", "logic", "--shared", *db,
            "--broker", f"mqtt://{service}:{PASSWORD}@127.0.0.1:{running['n1'].port()}",
            "--client-id", f"{service}-1", "--data-dir", str(tmp_path / "worker"),
        ]  # fmt: skip
        with worker_process(argv, tmp_path / "worker.log") as proc:
            # The worker is on alice's node: a request reaching a node without a worker is
            # refused on main today (tests/cluster/test_shared.py fails the same way).
            await _wait_routes(cluster, SHARED_UP, ["n1"], on="n3")
            await alice_c.publish(
                f"im/v1/up/{alice}/msg", {"v": 1, "id": "g-1", "group": team, "text": "hi all"}
            )
            assert (await alice_c.receive_on("/ack", timeout=20)).json()["seq"] == 1
            assert (await bob_c.receive_on(f"{team}/msg", timeout=20)).json()["text"] == "hi all"
        assert proc.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]


async def test_a_node_and_cluster_status_from_the_cluster_section_alone(
    cluster: Cluster, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "n9.toml"
    config.write_text(
        f'[server]\nport = {port}\ndata_dir = "{tmp_path / "n9"}"\n'
        f'[cluster]\nnode_id = "n9"\nredis_url = "{cluster.redis.url}"\nmongo_url = "{cluster.mongo.url}"\n'
        f'database = "{cluster.database}"\nheartbeat_s = 0.5\nnode_ttl_s = 10\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQIM_")}
    code, out, err = await mqim(
        "user", "add", "carol", "-p", PASSWORD, "-c", str(config), env=env, cwd=tmp_path
    )
    assert (code, out) == (0, "added user 'carol'\n"), err
    argv = [sys.executable, "-m", "mqim.cli", "broker", "-c", str(config)]
    with worker_process(argv, tmp_path / "n9.log") as proc:
        for _ in range(300):
            code, out, err = await mqim(
                "cluster", "status", "--json", "-c", str(config), env=env, cwd=tmp_path
            )
            if code == 0 and any(
                node["node_id"] == "n9" and node["alive"] for node in json.loads(out)["nodes"]
            ):
                break
            assert proc.poll() is None, (tmp_path / "n9.log").read_text()[-3000:]
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"n9 never came up: {out} {err}")
        client = Paho(port=port, user="carol", password=PASSWORD, client_id="carol-n9")
        try:
            await client.connect()
        finally:
            client.close()
    assert proc.returncode == 0, (tmp_path / "n9.log").read_text()[-3000:]
