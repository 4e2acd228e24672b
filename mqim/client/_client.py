"""`MqimClient`: the asyncio SDK over aiomqtt.

One background task (the supervisor of its `Connection`, `mqim/client/_connection.py`, awaited on
close) reads the connection and reconnects with bounded exponential back-off when it drops; the
client routes what it reads: acks and errors to waiting sends, everything else to `messages()`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import ssl
import uuid
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any, Self

from pydantic import ValidationError

from mqim.client._buffer import IncomingBuffer
from mqim.client._connection import Connection
from mqim.client._dedup import DedupWindow
from mqim.client._exceptions import (
    AckTimeout,
    ClientClosed,
    ClientError,
    ConnectionLost,
    InvalidRequest,
)
from mqim.client._incoming import Incoming, ack_of, decode, error_of
from mqim.client._pending import PendingAcks
from mqim.protocol import Ack, InvalidId, SendRequest, UpKind, up_topic, validate_id

_log = logging.getLogger("mqim.client")


def new_message_id() -> str:
    """Return a fresh client message id (an idempotency key) that fits the id rule."""
    return f"c-{uuid.uuid4().hex}"


class MqimClient:
    """An mqim user connected to the broker. Use as an async context manager.

    Args:
        host: Broker host name or address.
        port: Broker TCP port.
        user: The user id; also the MQTT user name.
        password: The user's password.
        client_id: MQTT client id. Default: `{user}-` plus random hex, fixed for the life of this
            object so reconnects resume the same persistent session.
        clean_session: MQTT clean-session flag, used on every (re)connect. With the default
            False the broker keeps the session and redelivers what was queued while away.
        tls_context: SSL context for a TLS listener, or None for plain TCP.
        keepalive: MQTT keepalive in seconds.
        ack_timeout: Seconds to wait for the ack of a sent message, per attempt (two attempts).
        connect_timeout: Seconds to wait for a connection and its CONNACK.
        receive: False for a send-only client: messages that are not acks or errors of its own
            sends are dropped instead of buffered for `messages()`.
        max_incoming: Capacity of the buffer feeding `messages()`. When it is full, reading the
            connection waits (acks included), so a client that never consumes `messages()` should
            pass `receive=False`.
        dedup_window: How many (conv, seq) pairs are remembered to drop DUP redeliveries.
        max_pending_sends: How many `send` calls may wait for an ack at once; more wait for a slot.
        reconnect_base_delay: First reconnect delay in seconds; doubles up to `reconnect_max_delay`.
        reconnect_max_delay: Largest reconnect delay in seconds.
        max_reconnect_attempts: Give up (failing `messages()` and pending sends with
            `ConnectionLost`) after this many failed attempts in a row; None retries forever.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        user: str,
        password: str,
        client_id: str | None = None,
        clean_session: bool = False,
        tls_context: ssl.SSLContext | None = None,
        keepalive: int = 30,
        ack_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        receive: bool = True,
        max_incoming: int = 10_000,
        dedup_window: int = 4096,
        max_pending_sends: int = 1000,
        reconnect_base_delay: float = 0.2,
        reconnect_max_delay: float = 10.0,
        max_reconnect_attempts: int | None = None,
    ) -> None:
        try:
            validate_id(user, what="user")
        except InvalidId as exc:
            raise InvalidRequest(exc.message) from exc
        for name, value in (
            ("ack_timeout", ack_timeout),
            ("connect_timeout", connect_timeout),
            ("reconnect_base_delay", reconnect_base_delay),
            ("reconnect_max_delay", reconnect_max_delay),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if max_pending_sends < 1:
            raise ValueError(f"max_pending_sends must be >= 1, got {max_pending_sends}")
        if max_reconnect_attempts is not None and max_reconnect_attempts < 1:
            raise ValueError(f"max_reconnect_attempts must be >= 1 or None, got {max_reconnect_attempts}")
        self._user = user
        self._client_id = client_id if client_id is not None else f"{user}-{secrets.token_hex(6)}"
        self._ack_timeout = ack_timeout
        self._receive = receive

        self._buffer = IncomingBuffer(max_items=max_incoming)
        self._dedup = DedupWindow(max_entries=dedup_window)
        self._pending = PendingAcks()
        self._send_slots = asyncio.Semaphore(max_pending_sends)
        self._connection = Connection(
            host=host,
            port=port,
            user=user,
            password=password,
            client_id=self._client_id,
            clean_session=clean_session,
            tls_context=tls_context,
            keepalive=keepalive,
            connect_timeout=connect_timeout,
            reconnect_base_delay=reconnect_base_delay,
            reconnect_max_delay=reconnect_max_delay,
            max_reconnect_attempts=max_reconnect_attempts,
            dispatch=self._dispatch,
            give_up=self._give_up,
        )

    # -- properties ----------------------------------------------------------------------------
    @property
    def user(self) -> str:
        """The user id this client is connected as."""
        return self._user

    @property
    def client_id(self) -> str:
        """The MQTT client id (stable across reconnects)."""
        return self._client_id

    @property
    def connected(self) -> bool:
        """True while a connection to the broker is up."""
        return self._connection.connected

    @property
    def reconnects(self) -> int:
        """How many times the connection was re-established after a drop."""
        return self._connection.reconnects

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect, subscribe to the inbox and start the supervisor.

        Raises:
            AuthError: The broker refused the credentials.
            ConnectError: The broker could not be reached or refused the connection.
        """
        await self._connection.connect()

    async def close(self) -> None:
        """Disconnect and stop. Pending sends fail with `ClientClosed`; `messages()` ends."""
        if not await self._connection.close():
            return
        self._pending.fail_all(ClientClosed("the client was closed"))
        await self._buffer.close(self._connection.failure)

    # -- sending -------------------------------------------------------------------------------
    async def send(
        self,
        *,
        to: str | None = None,
        group: str | None = None,
        text: str | None = None,
        data: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> Ack:
        """Send a direct (`to`) or group (`group`) message and wait for its ack.

        The message is published at QoS 1 on `im/v1/up/{user}/msg`. If no ack arrives within
        `ack_timeout`, it is published once more with the same id (the server deduplicates, so
        the retry never creates a second message).

        Args:
            to: Recipient user id (exclusive with `group`).
            group: Recipient group id (exclusive with `to`).
            text: Text content.
            data: Structured content.
            id: Idempotency key; default a fresh random id.

        Returns:
            The server's ack: conv, seq, server_id and ts of the stored message.

        Raises:
            InvalidRequest: The request breaks the wire contract (nothing is sent).
            SendError: The server refused the message; `.error` is its ErrorPayload.
            AckTimeout: No ack after two attempts.
            ConnectionLost: The client gave up reconnecting.
            ClientClosed: The client was closed meanwhile.
        """
        message_id = id if id is not None else new_message_id()
        try:
            request = SendRequest(id=message_id, to=to, group=group, text=text, data=data)
        except ValidationError as exc:
            raise InvalidRequest(_describe(exc)) from exc
        payload = request.model_dump_json(exclude_none=True).encode()
        topic = up_topic(self._user, UpKind.MSG)
        async with self._send_slots:
            future = self._pending.register(message_id)
            try:
                for attempt in (1, 2):
                    try:
                        async with asyncio.timeout(self._ack_timeout):
                            await self._connection.publish_when_connected(topic, payload, qos=1)
                            # shield: a timeout must not cancel the future the retry waits on.
                            return await asyncio.shield(future)
                    except TimeoutError:
                        _log.info("no ack for %s after attempt %d", message_id, attempt)
                raise AckTimeout(message_id, self._ack_timeout)
            finally:
                self._pending.discard(message_id)

    async def publish(
        self, kind: UpKind | str, payload: Mapping[str, Any] | bytes, *, qos: int | None = None
    ) -> None:
        """Publish a raw request on `im/v1/up/{user}/{kind}` (read, typing, sync, history, cmd).

        Nothing is awaited but the MQTT acknowledgement; replies arrive through `messages()`.

        Args:
            kind: The request kind.
            payload: A JSON object (serialised here) or ready bytes.
            qos: MQTT QoS; default 0 for `typing`, 1 otherwise.

        Raises:
            InvalidRequest: Unknown kind.
            ConnectionLost: Not connected within `ack_timeout`, or the client gave up reconnecting.
            ClientClosed: The client was closed meanwhile.
        """
        try:
            up_kind = UpKind(kind)
        except ValueError as exc:
            raise InvalidRequest(f"unknown request kind {kind!r}") from exc
        body = payload if isinstance(payload, bytes) else json.dumps(dict(payload)).encode()
        effective_qos = qos if qos is not None else (0 if up_kind is UpKind.TYPING else 1)
        try:
            async with asyncio.timeout(self._ack_timeout):
                await self._connection.publish_when_connected(
                    up_topic(self._user, up_kind), body, qos=effective_qos
                )
        except TimeoutError:
            raise ConnectionLost(f"could not publish within {self._ack_timeout:g}s") from None

    # -- receiving -----------------------------------------------------------------------------
    async def messages(self) -> AsyncGenerator[Incoming, None]:
        """Yield everything delivered to this client, except acks and errors of its own sends.

        Direct and group messages come as `Incoming` whose `payload` is a `DeliveredMessage`;
        redeliveries of a (conv, seq) already yielded are dropped. Ends when the client closes.

        Raises:
            ConnectionLost: The client gave up reconnecting.
            AuthError: The broker refused the credentials on a reconnect.
        """
        if not self._receive:
            raise ClientError("this client was created with receive=False")
        while True:
            item = await self._buffer.get()
            if item is None:
                return
            yield item

    # -- internals -----------------------------------------------------------------------------
    async def _dispatch(self, topic: str, raw: bytes, retain: bool) -> None:
        incoming = decode(topic, raw, retain=retain)
        ack = ack_of(incoming, self._user)
        if ack is not None and self._pending.resolve_ack(ack):
            return
        error = error_of(incoming, self._user)
        if error is not None and self._pending.resolve_error(error):
            return
        message = incoming.message
        if message is not None and self._dedup.seen(message.conv, message.seq):
            _log.debug("dropping redelivery of %s/%d", message.conv, message.seq)
            return
        if not self._receive:
            return
        await self._buffer.put(incoming)

    async def _give_up(self, exc: ClientError) -> None:
        self._pending.fail_all(exc)
        await self._buffer.close(exc)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
    return "; ".join(parts)
