#!/usr/bin/env python3
"""Benchmark: a 1:1 QoS 1 message stream alone, then while three addresses guess passwords.

Starts its own `mqim serve` on a free loopback port in a temporary data directory, creates two
users, and streams QoS 1 IM messages from one to the other with paho (at most `--window`
unacknowledged), counting what the receiver gets. Phase 1 runs the stream alone; phase 2 adds
one attacker process per source address (127.0.0.2, 127.0.0.3, 127.0.0.4 by default), each
sending wrong-password CONNECTs for the receiving user as fast as the server answers them.

Prints the stream's rate in each phase, the ratio (the target is >= 80%), the server's CPU
and the attackers' CONNACK codes. Bounded in time: two phases of `--seconds` plus set-up.

    .venv/bin/python scripts/bench-auth-attack.py --seconds 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

HOST = "127.0.0.1"
PASSWORD = "bench-pw-123456"
START_TIMEOUT_S = 30.0
# The per-user publish limits protect a deployment from one noisy account; this benchmark's
# sender is that account on purpose. The per-address CONNECT limit stays at its default: the
# attackers meet the server as configured.
CONFIG = """\
[limits]
publish_rate = 1000000.0
publish_burst = 1000000
max_violations = 1000000
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _mqtt_str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, user: str, password: str) -> bytes:
    body = _mqtt_str("MQTT") + bytes((4, 0xC2)) + struct.pack("!H", 30)
    body += _mqtt_str(client_id) + _mqtt_str(user) + _mqtt_str(password)
    assert len(body) < 128
    return bytes((0x10, len(body))) + body


def attacker(source: str, port: int, user: str, stop_at: float, out: Any) -> None:
    """Wrong-password CONNECTs from `source` until `stop_at`; puts a Counter of CONNACK codes."""
    codes: Counter[str] = Counter()
    n = 0
    while time.time() < stop_at:
        n += 1
        try:
            with socket.create_connection((HOST, port), timeout=5, source_address=(source, 0)) as sock:
                sock.sendall(connect_packet(f"atk-{os.getpid()}-{n}", user, f"guess-{n}"))
                head = sock.recv(4)
            codes[str(head[3]) if len(head) == 4 and head[0] == 0x20 else "none"] += 1
        except OSError:
            codes["error"] += 1
    out.put(dict(codes))


class Stream:
    """alice -> bob, QoS 1, at most `window` publishes unacknowledged; counts what bob receives."""

    def __init__(self, *, port: int, sender: str, receiver: str, window: int) -> None:
        self.received = 0
        self._lock = threading.Lock()
        self._window = threading.Semaphore(window)
        self._stop = threading.Event()
        self.receiver = self._client(port, receiver, f"{receiver}-rx", window)
        self.receiver.on_message = self._on_message
        self.sender = self._client(port, sender, f"{sender}-tx", window)
        self.sender.on_publish = lambda *_args: self._window.release()
        self._from = sender
        self._to = receiver
        self._thread = threading.Thread(target=self._pump, name="bench-pump", daemon=True)

    @staticmethod
    def _client(port: int, user: str, cid: str, window: int) -> paho.Client:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv311)
        client.username_pw_set(user, PASSWORD)
        client.max_inflight_messages_set(window)
        connected = threading.Event()
        client.on_connect = lambda *_args: connected.set()
        client.connect(HOST, port, keepalive=60)
        client.loop_start()
        if not connected.wait(10):
            raise SystemExit(f"{user} could not connect")
        return client

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic.endswith("/msg"):
            with self._lock:
                self.received += 1

    def _pump(self) -> None:
        n = 0
        while not self._stop.is_set():
            if not self._window.acquire(timeout=1.0):
                continue
            n += 1
            payload = json.dumps({"v": 1, "id": f"b-{n}", "to": self._to, "text": f"message {n}"})
            self.sender.publish(f"im/v1/up/{self._from}/msg", payload, qos=1)

    def start(self) -> None:
        self._thread.start()

    def count(self) -> int:
        with self._lock:
            return self.received

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for client in (self.sender, self.receiver):
            client.disconnect()
            client.loop_stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(stream: Stream, seconds: float, pid: int) -> tuple[float, float]:
    """The stream's rate (messages per second) and the server's CPU (%) over `seconds`."""
    count0, cpu0, t0 = stream.count(), cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    count1, cpu1, t1 = stream.count(), cpu_seconds(pid), time.monotonic()
    return (count1 - count0) / (t1 - t0), 100 * (cpu1 - cpu0) / (t1 - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--window", type=int, default=100, help="unacknowledged publishes")
    parser.add_argument("--attackers", default="127.0.0.2,127.0.0.3,127.0.0.4", help="source addresses")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"], help="the server's log level"
    )
    args = parser.parse_args()
    seconds = min(max(args.seconds, 1.0), 120.0)
    sources = [a.strip() for a in args.attackers.split(",") if a.strip()]

    with tempfile.TemporaryDirectory(prefix="mqim-bench-auth-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        config = Path(tmp) / "bench.toml"
        config.write_text(CONFIG + f'\n[log]\nlevel = "{args.log_level}"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("MQIM_")}
        mqim = [sys.executable, "-m", "mqim.cli"]
        for user in ("alice", "bob"):
            subprocess.run(
                [*mqim, "user", "add", user, "--password", PASSWORD, "--data-dir", str(data)],
                check=True, env=env, capture_output=True, timeout=60,
            )  # fmt: skip
        port = free_port()
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [*mqim, "serve", "--port", str(port), "--data-dir", str(data), "--config", str(config)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while "mqim listening" not in log_path.read_text(errors="replace"):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start:\n{log_path.read_text(errors='replace')[-2000:]}")
                time.sleep(0.1)
            stream = Stream(port=port, sender="alice", receiver="bob", window=args.window)
            try:
                stream.start()
                time.sleep(2.0)  # warm-up
                alone, cpu_alone = measure(stream, seconds, server.pid)
                results: multiprocessing.Queue[dict[str, int]] = multiprocessing.Queue()
                stop_at = time.time() + seconds + 1.0
                procs = [
                    multiprocessing.Process(
                        target=attacker, args=(src, port, "bob", stop_at, results), daemon=True
                    )
                    for src in sources
                ]
                for proc in procs:
                    proc.start()
                time.sleep(0.5)  # the attack is under way
                attacked, cpu_attacked = measure(stream, seconds, server.pid)
                codes: Counter[str] = Counter()
                for _ in procs:
                    with contextlib.suppress(Exception):
                        codes.update(results.get(timeout=15))
                for proc in procs:
                    proc.join(5)
            finally:
                stream.close()
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        lines = log_path.read_text(errors="replace").splitlines()

    attempts = sum(codes.values())
    print(f"stream alone:          {alone:8.0f} msg/s   (server CPU {cpu_alone:4.0f}%)")
    print(f"stream under attack:   {attacked:8.0f} msg/s   (server CPU {cpu_attacked:4.0f}%)")
    print(f"kept:                  {100 * attacked / alone if alone else 0:8.1f} %   (target >= 80 %)")
    print(
        f"attack: {len(sources)} addresses, {attempts} CONNECTs in {seconds:.0f} s "
        f"({attempts / seconds:.0f}/s); CONNACK codes {dict(sorted(codes.items()))}"
    )
    kinds = Counter(" ".join(line.split()[3:6]) for line in lines if len(line.split()) > 5)
    print(f"server log: {len(lines)} lines; most common: {kinds.most_common(3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
