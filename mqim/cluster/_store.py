"""The session store a cluster node's broker uses: the shared Redis store, scoped to the node.

It delegates every write to the shared `SessionStore` (a `RedisSessionStore`), and changes two
things:

* `load()` reads only the sessions this node owns (the cluster's client registry), so nodes do
  not all load every persistent session at start; the others are loaded on demand when their
  client connects (`ClusterLink.claim`).
* `flush()` also waits until the forwards queued for other nodes are written to their streams,
  so a publisher's PUBACK (held until the commit, see `Committer`) means the message is in Redis
  for every node that must deliver it. While Redis is unreachable it keeps retrying instead of
  failing: acknowledgements wait, nothing is lost, and the commit loop survives the outage.
* While the node is fenced (`cluster/_fence.py`) every write is dropped: the sessions may belong to
  another node by now, and this node's stale copy must not overwrite theirs.
* `enqueue()` tells the link which session queued a message, so it can record the message's
  cluster id with it (`SeenIndex`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from mqim.storage import QueuedMessage, RetainedRecord, SessionStore, StoredSession, Unavailable

log = logging.getLogger("mqim.cluster")

RETRY_FIRST_S: Final = 0.05
RETRY_MAX_S: Final = 1.0


class ClusterSessionStore(SessionStore):
    """A node's view of the shared session store.

    Args:
        inner: The shared store.
        load: Reads this node's sessions and the retained messages (`ClusterLink`).
        drained: Returns once everything queued for other nodes before the call is written.
        closing: True once the node is stopping: `flush()` then gives up retrying.
    """

    def __init__(
        self,
        *,
        inner: SessionStore,
        load: Callable[[], Awaitable[tuple[list[StoredSession], list[RetainedRecord]]]],
        drained: Callable[[], Awaitable[None]],
        closing: Callable[[], bool],
        serving: Callable[[], bool] = lambda: True,
        enqueued: Callable[[str], None] | None = None,
    ) -> None:
        self.inner = inner
        self._load = load
        self._drained = drained
        self._closing = closing
        self._serving = serving
        self._enqueued = enqueued

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def load(self) -> tuple[list[StoredSession], list[RetainedRecord]]:
        return await self._load()

    def save_session(
        self, client_id: str, *, user: str | None, subscriptions: dict[str, int], disconnected_ts: int | None
    ) -> None:
        if self._serving():
            self.inner.save_session(
                client_id, user=user, subscriptions=subscriptions, disconnected_ts=disconnected_ts
            )

    def delete_session(self, client_id: str) -> None:
        if self._serving():
            self.inner.delete_session(client_id)

    def enqueue(self, client_id: str, message: QueuedMessage) -> None:
        if self._serving():
            self.inner.enqueue(client_id, message)
            if self._enqueued is not None:
                self._enqueued(client_id)

    def dequeue(self, client_id: str, qids: Sequence[int]) -> None:
        if self._serving():
            self.inner.dequeue(client_id, qids)

    def set_retained(self, record: RetainedRecord) -> None:
        if self._serving():
            self.inner.set_retained(record)

    async def flush(self) -> None:
        """Wait for the session writes and the forwards queued before the call.

        Raises:
            Unavailable: Redis is unreachable and the node is stopping.
        """
        delay = RETRY_FIRST_S
        warned = False
        while True:
            try:
                await self.inner.flush()
                break
            except Unavailable as exc:
                if self._closing():
                    raise
                if not warned:
                    log.error("session store unavailable, acknowledgements wait: %s", exc)
                    warned = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        await self._drained()
        if warned:
            log.info("session store available again")
