"""Delivery latency with and without webhooks to a slow receiver (issue 14's "never delaying delivery").

Runs an embedded server in-process; alice sends pairs of messages: one to carol (offline, so it
triggers a `message.offline` hook to a receiver that takes `--delay` seconds per POST) and one
to bob (online), whose delivery latency is measured. Prints p50/p99/max for both runs.

    .venv/bin/python scripts/bench_hooks.py --pairs 1000 --rate 200 --delay 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from mqim.broker import BrokerSettings, Listener
from mqim.hooks import HookEndpoint, HooksConfig
from mqim.server import EmbeddedServer


def slow_receiver(delay: float) -> tuple[int, threading.Event]:
    """An HTTP receiver on its own thread and loop that answers 200 after `delay` seconds."""
    ready, port_box, stop = threading.Event(), [0], threading.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                await asyncio.sleep(delay)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_box[0] = server.sockets[0].getsockname()[1]
        ready.set()
        await asyncio.to_thread(stop.wait)
        server.close()

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
    ready.wait(10)
    return port_box[0], stop


def client(port: int, user: str, on_message: Any = None) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-bench", clean_session=False)
    c.username_pw_set(user, "pw-123456")
    if on_message is not None:
        c.on_message = on_message
    connected = threading.Event()
    c.on_connect = lambda *_: connected.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert connected.wait(10)
    return c


async def run(*, hooks: HooksConfig | None, pairs: int, rate: float) -> tuple[list[float], dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = BrokerSettings(publish_rate=10_000, publish_burst=10_000)
        async with EmbeddedServer(
            data_dir=Path(tmp), listeners=[Listener(name="default", port=0)], settings=settings, hooks=hooks
        ) as server:
            for user in ("alice", "bob", "carol"):
                await server.storage.add_user(user, password="pw-123456")
            latencies: list[float] = []
            done = threading.Event()

            def on_bob(_c: Any, _u: Any, msg: Any) -> None:
                if msg.topic.endswith("/msg"):
                    body = json.loads(msg.payload)
                    latencies.append((time.monotonic() - float(body["text"])) * 1000)
                    if len(latencies) >= pairs:
                        done.set()

            bob = await asyncio.to_thread(client, server.port(), "bob", on_bob)
            alice = await asyncio.to_thread(client, server.port(), "alice")
            await asyncio.sleep(0.5)
            for n in range(pairs):
                alice.publish(
                    "im/v1/up/alice/msg", json.dumps({"v": 1, "id": f"c{n}", "to": "carol", "text": "x"}), 1
                )
                body = {"v": 1, "id": f"b{n}", "to": "bob", "text": repr(time.monotonic())}
                alice.publish("im/v1/up/alice/msg", json.dumps(body), 1)
                await asyncio.sleep(1 / rate)
            await asyncio.to_thread(done.wait, 60)
            stats = server.hooks.stats() if server.hooks is not None else {}
            for c in (alice, bob):
                c.disconnect()
                c.loop_stop()
            return latencies, stats


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return (
        f"n={len(values)} p50={statistics.median(ordered):.2f} ms p99={p99:.2f} ms max={ordered[-1]:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0, help="pairs per second")
    parser.add_argument("--delay", type=float, default=0.2, help="seconds the receiver takes per POST")
    args = parser.parse_args()
    port, stop = slow_receiver(args.delay)
    hooks = HooksConfig(
        endpoints=(HookEndpoint(name="slow", url=f"http://127.0.0.1:{port}/", secret="bench-secret"),)
    )
    without, _ = asyncio.run(run(hooks=None, pairs=args.pairs, rate=args.rate))
    with_hooks, stats = asyncio.run(run(hooks=hooks, pairs=args.pairs, rate=args.rate))
    stop.set()
    print(f"without hooks:            {summary(without)}")
    print(f"with a slow hook ({args.delay}s): {summary(with_hooks)}")
    endpoint = stats.get("endpoints", {}).get("slow", {})
    events, delivered = stats.get("events"), endpoint.get("delivered")
    print(f"hook events: {events}, delivered {delivered}, left in the outbox {stats.get('outbox_rows')}")


if __name__ == "__main__":
    main()
