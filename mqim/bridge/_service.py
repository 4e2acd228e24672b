"""`BridgeService`: everything in `<data_dir>/bridges.json`, run inside the embedded server.

It starts one `OutboundBridge` per configured bridge (each with its durable outbox,
`<data_dir>/bridge-<name>-outbox.db`), attaches the IM mapping rules and command
routes to the local broker, and writes `<data_dir>/bridges-status.json` (state and counters of
every bridge, mapping and route, plus the inbound bridges' `$SYS` notices) about once a second,
which `mqim bridge list` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, Self

from mqim._ports import BrokerPort
from mqim.bridge._config import (
    BRIDGES_FILENAME,
    STATUS_FILENAME,
    BridgesFile,
    CommandRoute,
    ImMapping,
    load_bridges,
    outbox_filename,
)
from mqim.bridge._im import command_for, uplink_for
from mqim.bridge._outbound import Barrier, OutboundBridge
from mqim.bridge._status import BridgeStats, write_status
from mqim.protocol import GroupKind, InboxKind, group_topic, inbox_topic

log = logging.getLogger("mqim.bridge")

STATUS_INTERVAL_S: Final = 1.0
"""How often the status file is refreshed (when something changed)."""


class _AckWaiter:
    def __init__(self, committer: CommitterLike, tag: int, done: asyncio.Future[None]) -> None:
        self._committer = committer
        self.tag = tag
        self._done = done

    def release_acks(self, committed: int) -> None:
        if committed >= self.tag:
            if not self._done.done():
                self._done.set_result(None)
        else:
            self._committer.wait(self)


class CommitterLike(Protocol):
    """The broker's commit scheduler (`mqim.broker._hub.Committer`), structurally."""

    @property
    def durable(self) -> bool:
        """Whether there is a durable store to wait for."""
        ...

    def wait(self, waiter: Any) -> int:
        """Register `waiter.release_acks(committed)` for the next commit; returns its generation."""
        ...

    def forget(self, waiter: Any) -> None:
        """Unregister a waiter."""
        ...


def committer_barrier(committer: CommitterLike) -> Barrier:
    """A barrier that returns once the broker committed every durable write queued before it."""

    async def barrier() -> None:
        if not committer.durable:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _AckWaiter(committer, 0, done)
        waiter.tag = committer.wait(waiter)
        try:
            await done
        finally:
            committer.forget(waiter)

    return barrier


class BridgeService:
    """Runs the bridges, IM mappings and command routes of one data directory.

    Args:
        data_dir: Holds `bridges.json` (read at start), `bridges-status.json` (written) and
            each outbound bridge's outbox, `bridge-<name>-outbox.db`.
        port: The local broker.
        barrier: Durability barrier for inbound messages (see `committer_barrier`).
        inbound_status: Returns the inbound bridges' notices (`MqimBroker.bridge_status`).
        config: Use this instead of reading `bridges.json` (tests, embedding).
        metrics: A counter map to mirror the counters into (`bridge_{kind}_{name}_{counter}`),
            e.g. the broker's `hub.counters.extra`, exported with the other broker metrics.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        port: BrokerPort,
        barrier: Barrier | None = None,
        inbound_status: Callable[[], Mapping[str, Any]] | None = None,
        config: BridgesFile | None = None,
        metrics: dict[str, int] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.config = config
        self.bridges: dict[str, OutboundBridge] = {}
        self.mapping_stats: dict[str, BridgeStats] = {}
        self.command_stats: dict[str, BridgeStats] = {}
        self._port = port
        self._barrier = barrier
        self._inbound_status = inbound_status
        self._stack = contextlib.AsyncExitStack()
        self._writer: asyncio.Task[None] | None = None
        self._commanding = False
        self._last_written: dict[str, Any] | None = None
        self._metrics = metrics

    @property
    def status_path(self) -> Path:
        """Where the status file is written."""
        return self.data_dir / STATUS_FILENAME

    async def __aenter__(self) -> Self:
        if self.config is None:
            self.config = await asyncio.to_thread(load_bridges, self.data_dir / BRIDGES_FILENAME)
        config = self.config
        try:
            for mapping in config.mappings:
                self._attach_mapping(mapping)
            for route in config.commands:
                self._attach_command(route)
            for bridge_config in config.bridges:
                bridge = OutboundBridge(
                    config=bridge_config,
                    port=self._port,
                    outbox_path=self.data_dir / outbox_filename(bridge_config.name),
                    barrier=self._barrier,
                )
                await self._stack.enter_async_context(bridge)
                self.bridges[bridge.name] = bridge
            if config.bridges or config.mappings or config.commands:
                log.info(
                    "bridges: %d outbound, %d IM mappings, %d command routes",
                    len(config.bridges),
                    len(config.mappings),
                    len(config.commands),
                )
            self._writer = asyncio.get_running_loop().create_task(
                self._write_forever(), name="mqim-bridge-status"
            )
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        writer, self._writer = self._writer, None
        try:
            await self._stack.aclose()
        finally:
            if writer is not None:
                writer.cancel()
                try:
                    await writer
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise
            await self._write_once()

    # -- IM mappings and command routes ---------------------------------------------------------
    def _attach_mapping(self, mapping: ImMapping) -> None:
        stats = self.mapping_stats[mapping.name] = BridgeStats(state="active", since=time.time())

        def on_device_message(topic: str, payload: bytes) -> None:
            if self._commanding:
                stats.dropped_loops += 1  # a command we are sending out, not device traffic
                return
            try:
                up_topic, body = uplink_for(mapping, topic, payload)
                self._port.publish_local(up_topic, body, qos=1)
            except Exception as exc:
                # One bad message must not break the broker's routing call that invoked us.
                log.exception("mapping %s: %r failed", mapping.name, topic[:200])
                stats.error(f"{topic[:200]!r}: {exc}")
                return
            stats.messages_in += 1

        self._stack.callback(self._port.attach_listener(mapping.source, on_device_message))

    def _attach_command(self, route: CommandRoute) -> None:
        stats = self.command_stats[route.name] = BridgeStats(state="active", since=time.time())
        if route.group is not None:
            source = group_topic(route.group, GroupKind.MSG)
        else:
            assert route.user is not None
            source = inbox_topic(route.user, InboxKind.MSG)

        def on_conversation_message(topic: str, payload: bytes) -> None:
            command = command_for(route, payload)
            if command is None:
                return
            device_topic, body = command
            self._commanding = True
            try:
                self._port.publish_local(device_topic, body, qos=1)
            except Exception as exc:
                log.exception("command route %s: %r failed", route.name, device_topic[:200])
                stats.error(f"{device_topic[:200]!r}: {exc}")
                return
            finally:
                self._commanding = False
            stats.messages_out += 1

        self._stack.callback(self._port.attach_listener(source, on_conversation_message))

    # -- status ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """State and counters of everything this service runs, plus the inbound bridges."""
        return {
            "pid": os.getpid(),
            "outbound": {name: bridge.stats.as_dict() for name, bridge in self.bridges.items()},
            "mappings": {name: stats.as_dict() for name, stats in self.mapping_stats.items()},
            "commands": {name: stats.as_dict() for name, stats in self.command_stats.items()},
            "inbound": dict(self._inbound_status()) if self._inbound_status is not None else {},
        }

    def _mirror_metrics(self, status: dict[str, Any]) -> None:
        metrics = self._metrics
        if metrics is None:
            return
        for kind in ("outbound", "mappings", "commands"):
            for name, stats in status[kind].items():
                for key, value in stats.items():
                    if isinstance(value, int) and not isinstance(value, bool):
                        metrics[f"bridge_{kind}_{name}_{key}"] = value
                if kind == "outbound":
                    metrics[f"bridge_outbound_{name}_connected"] = int(stats["state"] == "connected")

    async def _write_once(self) -> None:
        status = self.status()
        self._mirror_metrics(status)
        if status == self._last_written:
            return
        self._last_written = status
        try:
            await asyncio.to_thread(write_status, self.status_path, {**status, "ts": time.time()})
        except OSError as exc:
            log.warning("cannot write %s: %s", self.status_path, exc)

    async def _write_forever(self) -> None:
        while True:
            await self._write_once()
            await asyncio.sleep(STATUS_INTERVAL_S)
