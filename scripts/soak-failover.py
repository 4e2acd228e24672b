#!/usr/bin/env python3
"""Soak test of cluster failover (not run in CI): kill -9 of the recipient's node, N times.

Each run starts three `mqim broker` node processes on one Redis and one SecantusDB, streams QoS 1
messages from a paho publisher (alice, on n1) to a paho persistent subscriber (bob, on n3) at a
fixed rate, kills n3 with SIGKILL, reconnects bob to n1 or n2 (alternating: the adopter may or may
not be the node it returns to), streams on, and counts:

* acked lost: PUBACKed messages bob never received on any connection;
* duplicates: messages received more than once as new deliveries (DUP 0) on one connection.

    .venv/bin/python scripts/soak-failover.py --runs 50 --rate 40

Bounded: every wait has a timeout, and the whole soak stops after --max-minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import redis
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mqim.storage import MongoStorage  # noqa: E402
from tests.support.servers import mongo_server, redis_server  # noqa: E402

PASSWORD = "soak-pw-123456"
HEARTBEAT_S = 0.25
NODE_TTL_S = 1.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Node:
    def __init__(self, node_id: str, *, redis_url: str, mongo_url: str, database: str, work: Path) -> None:
        self.node_id = node_id
        self.port = free_port()
        argv = [
            sys.executable, "-m", "mqim.cli", "broker",
            "--node-id", node_id, "--redis", redis_url, "--mongo", mongo_url,
            "--database", database, "--port", str(self.port), "--data-dir", str(work / node_id),
            "--heartbeat", str(HEARTBEAT_S), "--node-ttl", str(NODE_TTL_S),
        ]  # fmt: skip
        self.log = work / f"{node_id}.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, cwd=work, stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.node_id} exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.node_id} did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)


class Subscriber:
    """bob: one paho client per connection; what each connection received."""

    def __init__(self, user: str, client_id: str) -> None:
        self.user, self.client_id = user, client_id
        self.connections: list[list[tuple[str, bool]]] = []
        self._client: paho.Client | None = None
        self._lock = threading.Lock()

    def connect(self, port: int, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            received: list[tuple[str, bool]] = []
            done = threading.Event()
            result: list[int] = []
            client = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                clean_session=False,
                protocol=paho.MQTTv311,
            )
            client.username_pw_set(self.user, PASSWORD)

            def on_connect(
                c: Any,
                u: Any,
                flags: Any,
                rc: Any,
                props: Any,
                result: list[int] = result,
                done: threading.Event = done,
            ) -> None:
                result.append(int(rc.value if hasattr(rc, "value") else rc))
                done.set()

            def on_message(c: Any, u: Any, msg: Any, received: list[tuple[str, bool]] = received) -> None:
                if msg.topic.endswith("/msg"):
                    with contextlib.suppress(ValueError, KeyError):
                        received.append((json.loads(msg.payload)["text"], bool(msg.dup)))

            client.on_connect = on_connect
            client.on_message = on_message
            try:
                client.connect("127.0.0.1", port, keepalive=30)
            except OSError:
                time.sleep(0.2)
                continue
            client.loop_start()
            if done.wait(15) and result and result[0] == 0:
                self.connections.append(received)
                self._client = client
                return True
            client.loop_stop()
            with contextlib.suppress(Exception):
                client.disconnect()
            time.sleep(0.2)
        return False

    def drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            sock = client.socket()
            client.loop_stop()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()


class Publisher(threading.Thread):
    """alice: QoS 1 at a fixed rate; a message counts as sent once PUBACKed."""

    def __init__(self, *, port: int, user: str, to: str, rate: float, tag: str) -> None:
        super().__init__(name="soak-publisher", daemon=True)
        self.user, self.to, self.rate, self.tag = user, to, rate, tag
        self.acked: list[str] = []
        self.failed = 0
        self.stop_flag = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{user}-pub-{tag}", protocol=paho.MQTTv311
        )
        self.client.username_pw_set(user, PASSWORD)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def run(self) -> None:
        n = 0
        period = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stop_flag.is_set():
            text = f"{self.tag}-{n}"
            body = {"v": 1, "id": f"id-{text}", "to": self.to, "text": text}
            info = self.client.publish(f"im/v1/up/{self.user}/msg", json.dumps(body), qos=1)
            with contextlib.suppress(Exception):
                info.wait_for_publish(10)
            if info.is_published():
                self.acked.append(text)
            else:
                self.failed += 1
            n += 1
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))

    def finish(self) -> None:
        self.stop_flag.set()
        self.join(15)
        self.client.disconnect()
        self.client.loop_stop()


def one_run(
    index: int, *, rate: float, redis_url: str, mongo_url: str, database: str, users: tuple[str, str]
) -> dict[str, Any]:
    alice, bob = users
    tag = f"r{index}-{uuid.uuid4().hex[:4]}"
    with tempfile.TemporaryDirectory(prefix="mqim-soak-") as tmp:
        work = Path(tmp)
        nodes = {
            n: Node(n, redis_url=redis_url, mongo_url=mongo_url, database=database, work=work)
            for n in ("n1", "n2", "n3")
        }
        try:
            for node in nodes.values():
                node.wait_ready()
            bob_sub = Subscriber(bob, f"{bob}-phone-{tag}")
            if not bob_sub.connect(nodes["n3"].port):
                raise RuntimeError("bob could not connect to n3")
            time.sleep(1.0)  # n3's routes reach n1
            pub = Publisher(port=nodes["n1"].port, user=alice, to=bob, rate=rate, tag=tag)
            pub.start()
            time.sleep(1.5)
            nodes["n3"].stop(signal.SIGKILL)
            bob_sub.drop()
            back = "n1" if index % 2 == 0 else "n2"
            time.sleep(0.3)
            reconnected = bob_sub.connect(nodes[back].port, timeout=30)
            time.sleep(4.0)
            pub.finish()
            acked = set(pub.acked)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                got = {t for conn in bob_sub.connections for t, _ in conn}
                if acked <= got:
                    break
                time.sleep(0.2)
            time.sleep(0.5)
            bob_sub.drop()
            got = {t for conn in bob_sub.connections for t, _ in conn}
            dups = 0
            for conn in bob_sub.connections:
                counts = collections.Counter(t for t, dup in conn if not dup)
                dups += sum(c - 1 for c in counts.values() if c > 1)
            lost = sorted(acked - got)
            adopted = [n for n in ("n1", "n2") if "adopted:" in nodes[n].log.read_text(errors="replace")]
            return {
                "run": index,
                "back_to": back,
                "adopter": ",".join(adopted) or "?",
                "reconnected": reconnected,
                "acked": len(acked),
                "lost": len(lost),
                "lost_ids": lost[:10],
                "dups": dups,
                "publish_failed": pub.failed,
            }
        finally:
            for node in nodes.values():
                node.stop()


async def make_users(mongo_url: str, database: str) -> tuple[str, str]:
    storage = MongoStorage(url=mongo_url, database=database)
    await storage.open()
    try:
        alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
        for user in (alice, bob):
            await storage.add_user(user, password=PASSWORD)
        return alice, bob
    finally:
        await storage.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--rate", type=float, default=40.0, help="messages per second")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="stop starting runs after this")
    args = parser.parse_args()
    started = time.monotonic()
    totals = collections.Counter[str]()
    with (
        redis_server(data_dir=Path(tempfile.mkdtemp(prefix="mqim-soak-redis-"))) as rds,
        mongo_server() as mongo,
    ):
        database = f"soak{uuid.uuid4().hex[:8]}"
        users = asyncio.run(make_users(mongo.url, database))
        admin = redis.Redis.from_url(rds.url)
        for index in range(args.runs):
            if time.monotonic() - started > args.max_minutes * 60:
                print(f"time budget reached after {index} runs", flush=True)
                break
            try:
                result = one_run(
                    index,
                    rate=args.rate,
                    redis_url=rds.url,
                    mongo_url=mongo.url,
                    database=database,
                    users=users,
                )
            except RuntimeError as exc:
                print(f"run {index}: setup failed: {exc}", flush=True)
                totals["setup_failed"] += 1
                admin.flushall()
                continue
            admin.flushall()  # the next run starts from an empty cluster (accounts are in MongoDB)
            totals["runs"] += 1
            totals["acked"] += result["acked"]
            totals["lost"] += result["lost"]
            totals["dups"] += result["dups"]
            totals["runs_with_loss"] += bool(result["lost"])
            totals["runs_with_dups"] += bool(result["dups"])
            totals["not_reconnected"] += not result["reconnected"]
            print(json.dumps(result), flush=True)
    print(
        f"TOTAL runs={totals['runs']} acked={totals['acked']} acked_lost={totals['lost']} "
        f"same_connection_duplicates={totals['dups']} runs_with_loss={totals['runs_with_loss']} "
        f"runs_with_dups={totals['runs_with_dups']} not_reconnected={totals['not_reconnected']} "
        f"setup_failed={totals['setup_failed']} minutes={(time.monotonic() - started) / 60:.1f}",
        flush=True,
    )
    return 0 if totals["lost"] == 0 and totals["dups"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
