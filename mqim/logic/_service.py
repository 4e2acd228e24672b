"""The logic service: take a batch of uplink requests from the bus, handle it, publish replies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mqim._util import raise_if_cancelling, worth_logging
from mqim.acl import MembershipIndex
from mqim.logic._bus import Bus, Inbound
from mqim.logic._exceptions import BusClosed, BusError
from mqim.logic._groups import CmdHandler
from mqim.logic._held import HeldRequests
from mqim.logic._limits import LogicLimits
from mqim.logic._membership import GroupAccess
from mqim.logic._read import ReadHandler
from mqim.logic._replies import Outbound, error_reply
from mqim.logic._requests import Handler, Uplink
from mqim.logic._send import SendHandler
from mqim.logic._sync import HistoryHandler, SyncHandler
from mqim.logic._typing_indicator import TypingHandler
from mqim.logic._users import UserDirectory
from mqim.logic._validate import extract_ref, unsupported_kind_message
from mqim.protocol import ErrorCode, InvalidTopic, UpKind, parse_up_topic
from mqim.stats import LatencyHistogram
from mqim.storage import Storage

_log = logging.getLogger(__name__)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class LogicCounters:
    """What the service did since it was created (for metrics and status).

    Attributes:
        requests: Uplink requests taken from the bus.
        batches: Batches they came in (`requests / batches` is the mean batch size).
        invalid_topics: Requests dropped because their topic names no valid user (no one to answer).
        errors_sent: `error` replies produced (bad requests, unknown kinds, storage failures...).
        handler_failures: Batches of one kind whose handler raised (a bug; answered `internal`).
        published: Replies published.
        publish_failures: Replies the bus failed to publish (logged; the data stays stored).
        overflow_answered: Requests the bus could not queue that got a `rate_limited` reply.
        overflow_unanswered: Requests the bus could not queue and that got no reply either.
        held: Times a request was held because storage failed on it (each attempt counts).
        given_back: Held requests failed back to the broker after `limits.max_hold_s` (their
            senders resend them).
    """

    requests: int = 0
    batches: int = 0
    invalid_topics: int = 0
    errors_sent: int = 0
    handler_failures: int = 0
    published: int = 0
    publish_failures: int = 0
    overflow_answered: int = 0
    overflow_unanswered: int = 0
    held: int = 0
    given_back: int = 0


class LogicService:
    """The IM brain: one handler per request kind, talking to the world through a `Bus`.

    The loop takes up to `limits.max_batch` requests at once, groups them by kind (keeping
    arrival order within a kind; kinds are handled in order of first appearance), lets each
    kind's handler validate and persist them (one storage write per batch for `msg`), and then
    publishes the replies in order. Persist always happens before any delivery. A bad request
    only earns its sender an `error`; a failing handler or storage only fails its own requests
    (`internal`); the loop itself keeps going.

    To answer requests the bus could not queue, wire its overflow callback to this service::

        bus = InProcessBus(port=port)
        service = LogicService(storage=storage, bus=bus)
        bus.on_overflow = service.reject_overflow

    Args:
        storage: Users and messages (opened by the caller).
        bus: The transport (started by the caller).
        limits: Named limits; defaults to `LogicLimits()`.
        clock: Server time in milliseconds since the epoch; defaults to the system clock.
        membership: The membership index shared with an in-process broker (its ACL and
            server-managed subscriptions follow it), kept current by this service after every
            group change and new direct conversation. None for a standalone worker: membership
            is then read from storage, and the broker follows the published group events.
    """

    def __init__(
        self,
        *,
        storage: Storage,
        bus: Bus,
        limits: LogicLimits | None = None,
        clock: Callable[[], int] | None = None,
        membership: MembershipIndex | None = None,
    ) -> None:
        self._bus = bus
        limits = self._limits = limits if limits is not None else LogicLimits()
        users = self._users = UserDirectory(
            storage=storage, maxsize=limits.user_cache_size, ttl_s=limits.user_cache_ttl_s
        )
        groups = GroupAccess(storage=storage, index=membership)
        send = SendHandler(
            storage=storage,
            users=users,
            groups=groups,
            limits=limits,
            clock=clock if clock is not None else _now_ms,
        )
        # One entry per supported request kind; a new kind is a new handler here.
        self._handlers: dict[str, Handler] = {
            UpKind.MSG.value: send,
            UpKind.READ.value: ReadHandler(storage=storage, groups=groups, limits=limits),
            UpKind.TYPING.value: TypingHandler(users=users, groups=groups, limits=limits),
            UpKind.SYNC.value: SyncHandler(storage=storage, limits=limits),
            UpKind.HISTORY.value: HistoryHandler(storage=storage, groups=groups, limits=limits),
            UpKind.CMD.value: CmdHandler(storage=storage, users=users, groups=groups, limits=limits),
        }
        self._rejections: deque[Outbound] = deque()
        self._held = HeldRequests(max_hold_s=limits.max_hold_s)
        self.counters = LogicCounters()
        # A request taken by the bus to its replies and messages published (routed to the
        # recipients' sessions), for a sampled few (`Inbound.received_ns`).
        self.delivery_latency = LatencyHistogram()

    @property
    def limits(self) -> LogicLimits:
        """The limits this service enforces."""
        return self._limits

    async def run(self) -> None:
        """Serve requests until cancelled.

        Raises:
            BusClosed: When the bus is stopped underneath the service.
        """
        while True:
            batch = await self._next_batch()
            if batch:
                await self._process(batch)
            await self._publish_rejections()
            raise_if_cancelling()

    @property
    def held(self) -> int:
        """Requests held because storage failed on them (retried; their PUBACKs wait)."""
        return len(self._held)

    async def _next_batch(self) -> list[Inbound]:
        held = self._held
        max_batch = self._limits.max_batch
        if not held:
            return await self._bus.receive_batch(max_batch)
        wait = held.wait_s(time.monotonic())
        if wait > 0:
            try:
                async with asyncio.timeout(wait):
                    held.queue_behind(await self._bus.receive_batch(max_batch))
                return []
            except TimeoutError:
                pass
        return held.take(max_batch)

    def reject_overflow(self, topic: str, payload: bytes) -> None:
        """Answer `rate_limited` to a request the bus could not queue (its `on_overflow`).

        Synchronous, as the bus calls it from its receive callback: the reply is queued (bounded
        by `limits.max_pending_rejections`) and published by the loop after its current batch.
        """
        try:
            sender, _ = parse_up_topic(topic)
        except InvalidTopic:
            sender = None
        if sender is None or len(self._rejections) >= self._limits.max_pending_rejections:
            self.counters.overflow_unanswered += 1
            if worth_logging(self.counters.overflow_unanswered):
                _log.warning(
                    "overloaded: %d requests dropped without a reply (latest on %r)",
                    self.counters.overflow_unanswered,
                    topic[:200],
                )
            return
        # Parsing for the ref costs CPU the service lacks right now, so only for sane sizes.
        ref = (
            extract_ref(payload, limits=self._limits)
            if len(payload) <= self._limits.max_payload_bytes
            else None
        )
        self._rejections.append(
            error_reply(
                sender, ref=ref, code=ErrorCode.RATE_LIMITED, message="the server is overloaded; retry later"
            )
        )
        self.counters.overflow_answered += 1
        if worth_logging(self.counters.overflow_answered):
            _log.warning("overloaded: %d requests answered rate_limited", self.counters.overflow_answered)

    def forget_user(self, user_id: str) -> None:
        """Drop the cached account `user_id` (call after disabling, enabling or creating it)."""
        self._users.forget(user_id)

    async def _process(self, batch: Sequence[Inbound]) -> None:
        self.counters.requests += len(batch)
        self.counters.batches += 1
        by_kind: dict[str, list[tuple[Inbound, Uplink]]] = {}
        dropped: list[Inbound] = []
        for item in batch:
            try:
                sender, kind = parse_up_topic(item.topic)
            except InvalidTopic as exc:
                # No valid user in the topic: there is nobody to answer.
                self.counters.invalid_topics += 1
                if worth_logging(self.counters.invalid_topics):
                    _log.warning(
                        "dropping request on an invalid topic (%d so far): %s",
                        self.counters.invalid_topics,
                        exc,
                    )
                dropped.append(item)
                continue
            uplink = Uplink(sender=sender, kind=kind, payload=item.payload)
            by_kind.setdefault(kind, []).append((item, uplink))
        self._bus.settle(dropped)  # nothing to store: acknowledged as processed
        for kind, items in by_kind.items():
            replies = await self._handle(kind, [uplink for _, uplink in items])
            await self._publish_all(self._settle(items, replies))
        sampled = [item.received_ns for item in batch if item.received_ns]
        if sampled:
            now = time.monotonic_ns()
            for received in sampled:
                self.delivery_latency.observe_ns(now - received)

    def _settle(self, items: list[tuple[Inbound, Uplink]], replies: list[Outbound]) -> list[Outbound]:
        """Settle what is durable, hold what storage failed on; returns the replies to publish.

        A handler marks a request storage could not serve with an `unavailable` reply carrying
        `retry = (sender, ref)`. Such a request is neither settled nor lost: it is held and
        retried (see `HeldRequests`); its sender hears `unavailable` once.
        """
        held = self._held
        failed = {reply.retry for reply in replies if reply.retry is not None}
        if not failed:
            self._bus.settle([item for item, _ in items])
            if held.in_outage:
                count = held.recovered()
                _log.warning("storage recovered: processing the %d requests held meanwhile", count)
            for item, _ in items:
                held.forget(item)
            return replies
        done: list[Inbound] = []
        again: list[Inbound] = []
        already_told: set[tuple[str, str | None]] = set()
        now = time.monotonic()
        for item, uplink in items:
            key = (uplink.sender, extract_ref(uplink.payload, limits=self._limits))
            if key not in failed:
                done.append(item)
                held.forget(item)
                continue
            again.append(item)
            if held.told(item):
                already_told.add(key)
            held.mark_told(item, now=now)
        self._bus.settle(done)
        if not held.in_outage:
            _log.warning("storage unavailable: holding requests (their PUBACKs too) and retrying")
        expired = held.hold(again, now=now)
        self.counters.held += len(again) - len(expired)
        if expired:
            # Never acknowledged: the broker closes their senders' connections, they resend.
            self.counters.given_back += len(expired)
            self._bus.fail(expired)
        return [reply for reply in replies if reply.retry is None or reply.retry not in already_told]

    async def _handle(self, kind: str, uplinks: list[Uplink]) -> list[Outbound]:
        handler = self._handlers.get(kind)
        if handler is None:
            return self._errors(uplinks, ErrorCode.BAD_REQUEST, unsupported_kind_message(kind))
        try:
            return await handler(uplinks)
        except Exception:
            # A handler answers bad input itself; reaching here is a bug. Fail its requests only.
            self.counters.handler_failures += 1
            _log.exception("handler for %r failed on a batch of %d requests", kind, len(uplinks))
            return self._errors(uplinks, ErrorCode.INTERNAL, "internal error; retry with the same id")

    def _errors(self, uplinks: Sequence[Uplink], code: ErrorCode, message: str) -> list[Outbound]:
        return [
            error_reply(
                up.sender, ref=extract_ref(up.payload, limits=self._limits), code=code, message=message
            )
            for up in uplinks
        ]

    async def _publish_rejections(self) -> None:
        while self._rejections:
            await self._publish(self._rejections.popleft())

    async def _publish_all(self, replies: Sequence[Outbound]) -> None:
        if self._bus.pipelined and len(replies) > 1:
            # All on the wire in order, then one wait for their acknowledgements: one round
            # trip per batch instead of one per reply.
            outcomes = await self._bus.publish_many([(r.topic, r.payload, r.qos) for r in replies])
            for reply, outcome in zip(replies, outcomes, strict=True):
                self._count_published(reply, outcome)
            return
        for reply in replies:
            await self._publish(reply)

    def _count_published(self, reply: Outbound, outcome: BusError | None) -> None:
        if reply.topic.endswith("/error"):
            self.counters.errors_sent += 1
        if outcome is None:
            self.counters.published += 1
            return
        # What was stored stays stored: the recipient gets it by sync, the sender's retry gets
        # the ack again. Losing the bus for a while must not stop the service.
        self.counters.publish_failures += 1
        _log.error("publishing to %r failed: %s", reply.topic, outcome)

    async def _publish(self, reply: Outbound) -> None:
        if reply.topic.endswith("/error"):
            self.counters.errors_sent += 1
        try:
            await self._bus.publish(reply.topic, reply.payload, qos=reply.qos)
        except BusClosed:
            raise
        except BusError:
            # What was stored stays stored: the recipient gets it by sync, the sender's retry
            # gets the ack again. Losing the bus for a while must not stop the service.
            self.counters.publish_failures += 1
            _log.exception("publishing to %r failed", reply.topic)
        else:
            self.counters.published += 1
