"""`MqttBus`: the logic service as an MQTT client (aiomqtt) of a broker, for `mqim logic`."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from mqim.logic._bus import Bus, Inbound
from mqim.logic._exceptions import BusClosed, BusUnavailable
from mqim.logic._tasks import raise_if_cancelling
from mqim.protocol import UP_FILTER

_log = logging.getLogger(__name__)


def _refused(granted: tuple[int, ...] | list[ReasonCode]) -> bool:
    """Whether a SUBACK refused a filter (granted QoS 0x80)."""
    return any((code.value if isinstance(code, ReasonCode) else code) >= 0x80 for code in granted)


class MqttBus(Bus):
    """A `Bus` over an MQTT connection, reconnecting with bounded back-off when it drops.

    `start()` makes the first connection and fails with `BusUnavailable` if it cannot. Then an
    owned reader task subscribes (QoS 1) and moves messages into a queue bounded by
    `max_queued`; when the connection drops it reconnects with exponential back-off (from
    `reconnect_min_delay` to `reconnect_max_delay` seconds, each attempt logged) and subscribes
    again. With `clean_session=False` (the default) the broker keeps the service's subscription
    and queues what arrives while it is away, so a reconnect loses nothing; each worker needs
    its own `client_id`.

    Requests are acknowledged to the broker by hand (paho's manual ack), when the service
    settles them after its commit, not when they arrive: the broker keeps an unacknowledged
    request in the worker's session (redelivered after a reconnect, or handed to another worker
    of a shared subscription when this one goes away) and holds its sender's PUBACK until then.
    The broker's in-flight window for the worker bounds what is outstanding, so aiomqtt's
    incoming queue (`max_queued`) does not fill in normal operation; should it, a message
    arriving then is counted in `overflowed` and handed to `on_overflow(topic, payload)`
    instead of being dropped silently (it stays unacknowledged at the broker).

    `publish()` waits up to `publish_timeout` seconds for a connection and for the broker's
    acknowledgement (QoS 1), else raises `BusUnavailable`.

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
        max_queued: Bound of the received-message queues (ours and aiomqtt's).
        on_overflow: Called with each message refused because the queues are full. Also
            settable later through the `on_overflow` attribute.
        reconnect_min_delay: First back-off delay, in seconds.
        reconnect_max_delay: Longest back-off delay, in seconds.
        publish_timeout: How long a publish may wait for a connection and for its PUBACK.
    """

    # paho queues each publish synchronously when its task starts, in task start order, so
    # concurrent publishes keep their order on the wire while their PUBACK waits overlap.
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
        self._client: aiomqtt.Client | None = None
        # None is the end-of-stream marker the reader leaves when it stops.
        self._queue: asyncio.Queue[Inbound | None] = asyncio.Queue(maxsize=max_queued)
        self._connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._connection = 0  # generation of the current broker connection (packet ids are per connection)
        self.acked = 0

    @property
    def connected(self) -> bool:
        """Whether the broker connection is currently up."""
        return self._connected.is_set()

    async def start(self) -> None:
        """Connect, subscribe and start the reader task.

        Raises:
            BusUnavailable: If the first connection or subscription fails.
        """
        if self._reader is not None:
            return
        self._closing = False
        self._queue = asyncio.Queue(maxsize=self._max_queued)
        self._client = aiomqtt.Client(
            self._host,
            self._port,
            username=self._username,
            password=self._password,
            identifier=self._client_id,
            clean_session=self._clean_session,
            tls_context=self._tls_context,
            keepalive=self._keepalive,
            queue_type=self._incoming_queue_type(),
            max_queued_incoming_messages=self._max_queued,
        )
        # aiomqtt has no option for it; paho's manual ack is the documented way to acknowledge
        # a message after processing it (the boundary to the library is this one call).
        self._client._client.manual_ack_set(True)
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(
            self._read_forever(self._client, first), name=f"mqim-logic-bus:{self._client_id}"
        )
        try:
            await first
        except BaseException:
            await self._stop_reader()
            raise

    async def stop(self) -> None:
        """Wait (up to `publish_timeout`) for publishes in flight, then disconnect."""
        if self._reader is None:
            return
        self._closing = True
        try:
            async with asyncio.timeout(self._publish_timeout):
                await self._idle.wait()
        except TimeoutError:
            _log.warning("stopping with %d publishes still unconfirmed", self._inflight)
        await self._stop_reader()
        if not self._queue.empty():
            _log.warning("MQTT bus stopped with %d unprocessed requests", self._queue.qsize())

    async def receive_batch(self, max_items: int) -> list[Inbound]:
        """Wait for at least one message and return up to `max_items`, in arrival order.

        Raises:
            BusClosed: If the bus is not started or is stopped while waiting.
        """
        if max_items <= 0:
            raise ValueError(f"max_items must be positive, got {max_items}")
        if self._reader is None or self._closing:
            raise BusClosed("the MQTT bus is not started")
        if self._queue.empty() and self._reader.done():
            raise BusClosed("the MQTT bus reader has stopped")
        item = await self._queue.get()
        batch: list[Inbound] = []
        while item is not None:
            batch.append(item)
            if len(batch) >= max_items or self._queue.empty():
                return batch
            item = self._queue.get_nowait()
        # The end marker: give it back for the next call (there is room, we just took it).
        self._queue.put_nowait(None)
        if batch:
            return batch
        raise BusClosed("the MQTT bus was stopped")

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish one message and wait for the broker to confirm it (QoS 1 and 2).

        Raises:
            BusClosed: If the bus is not started or is stopping.
            BusUnavailable: If no connection came up, or no confirmation came, in time.
        """
        client = self._client
        if self._reader is None or self._closing or client is None:
            raise BusClosed("the MQTT bus is not started")
        self._inflight += 1
        self._idle.clear()
        try:
            async with asyncio.timeout(self._publish_timeout):
                await self._connected.wait()
            await client.publish(topic, payload, qos=qos, retain=retain, timeout=self._publish_timeout)
            raise_if_cancelling()
        except TimeoutError as exc:
            raise BusUnavailable(
                f"no broker connection within {self._publish_timeout}s to publish {topic!r}"
            ) from exc
        except aiomqtt.MqttError as exc:
            raise BusUnavailable(f"publish to {topic!r} failed: {exc}") from exc
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    def _incoming_queue_type(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        bus = self

        class _IncomingQueue(asyncio.Queue[aiomqtt.Message]):
            # aiomqtt calls put_nowait from its receive callback and would discard on a full
            # queue with only a log line; we hand the message to `on_overflow` instead.
            def put_nowait(self, item: aiomqtt.Message) -> None:
                if self.full():
                    bus._overflow(item.topic.value, item.payload)
                    return
                super().put_nowait(item)

        return _IncomingQueue

    def _overflow(self, topic: str, payload: bytes) -> None:
        self.overflowed += 1
        if self.overflowed & (self.overflowed - 1) == 0:  # 1st, 2nd, 4th...: visible, no flood
            _log.warning("MQTT bus full: %d requests refused so far", self.overflowed)
        if self.on_overflow is not None:
            try:
                self.on_overflow(topic, payload)
            except Exception:
                # Called from aiomqtt's receive path: a failing callback must not break it.
                _log.exception("on_overflow callback failed for %r", topic[:200])

    async def _read_forever(self, client: aiomqtt.Client, first: asyncio.Future[None]) -> None:
        """Own the connection: connect, subscribe, read; on a drop, back off and reconnect."""
        delay = self._min_delay
        attempt = 0
        try:
            while True:
                raise_if_cancelling()
                try:
                    async with client:
                        granted = await client.subscribe(self._topic_filter, qos=1)
                        if _refused(granted):
                            raise BusUnavailable(
                                f"the broker refused the subscription to {self._topic_filter!r}"
                            )
                        self._connected.set()
                        if first.done():
                            self.reconnects += 1
                            _log.info("reconnected to MQTT broker %s:%d", self._host, self._port)
                        else:
                            first.set_result(None)
                        delay, attempt = self._min_delay, 0
                        self._connection += 1
                        connection = self._connection
                        async for message in client.messages:
                            receipt = (
                                _ManualAck(bus=self, connection=connection, mid=message.mid, qos=message.qos)
                                if message.qos
                                else None
                            )
                            inbound = Inbound(
                                topic=message.topic.value, payload=bytes(message.payload), receipt=receipt
                            )
                            await self._queue.put(inbound)
                except (aiomqtt.MqttError, BusUnavailable) as exc:
                    self._connected.clear()
                    # aiomqtt may turn our cancellation into a timeout while disconnecting.
                    raise_if_cancelling()
                    if not first.done():
                        error = BusUnavailable(
                            f"cannot connect to MQTT broker {self._host}:{self._port}: {exc}"
                        )
                        error.__cause__ = exc
                        first.set_exception(error)
                        return
                    attempt += 1
                    _log.warning(
                        "MQTT broker %s:%d unreachable (%s); reconnect attempt %d in %.1fs",
                        self._host,
                        self._port,
                        exc,
                        attempt,
                        delay,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_delay)
        finally:
            self._connected.clear()
            if not first.done():
                first.set_exception(BusUnavailable("the MQTT bus reader stopped before connecting"))
            # Wake a receive_batch waiting on an empty queue; a full queue wakes it anyway.
            if not self._queue.full():
                self._queue.put_nowait(None)

    def _ack(self, connection: int, mid: int, qos: int) -> None:
        client = self._client
        # A packet id belongs to one connection: after a reconnect the broker resends what was
        # not acknowledged (with DUP) and the stored request is recognised by its id.
        if client is None or connection != self._connection or not self._connected.is_set():
            return
        client._client.ack(mid, qos)
        self.acked += 1

    async def _stop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is None:
            return
        reader.cancel()
        try:
            await reader
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception:
            _log.exception("the MQTT bus reader failed")


class _ManualAck:
    """The `Receipt` of one request received by an `MqttBus`: settling sends its PUBACK."""

    __slots__ = ("_bus", "_connection", "_mid", "_qos")

    def __init__(self, *, bus: MqttBus, connection: int, mid: int, qos: int) -> None:
        self._bus = bus
        self._connection = connection
        self._mid = mid
        self._qos = qos

    def settle(self) -> None:
        self._bus._ack(self._connection, self._mid, self._qos)

    def fail(self) -> None:
        # Not acknowledged: the broker keeps it for this worker's next connection or another one.
        return
