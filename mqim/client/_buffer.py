"""The bounded buffer between the connection reader and `MqimClient.messages()`."""

from __future__ import annotations

import asyncio
from collections import deque

from mqim.client._incoming import Incoming


class IncomingBuffer:
    """A bounded FIFO of `Incoming` that can be closed, normally or with an error.

    `put` waits while the buffer is full: a slow consumer slows the reader down instead of
    losing messages that the broker already considers delivered.

    Args:
        max_items: Capacity of the buffer.
    """

    def __init__(self, *, max_items: int) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self._max_items = max_items
        self._items: deque[Incoming] = deque()
        self._cond = asyncio.Condition()
        self._closed = False
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        return self._closed

    async def put(self, item: Incoming) -> bool:
        """Append `item`, waiting for room; return False (dropping it) if the buffer is closed."""
        async with self._cond:
            await self._cond.wait_for(lambda: self._closed or len(self._items) < self._max_items)
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    async def get(self) -> Incoming | None:
        """Return the next item; None once closed normally and drained.

        Raises:
            BaseException: The error the buffer was closed with, once drained.
        """
        async with self._cond:
            await self._cond.wait_for(lambda: bool(self._items) or self._closed)
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            if self._error is not None:
                raise self._error
            return None

    async def close(self, error: BaseException | None = None) -> None:
        """Close the buffer: waiting getters drain it, then get None (or `error`)."""
        async with self._cond:
            if not self._closed:
                self._closed = True
                self._error = error
            self._cond.notify_all()
