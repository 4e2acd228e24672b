"""The connection of one `MqimClient`: connect, read, reconnect with back-off, publish when up.

One background task (the supervisor, owned by the connection and awaited on close) reads the
connection and hands every message, in order, to the client's `dispatch`; when the connection
drops it reconnects with bounded exponential back-off, and when it gives up it tells the
client's `give_up`. The client (`mqim/client/_client.py`) routes what is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from mqim._util import cancel_and_wait
from mqim.client._backoff import backoff_delay
from mqim.client._exceptions import AuthError, ClientClosed, ClientError, ConnectError, ConnectionLost
from mqim.protocol import inbox_filter

_log = logging.getLogger("mqim.client")

# CONNACK refusals that mean "wrong credentials", as paho reports them for MQTT 3.1.1
# (converted to v5 reason codes) and as raw 3.1.1 return codes.
_AUTH_REFUSALS = frozenset({4, 5, 134, 135})

Dispatch = Callable[[str, bytes, bool], Awaitable[None]]
"""Called with (topic, payload, retain) for each message read; reading waits until it returns."""

GiveUp = Callable[[ClientError], Awaitable[None]]
"""Called once with the error that ended the connection for good (see `MqimClient`)."""


class Connection:
    """The supervised MQTT connection of one client; see `MqimClient` for the arguments.

    Args:
        dispatch: Receives every message read.
        give_up: Told when reconnecting failed for good or the credentials were refused.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str,
        password: str,
        client_id: str,
        clean_session: bool,
        tls_context: ssl.SSLContext | None,
        keepalive: int,
        connect_timeout: float,
        reconnect_base_delay: float,
        reconnect_max_delay: float,
        max_reconnect_attempts: int | None,
        dispatch: Dispatch,
        give_up: GiveUp,
    ) -> None:
        self._host = host
        self._port = port
        self._user = user
        self._password = password
        self._client_id = client_id
        self._clean_session = clean_session
        self._tls_context = tls_context
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._reconnect_base_delay = reconnect_base_delay
        self._reconnect_max_delay = reconnect_max_delay
        self._max_reconnect_attempts = max_reconnect_attempts
        self._dispatch = dispatch
        self._give_up = give_up

        # Connection state, guarded by `_state`: the live aiomqtt client (None while down),
        # the fatal error that ended the client, and whether `close()` was called.
        self._state = asyncio.Condition()
        self._mqtt: aiomqtt.Client | None = None
        self._failure: ClientError | None = None
        self._closed = False
        self._started = False
        self._supervisor: asyncio.Task[None] | None = None
        self._reconnects = 0

    @property
    def connected(self) -> bool:
        """True while a connection to the broker is up."""
        return self._mqtt is not None

    @property
    def reconnects(self) -> int:
        """How many times the connection was re-established after a drop."""
        return self._reconnects

    @property
    def failure(self) -> ClientError | None:
        """The error that ended the connection for good, if any."""
        return self._failure

    async def connect(self) -> None:
        """Connect, subscribe to the inbox and start the supervisor.

        Raises:
            AuthError: The broker refused the credentials.
            ConnectError: The broker could not be reached or refused the connection.
        """
        if self._started:
            raise RuntimeError("an MqimClient connects once; create a new one to connect again")
        self._started = True
        mqtt = await self._open_connection()
        async with self._state:
            self._mqtt = mqtt
            self._state.notify_all()
        self._supervisor = asyncio.create_task(self._supervise(mqtt), name=f"mqim-client:{self._client_id}")

    async def close(self) -> bool:
        """Stop the supervisor and disconnect; return False if it was closed already."""
        if self._closed:
            return False
        async with self._state:
            self._closed = True
            self._state.notify_all()
        task, self._supervisor = self._supervisor, None
        if task is not None:
            await cancel_and_wait(task)
        # The supervisor disconnects on its way out, unless it was cancelled before it ever ran.
        async with self._state:
            mqtt, self._mqtt = self._mqtt, None
        if mqtt is not None:
            await _disconnect_quietly(mqtt)
        return True

    async def _open_connection(self) -> aiomqtt.Client:
        mqtt = aiomqtt.Client(
            self._host,
            self._port,
            username=self._user,
            password=self._password,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=self._clean_session,
            keepalive=self._keepalive,
            timeout=self._connect_timeout,
            tls_context=self._tls_context,
        )
        where = f"{self._host}:{self._port}"
        try:
            await mqtt.__aenter__()
        except MqttConnectError as exc:
            code = _rc_value(exc.rc)
            if code in _AUTH_REFUSALS:
                raise AuthError(f"{where} refused the credentials of {self._user!r}") from exc
            raise ConnectError(f"{where} refused the connection: {exc}") from exc
        except aiomqtt.MqttError as exc:
            raise ConnectError(f"cannot connect to {where}: {exc}") from exc
        try:
            granted = await mqtt.subscribe(inbox_filter(self._user), qos=1, timeout=self._connect_timeout)
        except aiomqtt.MqttError as exc:
            await _disconnect_quietly(mqtt)
            raise ConnectError(f"subscribing to the inbox on {where} failed: {exc}") from exc
        if any(_rc_value(code) >= 0x80 for code in granted):
            # The broker also subscribes the session itself, so a refusal is not fatal.
            _log.warning("broker refused the subscription to %s", inbox_filter(self._user))
        return mqtt

    async def _supervise(self, mqtt: aiomqtt.Client) -> None:
        try:
            while True:
                try:
                    await self._pump(mqtt)
                    _log.info("connection closed by the broker")
                except aiomqtt.MqttError as exc:
                    _log.info("connection lost: %s", exc)
                finally:
                    async with self._state:
                        self._mqtt = None
                        self._state.notify_all()
                    await _disconnect_quietly(mqtt)
                mqtt = await self._reconnect()
                self._reconnects += 1
                async with self._state:
                    self._mqtt = mqtt
                    self._state.notify_all()
        except ClientError as exc:
            _log.error("giving up: %s", exc)
            async with self._state:
                self._failure = exc
                self._state.notify_all()
            await self._give_up(exc)

    async def _reconnect(self) -> aiomqtt.Client:
        attempt = 0
        while True:
            attempt += 1
            if self._max_reconnect_attempts is not None and attempt > self._max_reconnect_attempts:
                raise ConnectionLost(
                    f"could not reconnect to {self._host}:{self._port} "
                    f"after {self._max_reconnect_attempts} attempts"
                )
            await asyncio.sleep(
                backoff_delay(attempt, base=self._reconnect_base_delay, cap=self._reconnect_max_delay)
            )
            try:
                return await self._open_connection()
            except AuthError:
                raise
            except ConnectError as exc:
                _log.info("reconnect attempt %d failed: %s", attempt, exc)

    async def _pump(self, mqtt: aiomqtt.Client) -> None:
        async for message in mqtt.messages:
            await self._dispatch(str(message.topic), _as_bytes(message.payload), message.retain)

    async def _wait_connected(self, previous: aiomqtt.Client | None = None) -> aiomqtt.Client:
        async with self._state:
            await self._state.wait_for(
                lambda: (
                    self._closed
                    or self._failure is not None
                    or (self._mqtt is not None and self._mqtt is not previous)
                )
            )
            if self._failure is not None:
                raise self._failure
            if self._closed:
                raise ClientClosed("the client was closed")
            assert self._mqtt is not None
            return self._mqtt

    async def publish_when_connected(self, topic: str, payload: bytes, *, qos: int) -> None:
        """Publish on the current connection, or on the next one if it fails; the caller bounds it."""
        if not self._started:
            raise ClientError("the client is not connected: use `async with MqimClient(...)`")
        previous: aiomqtt.Client | None = None
        while True:
            mqtt = await self._wait_connected(previous)
            try:
                # The caller bounds the wait with its own timeout.
                await mqtt.publish(topic, payload, qos=qos, timeout=float("inf"))
                return
            except aiomqtt.MqttError as exc:
                _log.info("publish on %s failed, waiting for the next connection: %s", topic, exc)
                previous = mqtt


async def _disconnect_quietly(mqtt: aiomqtt.Client) -> None:
    # The connection is being abandoned; a failure to say goodbye changes nothing.
    with contextlib.suppress(aiomqtt.MqttError):
        await mqtt.__aexit__(None, None, None)


def _rc_value(rc: object) -> int:
    value = getattr(rc, "value", rc)
    return value if isinstance(value, int) else -1


def _as_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()
