"""Sends waiting for their ack or error, matched by message id."""

from __future__ import annotations

import asyncio

from mqim.client._exceptions import SendError
from mqim.protocol import Ack, ErrorPayload


class PendingAcks:
    """The futures of sends that wait for an `ack` (or an `error` whose `ref` is their id).

    The number of entries is bounded by the client's `max_pending_sends` semaphore.
    """

    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[Ack]] = {}

    def __len__(self) -> int:
        return len(self._futures)

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._futures

    def register(self, message_id: str) -> asyncio.Future[Ack]:
        """Start waiting for `message_id`; raises ValueError if it is already awaited."""
        if message_id in self._futures:
            raise ValueError(f"a send with id {message_id!r} is already waiting for its ack")
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._futures[message_id] = future
        return future

    def resolve_ack(self, ack: Ack) -> bool:
        """Complete the send waiting for `ack.id`; return False if none waits."""
        future = self._futures.get(ack.id)
        if future is None or future.done():
            return False
        future.set_result(ack)
        return True

    def resolve_error(self, error: ErrorPayload) -> bool:
        """Fail the send whose id is `error.ref` with `SendError`; return False if none waits."""
        if error.ref is None:
            return False
        future = self._futures.get(error.ref)
        if future is None or future.done():
            return False
        future.set_exception(SendError(error))
        return True

    def discard(self, message_id: str) -> None:
        """Stop waiting for `message_id` (its sender is done with it)."""
        future = self._futures.pop(message_id, None)
        if future is not None and future.done() and not future.cancelled():
            # Mark an unread exception as retrieved so asyncio does not log it at GC.
            future.exception()

    def fail_all(self, exc: BaseException) -> None:
        """Fail every waiting send with `exc` (the client closed or gave up reconnecting)."""
        for future in self._futures.values():
            if not future.done():
                future.set_exception(exc)
