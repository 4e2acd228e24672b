"""Durable commits: `Committer` flushes the session store in batches and releases the
acknowledgements that waited for them, so a publisher's PUBACK leaves only once its message is
safe (MQTT-4.6.0-2 order is kept by the connections, which release in order).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol

from mqim.storage import SessionStore, StorageError

log = logging.getLogger("mqim.broker")


class AckWaiter(Protocol):
    """A connection holding acknowledgements until a commit generation is durable.

    It must check `Committer.lost` for the generation of each acknowledgement it releases.
    """

    def release_acks(self, committed: int) -> None: ...


class Committer:
    """Flushes the session store in batches and releases acknowledgements that waited for it.

    `generation` is the commit that will include writes queued now; a PUBACK tagged with it is
    sent once `committed >= tag`. One flush covers every write queued before it started.
    """

    def __init__(self, *, store: SessionStore | None) -> None:
        self._store = store
        self.generation = 1
        self.committed = 0
        self._waiters: set[AckWaiter] = set()
        self._wake = asyncio.Event()
        # Generations whose flush lost writes (disk full, I/O error): an acknowledgement tagged
        # with one of them must never leave. Bounded: a connection waits at most a few of them.
        self.lost: deque[int] = deque(maxlen=1024)
        self.failures = 0
        self._failing = False

    @property
    def durable(self) -> bool:
        return self._store is not None

    def wait(self, waiter: AckWaiter) -> int:
        """Register `waiter` for the next commit; returns the generation tag to wait for."""
        self._waiters.add(waiter)
        self._wake.set()
        return self.generation

    def kick(self) -> None:
        """Ask for a commit soon without waiting for it (writes nobody acknowledges yet)."""
        self._wake.set()

    def forget(self, waiter: AckWaiter) -> None:
        self._waiters.discard(waiter)

    async def run(self) -> None:
        """Commit loop; runs until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.commit()

    async def commit(self) -> None:
        """Flush everything queued so far and release the waiting acknowledgements."""
        generation = self.generation
        self.generation += 1
        if self._store is not None:
            try:
                await self._store.flush()
            except StorageError as exc:
                # The writes of this generation are lost: the acknowledgements that waited for
                # them are withheld (their clients resend); the broker itself keeps running.
                self.failures += 1
                self.lost.append(generation)
                if not self._failing:
                    self._failing = True
                    log.error("session store cannot commit (%s): acknowledgements needing it withheld", exc)
            else:
                if self._failing:
                    self._failing = False
                    log.warning("session store commits again (%d failed commits meanwhile)", self.failures)
        self.committed = generation
        waiters = list(self._waiters)
        self._waiters.clear()
        for waiter in waiters:
            waiter.release_acks(generation)
