"""`OutboundBridge`: mqim connects to a remote broker and maps topics both ways (the async shell).

Local side: `out` rules are served by in-process consumers on the broker (`attach_consumer`),
`in` rules by `publish_local`. Remote side: one aiomqtt client with a fixed client id and
`clean_session=False`, so the remote keeps our subscriptions and queues what arrives while we are
away. Every connection attempt uses a fresh aiomqtt client (no state of a dead connection leaks
into the next one); the delay between attempts doubles from `reconnect_min_delay` up to
`reconnect_max_delay`.

QoS 1 end to end (QoS 2 rules are carried as QoS 1: at least once, the IM dedups by id):

* remote -> mqim: messages are acknowledged to the remote by hand (paho's manual ack) only after
  they were routed locally and the broker's durable writes for them were committed (`barrier`),
  so a crash before that makes the remote redeliver them;
* mqim -> remote ("PUBACK means durably accepted"): each message an `out` rule matches is put
  in the bridge's durable outbox (`mqim.bridge._outbox`, SQLite in
  `<data_dir>/bridge-<name>-outbox.db`). The broker hands the consumer a hold (`Receipt`) on the
  local publisher's PUBACK; it is settled only after the outbox transaction holding the message
  is committed (group commit on the outbox's own thread), so a publisher that got its PUBACK
  never loses the message, even to ``kill -9``. Only committed messages are sent, in order, up
  to `SEND_WINDOW` at a time; a message leaves the outbox (and its row is deleted) only once the
  remote acknowledged it. After a reconnect, or a restart of mqim, the unconfirmed ones are sent
  again in their order (at least once: the remote may get one twice).
* the outbox is bounded (`max_pending_out` messages, `max_pending_out_bytes`): when it is full a
  new message is refused by failing its hold, so its publisher gets no PUBACK and keeps it (it
  sends it again after reconnecting); nothing accepted is evicted. Refusals are counted
  (`refused_full`) and logged once per episode. A message nobody can resend (QoS 0, or published
  by the server itself: no hold) is then dropped and counted (`dropped_overflow`). If a commit
  fails, the holds of its messages fail the same way.

A clean stop gives the remote a moment to confirm what is pending; what it did not stays in the
outbox for the next start.

Loops are prevented as described in `mqim.bridge._loop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import aiomqtt

from mqim._ports import BrokerPort, Receipt
from mqim._util import cancel_and_wait, raise_if_cancelling
from mqim.bridge._config import BridgeConfig
from mqim.bridge._exceptions import BridgeConfigError, BridgeStorageError, BridgeUnavailable
from mqim.bridge._loop import EchoGuard
from mqim.bridge._outbox import Outbox
from mqim.bridge._remote import CONNECT_TIMEOUT_S, SEND_WINDOW, new_client, refused
from mqim.bridge._status import BridgeStats
from mqim.bridge._topics import (
    TopicRule,
    cover_filters,
    local_filters,
    map_in,
    map_out,
    may_echo,
    subscriptions,
)
from mqim.client import backoff_delay

log = logging.getLogger("mqim.bridge")

MAX_IN_BATCH: Final = 256
"""Inbound messages routed before one durability barrier and their acknowledgements."""

PUBLISH_TIMEOUT_S: Final = 10.0
"""How long one outbound publish waits for the remote's acknowledgement."""

DRAIN_TIMEOUT_S: Final = 5.0
"""How long a clean stop waits for pending outbound messages to be confirmed."""


Barrier = Callable[[], Awaitable[None]]
"""Waits until every message routed so far is durable (its queue writes are committed)."""


class OutboundBridge:
    """One outbound bridge. Use as an async context manager; it runs until the context exits.

    Args:
        config: The bridge definition.
        port: The local broker.
        outbox_path: The SQLite file of the durable outbox (`<data_dir>/bridge-<name>-outbox.db`,
            see `mqim.bridge._config.outbox_filename`); created if missing.
        barrier: Awaited before acknowledging inbound messages to the remote; None when the
            local broker has no durable state.

    Raises:
        BridgeStorageError: On entering, when the outbox cannot be opened.
        BridgeConfigError: On entering, when the CA file cannot be loaded.
    """

    def __init__(
        self, *, config: BridgeConfig, port: BrokerPort, outbox_path: Path, barrier: Barrier | None = None
    ) -> None:
        self.config = config
        self.name = config.name
        self.rules: tuple[TopicRule, ...] = config.rules
        self.stats = BridgeStats(since=time.time())
        self._port = port
        self._barrier = barrier
        self._remote = config.remote_url
        self._echo = EchoGuard(window_s=config.echo_window_s, max_entries=config.max_echo_entries)
        self.outbox = Outbox(
            path=outbox_path,
            max_messages=config.max_pending_out,
            max_bytes=config.max_pending_out_bytes,
            name=config.name,
            on_error=self._outbox_failed,
        )
        self._refusing = 0
        self._injecting = False
        self._last_local: tuple[str, bytes] | None = None
        self._multi_listener = False
        self._drained = asyncio.Event()
        self._detach: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._tls: ssl.SSLContext | None = None
        self._ever_connected = False

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if self._remote.tls:
            cafile = self.config.cafile
            try:
                self._tls = await asyncio.to_thread(
                    ssl.create_default_context, cafile=str(cafile) if cafile is not None else None
                )
            except (OSError, ssl.SSLError) as exc:
                raise BridgeConfigError(f"bridge {self.name}: cannot load CA file {cafile}: {exc}") from exc
        await self.outbox.open()
        self._update_pending()
        try:
            filters = cover_filters(local_filters(self.rules))
            self._multi_listener = len(filters) > 1
            for topic_filter in filters:
                self._detach.append(self._port.attach_consumer(topic_filter, self._on_local))
        except BaseException:
            for detach in self._detach:
                detach()
            self._detach.clear()
            await self.outbox.close()
            raise
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"mqim-bridge:{self.name}"
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for detach in self._detach:
            detach()
        self._detach.clear()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            if self.outbox.count and self._connected.is_set() and not task.done():
                # A clean stop: give the remote a moment to confirm what is pending.
                self._drained.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DRAIN_TIMEOUT_S):
                        await self._drained.wait()
            await cancel_and_wait(task)
        finally:
            # Commits what was accepted (settling its holds) and the last confirmations.
            await self.outbox.close()
            self._update_pending()
            if self.outbox.count:
                log.info(
                    "bridge %s stopped with %d unconfirmed outbound messages (kept in %s)",
                    self.name,
                    self.outbox.count,
                    self.outbox.path,
                )
            self._set_state("stopped")

    @property
    def connected(self) -> bool:
        """Whether the remote connection is up."""
        return self._connected.is_set()

    def _set_state(self, state: str) -> None:
        if self.stats.state != state:
            self.stats.state = state
            self.stats.since = time.time()

    # -- local side ----------------------------------------------------------------------------
    def _on_local(self, topic: str, payload: bytes, hold: Receipt | None) -> None:
        """Out-consumer: put a local message in the outbox (called inside the broker's routing).

        Exactly one of `hold.settle()` / `hold.fail()` follows: now for a message this bridge
        does not take, or from the outbox after the commit that holds it.
        """
        if self._injecting:
            # We are routing a message that came from this bridge's remote: never send it back.
            self.stats.dropped_loops += 1
            self._settle(hold)
            return
        if self._multi_listener:
            # Overlapping filters fire once each for one publish: the same objects, back to back.
            last = self._last_local
            if last is not None and last[0] == topic and last[1] is payload:
                self._settle(hold)  # the first call has it
                return
            self._last_local = (topic, payload)
        mapped = map_out(self.rules, topic)
        if mapped is None:
            self._settle(hold)
            return
        remote_topic, qos = mapped
        if self.outbox.offer(remote_topic, payload, min(qos, 1), hold):
            if self._refusing:
                log.info(
                    "bridge %s: outbox accepts again (%d messages refused while full)",
                    self.name,
                    self._refusing,
                )
                self._refusing = 0
        else:
            self._refuse(hold)
        self._update_pending()

    def _refuse(self, hold: Receipt | None) -> None:
        """The outbox is full (or closing): the publisher keeps the message; nothing is evicted."""
        if hold is not None:
            self.stats.refused_full += 1
            try:
                hold.fail()
            except Exception:
                log.exception("bridge %s: failing a hold failed", self.name)
        else:
            self.stats.dropped_overflow += 1  # QoS 0 or the server's own: nobody can resend it
        if not self._refusing:
            log.warning(
                "bridge %s: outbox full (%d messages, %d bytes; max_pending_out=%d, "
                "max_pending_out_bytes=%d): new messages are refused until the remote confirms more",
                self.name,
                self.outbox.count,
                self.outbox.size,
                self.config.max_pending_out,
                self.config.max_pending_out_bytes,
            )
        self._refusing += 1

    def _settle(self, hold: Receipt | None) -> None:
        if hold is not None:
            try:
                hold.settle()
            except Exception:
                log.exception("bridge %s: settling a hold failed", self.name)

    def _update_pending(self) -> None:
        self.stats.pending_out = self.outbox.count
        self.stats.pending_out_bytes = self.outbox.size

    def _outbox_failed(self, exc: BridgeStorageError) -> None:
        self.stats.error(str(exc))
        self._update_pending()

    def _bring_in(self, message: aiomqtt.Message) -> None:
        """Route one message from the remote into mqim (unless it is our own echo)."""
        topic = message.topic.value
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode() if payload is not None else b""
        payload = bytes(payload)
        if self._echo.is_echo(topic, payload, time.monotonic()):
            self.stats.dropped_loops += 1
            return
        mapped = map_in(self.rules, topic)
        if mapped is None:
            self.stats.error(f"message on {topic[:200]!r} matches no in rule")
            return
        local_topic, qos = mapped
        self._injecting = True
        try:
            self._port.publish_local(
                local_topic, payload, qos=min(qos, message.qos, 1), retain=message.retain
            )
        except Exception as exc:
            # A failure of one message must not stop the bridge; it is counted and logged.
            log.exception("bridge %s: routing %r failed", self.name, local_topic[:200])
            self.stats.error(f"routing {local_topic[:200]!r} failed: {exc}")
            return
        finally:
            self._injecting = False
        self.stats.messages_in += 1

    # -- remote side ---------------------------------------------------------------------------
    async def _supervise(self) -> None:
        """Connect, run, and reconnect with bounded exponential back-off; forever."""
        attempt = 0
        while True:
            raise_if_cancelling()
            self._set_state("connecting")
            client = new_client(self.config, tls=self._tls)
            try:
                async with client:
                    attempt = 0
                    await self._run_connection(client)
            except (aiomqtt.MqttError, BridgeUnavailable) as exc:
                raise_if_cancelling()
                self.stats.error(str(exc) or type(exc).__name__)
                log.warning("bridge %s: %s:%d: %s", self.name, self._remote.host, self._remote.port, exc)
            except Exception as exc:
                # Anything unexpected (TLS, socket, library errors) is counted and retried: one
                # bridge must never stop for good while the server runs.
                raise_if_cancelling()
                self.stats.error(f"{type(exc).__name__}: {exc}")
                log.exception("bridge %s failed; reconnecting", self.name)
            finally:
                self._connected.clear()
                self._client = None
            self._set_state("disconnected")
            attempt += 1
            delay = backoff_delay(
                attempt, base=self.config.reconnect_min_delay, cap=self.config.reconnect_max_delay
            )
            await asyncio.sleep(delay)

    async def _run_connection(self, client: aiomqtt.Client) -> None:
        subs = subscriptions(self.rules)
        for topic_filter, qos in subs.items():
            granted = await client.subscribe(topic_filter, qos=min(qos, 1), timeout=CONNECT_TIMEOUT_S)
            if refused(granted):
                raise BridgeUnavailable(f"the remote refused the subscription to {topic_filter!r}")
        if self._ever_connected:
            self.stats.reconnects += 1
        self._ever_connected = True
        self._client = client
        self._connected.set()
        self._set_state("connected")
        log.info("bridge %s connected to %s:%d", self.name, self._remote.host, self._remote.port)
        sender = asyncio.get_running_loop().create_task(
            self._send_loop(client), name=f"mqim-bridge-send:{self.name}"
        )
        try:
            await self._read_loop(client)
        finally:
            sender.cancel()
            try:
                await sender
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    async def _read_loop(self, client: aiomqtt.Client) -> None:
        messages = client.messages
        while True:
            batch = [await anext(messages)]
            while len(messages) and len(batch) < MAX_IN_BATCH:
                batch.append(await anext(messages))
            for message in batch:
                self._bring_in(message)
            if self._barrier is not None:
                await self._barrier()
            for message in batch:
                if message.qos > 0:
                    client._client.ack(message.mid, message.qos)

    async def _send_loop(self, client: aiomqtt.Client) -> None:
        outbox = self.outbox
        ready = outbox.ready
        while True:
            if not ready:
                await outbox.wait_ready()
                continue
            batch = [ready[i] for i in range(min(SEND_WINDOW, len(ready)))]
            now = time.monotonic()
            for item in batch:
                if may_echo(self.rules, item.topic):
                    self._echo.expect(item.topic, item.payload, now)
            results = await asyncio.gather(
                *(
                    client.publish(item.topic, item.payload, qos=item.qos, timeout=PUBLISH_TIMEOUT_S)
                    for item in batch
                ),
                return_exceptions=True,
            )
            raise_if_cancelling()
            # Confirmed in order: the prefix the remote acknowledged leaves the outbox; the rest
            # (after a failure) is sent again.
            through = None
            for item, result in zip(batch, results, strict=True):
                if result is not None:
                    break
                through = item.seq
            if through is not None:
                self.stats.messages_out += outbox.confirm_through(through)
            self._update_pending()
            if not outbox.count:
                self._drained.set()
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                self.stats.error(f"publish failed: {failures[0]!r}")
                await asyncio.sleep(self.config.reconnect_min_delay)
