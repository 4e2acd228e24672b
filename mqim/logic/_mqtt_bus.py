"""`MqttBus`: the logic service as an MQTT 3.1.1 client of a broker, for `mqim logic`.

Speaks MQTT through `MqttLink` (`mqim.mqtt`'s codec on an asyncio protocol) rather than a
general client library: a worker handles four packets per message, and paho's per-packet cost
capped a worker at a fraction of the embedded server's throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Callable, Sequence

from mqim import mqtt
from mqim._util import worth_logging
from mqim.logic._bus import Bus, Inbound, received_stamp
from mqim.logic._exceptions import BusClosed, BusError, BusUnavailable
from mqim.logic._mqtt_link import LinkClosed, MqttLink
from mqim.protocol import UP_FILTER

_log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 10.0


class MqttBus(Bus):
    """A `Bus` over an MQTT connection, reconnecting with bounded back-off when it drops.

    `start()` makes the first connection and fails with `BusUnavailable` if it cannot. Then an
    owned task keeps the connection: when it drops it reconnects with exponential back-off (from
    `reconnect_min_delay` to `reconnect_max_delay` seconds, each attempt logged) and subscribes
    again. With `clean_session=False` (the default) the broker keeps the service's subscription
    and what arrives while it is away; each worker needs its own `client_id`.

    Requests are acknowledged to the broker by hand, when the service settles them after its
    commit, not when they arrive: the broker keeps an unacknowledged request in the worker's
    session (redelivered after a reconnect, or handed to another worker of a shared subscription
    when this one goes away) and holds its sender's PUBACK until then. The broker's in-flight
    window for the worker bounds what is outstanding; should more than `max_queued` wait here,
    the newest is counted in `overflowed` and handed to `on_overflow(topic, payload)` (it stays
    unacknowledged at the broker, which sends it again after a reconnect).

    `publish()` waits up to `publish_timeout` seconds for a connection and for the broker's
    PUBACK (QoS 1), else raises `BusUnavailable`. Publishes still unacknowledged when the
    connection drops are sent again (DUP, same packet id) after the reconnect (MQTT-4.4.0-1).

    Args:
        host: Broker host name or address.
        port: Broker port.
        username: MQTT user name of the service account.
        password: Its password.
        client_id: MQTT client id; unique per worker.
        topic_filter: The uplink filter to subscribe to.
        clean_session: MQTT clean-session flag; False keeps the session across reconnects.
        tls_context: TLS settings, or None for plain TCP.
        keepalive: MQTT keepalive, in seconds.
        max_queued: Most received requests waiting for `receive_batch`.
        on_overflow: Called with each request refused because the queue is full. Also
            settable later through the `on_overflow` attribute.
        reconnect_min_delay: First back-off delay, in seconds.
        reconnect_max_delay: Longest back-off delay, in seconds.
        publish_timeout: How long a publish may wait for a connection and for its PUBACK.
    """

    # Publishes are written in call order and their PUBACK waits overlap.
    pipelined = True

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        client_id: str = "mqim-logic",
        topic_filter: str = UP_FILTER,
        clean_session: bool = False,
        tls_context: ssl.SSLContext | None = None,
        keepalive: int = 30,
        max_queued: int = 10_000,
        on_overflow: Callable[[str, bytes], None] | None = None,
        reconnect_min_delay: float = 0.5,
        reconnect_max_delay: float = 30.0,
        publish_timeout: float = 10.0,
    ) -> None:
        if max_queued <= 0:
            raise ValueError(f"max_queued must be positive, got {max_queued}")
        if not 0 < reconnect_min_delay <= reconnect_max_delay:
            raise ValueError("need 0 < reconnect_min_delay <= reconnect_max_delay")
        self._host = host
        self._port = port
        self._username = username
        self._password = password
        self._client_id = client_id
        self._topic_filter = topic_filter
        self._clean_session = clean_session
        self._tls_context = tls_context
        self._keepalive = keepalive
        self._max_queued = max_queued
        self._min_delay = reconnect_min_delay
        self._max_delay = reconnect_max_delay
        self._publish_timeout = publish_timeout
        self.on_overflow = on_overflow
        self.overflowed = 0
        self.reconnects = 0
        self.acked = 0
        self._queue: deque[Inbound] = deque()
        self._ready = asyncio.Event()
        self._link: MqttLink | None = None
        self._connection = 0  # generation of the current link (packet ids are per connection)
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._owner: asyncio.Task[None] | None = None
        self._closing = False
        self._next_pid = 1
        # Our unacknowledged publishes, by packet id: resent after a reconnect.
        self._unacked: dict[int, tuple[bytes, asyncio.Future[None]]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def connected(self) -> bool:
        """Whether the broker connection is currently up."""
        return self._connected.is_set()

    async def start(self) -> None:
        """Connect, subscribe and start the task that keeps the connection.

        Raises:
            BusUnavailable: If the first connection or subscription fails.
        """
        if self._owner is not None:
            return
        self._closing = False
        self._queue.clear()
        await self._connect()
        self._owner = asyncio.create_task(self._keep_connected(), name=f"mqim-logic-bus:{self._client_id}")

    async def stop(self) -> None:
        """Wait (up to `publish_timeout`) for publishes in flight, then disconnect."""
        if self._owner is None:
            return
        self._closing = True
        try:
            async with asyncio.timeout(self._publish_timeout):
                await self._idle.wait()
        except TimeoutError:
            _log.warning("stopping with %d publishes still unconfirmed", len(self._unacked))
        owner, self._owner = self._owner, None
        owner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await owner
        link, self._link = self._link, None
        if link is not None and not link.closed:
            link.write(mqtt.DISCONNECT_BYTES)
            link.close()
        self._connected.clear()
        self._ready.set()
        if self._queue:
            _log.warning("MQTT bus stopped with %d unprocessed requests", len(self._queue))
        for _, future in self._unacked.values():
            if not future.done():
                future.set_exception(BusClosed("the MQTT bus was stopped"))
        self._unacked.clear()

    async def receive_batch(self, max_items: int) -> list[Inbound]:
        """Wait for at least one request and return up to `max_items`, in arrival order.

        Raises:
            BusClosed: If the bus is not started or is stopped while waiting.
        """
        if max_items <= 0:
            raise ValueError(f"max_items must be positive, got {max_items}")
        queue = self._queue
        while not queue:
            if self._owner is None or self._closing:
                raise BusClosed("the MQTT bus is not started")
            if self._owner.done():
                raise BusClosed("the MQTT bus connection task has stopped")
            self._ready.clear()
            await self._ready.wait()
        count = min(max_items, len(queue))
        return [queue.popleft() for _ in range(count)]

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish one message and wait for the broker to confirm it (QoS 1).

        Raises:
            BusClosed: If the bus is not started or is stopping.
            BusUnavailable: If no connection came up, or no confirmation came, in time.
        """
        if self._owner is None or self._closing:
            raise BusClosed("the MQTT bus is not started")
        qos = min(qos, 1)  # replies are at least once; the IM dedups by id
        try:
            async with asyncio.timeout(self._publish_timeout):
                await self._connected.wait()
                link = self._link
                assert link is not None
                if not link.writable.is_set():
                    await link.writable.wait()  # the socket buffer is full: back-pressure
                if qos == 0:
                    link.write(mqtt.encode_publish(topic=mqtt.encode_str(topic), payload=payload, qos=0))
                    return
                pid = self._alloc_pid()
                packet = mqtt.encode_publish(
                    topic=mqtt.encode_str(topic), payload=payload, qos=1, retain=retain, packet_id=pid
                )
                future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._unacked[pid] = (packet, future)
                self._idle.clear()
                link.acks[pid] = future
                link.write(packet)
                try:
                    await future
                finally:
                    self._unacked.pop(pid, None)
                    if not self._unacked:
                        self._idle.set()
        except TimeoutError as exc:
            raise BusUnavailable(f"no confirmation within {self._publish_timeout}s for {topic!r}") from exc

    async def publish_many(self, messages: Sequence[tuple[str, bytes, int]]) -> list[BusError | None]:
        """Write every message in order, then wait once for all their PUBACKs.

        Raises:
            BusClosed: If the bus is not started or is stopping.
        """
        if self._owner is None or self._closing:
            raise BusClosed("the MQTT bus is not started")
        futures: list[asyncio.Future[None] | None] = []
        outcomes: list[BusError | None] = [None] * len(messages)
        try:
            async with asyncio.timeout(self._publish_timeout):
                await self._connected.wait()
                link = self._link
                assert link is not None
                if not link.writable.is_set():
                    await link.writable.wait()  # the socket buffer is full: back-pressure
                loop = asyncio.get_running_loop()
                for topic, payload, qos in messages:
                    if qos == 0:
                        link.write(mqtt.encode_publish(topic=mqtt.encode_str(topic), payload=payload, qos=0))
                        futures.append(None)
                        continue
                    pid = self._alloc_pid()
                    packet = mqtt.encode_publish(
                        topic=mqtt.encode_str(topic), payload=payload, qos=1, packet_id=pid
                    )
                    future: asyncio.Future[None] = loop.create_future()
                    self._unacked[pid] = (packet, future)
                    link.acks[pid] = future
                    link.write(packet)
                    futures.append(future)
                self._idle.clear()
                pending = [f for f in futures if f is not None]
                if pending:
                    await asyncio.wait(pending)
        except TimeoutError:
            pass
        finally:
            for index, waited in enumerate(futures):
                if waited is None:
                    continue
                if not waited.done():
                    waited.cancel()
                    outcomes[index] = BusUnavailable(f"no confirmation within {self._publish_timeout}s")
                elif waited.cancelled():
                    outcomes[index] = BusUnavailable("publish cancelled")
                elif (error := waited.exception()) is not None:
                    outcomes[index] = error if isinstance(error, BusError) else BusUnavailable(str(error))
            self._unacked = {pid: entry for pid, entry in self._unacked.items() if not entry[1].done()}
            if not self._unacked:
                self._idle.set()
        if len(futures) < len(messages):  # no connection in time: nothing was written
            for index in range(len(futures), len(messages)):
                outcomes[index] = BusUnavailable(f"no broker connection within {self._publish_timeout}s")
        return outcomes

    # -- connection ----------------------------------------------------------------------------
    def _alloc_pid(self) -> int:
        pid = self._next_pid
        while pid in self._unacked:
            pid = pid % 65535 + 1
        self._next_pid = pid % 65535 + 1
        return pid

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._connection += 1
        connection = self._connection
        self._lost.clear()
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                _, link = await loop.create_connection(
                    lambda: MqttLink(
                        on_publish=lambda pub: self._received(pub, connection), on_lost=self._on_lost
                    ),
                    self._host,
                    self._port,
                    ssl=self._tls_context,
                    server_hostname=self._host if self._tls_context is not None else None,
                )
                link.write(
                    mqtt.encode_connect(
                        client_id=self._client_id,
                        clean_session=self._clean_session,
                        keepalive=self._keepalive,
                        username=self._username,
                        password=self._password,
                    )
                )
                _, code = await link.connack()
                if code != mqtt.ACCEPTED:
                    link.close()
                    raise BusUnavailable(f"the broker refused the connection (CONNACK {code})")
                self._link = link
                granted = await link.subscribe(self._alloc_pid(), [(self._topic_filter, 1)])
                if any(g >= mqtt.SUBACK_FAILURE for g in granted):
                    link.close()
                    raise BusUnavailable(f"the broker refused the subscription to {self._topic_filter!r}")
        except (OSError, LinkClosed, TimeoutError, mqtt.MqttError) as exc:
            raise BusUnavailable(f"cannot connect to MQTT broker {self._host}:{self._port}: {exc}") from exc
        # MQTT-4.4.0-1: publishes the broker had not acknowledged go again, same id, DUP set.
        for pid, (packet, future) in list(self._unacked.items()):
            if not future.done():
                link.acks[pid] = future
                link.write(bytes((packet[0] | 0x08,)) + packet[1:])
        self._connected.set()

    def _on_lost(self, exc: Exception | None) -> None:
        self._connected.clear()
        self._lost.set()

    async def _keep_connected(self) -> None:
        """Owned task: ping while up; on a drop, back off and reconnect until stopped."""
        delay = self._min_delay
        attempt = 0
        while True:
            await self._ping_until_lost()
            if self._closing:
                return
            while True:
                attempt += 1
                _log.warning(
                    "MQTT broker %s:%d unreachable; reconnect attempt %d in %.1fs",
                    self._host,
                    self._port,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_delay)
                try:
                    await self._connect()
                except BusUnavailable as exc:
                    _log.warning("%s", exc)
                    continue
                self.reconnects += 1
                _log.info("reconnected to MQTT broker %s:%d", self._host, self._port)
                delay, attempt = self._min_delay, 0
                break

    async def _ping_until_lost(self) -> None:
        interval = max(1.0, self._keepalive / 2)
        while not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._lost.wait()
            link = self._link
            if self._lost.is_set() or link is None:
                return
            loop = asyncio.get_running_loop()
            if loop.time() - link.last_rx > self._keepalive * 1.5:
                _log.warning("the MQTT broker stopped answering; reconnecting")
                link.close()
                return
            link.write(mqtt.PINGREQ_BYTES)

    # -- requests in ---------------------------------------------------------------------------
    def _received(self, pub: mqtt.Publish, connection: int) -> None:
        if len(self._queue) >= self._max_queued:
            self.overflowed += 1
            if worth_logging(self.overflowed):
                _log.warning("MQTT bus full: %d requests left unacknowledged so far", self.overflowed)
            if self.on_overflow is not None:
                try:
                    self.on_overflow(pub.topic, pub.payload)
                except Exception:
                    # Called from the connection's receive path: a failing callback must not break it.
                    _log.exception("on_overflow callback failed for %r", pub.topic[:200])
            return
        receipt = None
        if pub.qos:
            receipt = _ManualAck(bus=self, connection=connection, pid=pub.packet_id or 0, qos=pub.qos)
        self._queue.append(
            Inbound(topic=pub.topic, payload=pub.payload, receipt=receipt, received_ns=received_stamp())
        )
        self._ready.set()

    def _ack(self, connection: int, pid: int, qos: int) -> None:
        link = self._link
        # A packet id belongs to one connection: after a reconnect the broker resends what was
        # not acknowledged (with DUP) and the stored request is recognised by its id.
        if link is None or connection != self._connection or link.closed:
            return
        link.write(mqtt.encode_ack(mqtt.PUBACK if qos == 1 else mqtt.PUBREC, pid))
        self.acked += 1


class _ManualAck:
    """The `Receipt` of one request received by an `MqttBus`: settling sends its acknowledgement."""

    __slots__ = ("_bus", "_connection", "_pid", "_qos")

    def __init__(self, *, bus: MqttBus, connection: int, pid: int, qos: int) -> None:
        self._bus = bus
        self._connection = connection
        self._pid = pid
        self._qos = qos

    def settle(self) -> None:
        self._bus._ack(self._connection, self._pid, self._qos)

    def fail(self) -> None:
        # Not acknowledged: the broker keeps it for this worker's next connection or another one.
        return
