"""Account look-ups for the service, cached: every send checks its recipient."""

from __future__ import annotations

import time
from collections.abc import Callable

from mqim.logic._cache import TtlLru
from mqim.storage import Storage, UserRecord


class UserDirectory:
    """`storage.get_user` behind a bounded LRU with a short TTL.

    Absent accounts are cached too, so a flood of sends to a non-existent user costs one
    storage read per TTL. The price is that a change is seen up to `ttl_s` seconds late,
    unless `forget()` is called by whoever made it.

    Args:
        storage: Where accounts live.
        maxsize: Most cached accounts.
        ttl_s: How long a cached answer is trusted, in seconds.
        monotonic: Time source for the TTL, in seconds.
    """

    def __init__(
        self,
        *,
        storage: Storage,
        maxsize: int,
        ttl_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._storage = storage
        self._cache: TtlLru[str, UserRecord | None] = TtlLru(maxsize=maxsize, ttl=ttl_s)
        self._monotonic = monotonic

    async def get(self, user_id: str) -> UserRecord | None:
        """The account `user_id`, or None; raises `StorageError` when storage fails."""
        hit, record = self._cache.get(user_id, now=self._monotonic())
        if hit:
            return record
        record = await self._storage.get_user(user_id)
        self._cache.put(user_id, record, now=self._monotonic())
        return record

    def forget(self, user_id: str) -> None:
        """Drop the cached answer for `user_id`, so the next look-up reads storage."""
        self._cache.discard(user_id)
