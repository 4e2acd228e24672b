"""`EndpointSender`: delivers one endpoint's outbox rows, in order, signed, with back-off.

One POST at a time per endpoint, in outbox order, so events reach a receiver in the order they
were triggered (per recipient and overall). Answers:

- 2xx: delivered, the row is deleted;
- 4xx other than 408 and 429: the receiver refuses this event for good; it is dropped, counted
  in `rejected` and logged (retrying would only block every later event);
- anything else (5xx, 408, 429, no answer, timeout, TLS or connection errors): retried after a
  pause that starts at `retry_initial_s` and doubles up to `retry_max_s`, for as long as the
  row stays in the outbox (its bound drops the oldest rows).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mqim.hooks._config import HookEndpoint
from mqim.hooks._exceptions import HookHttpError
from mqim.hooks._http import HttpClient
from mqim.hooks._outbox import HookOutbox, OutboxRow
from mqim.hooks._signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

log = logging.getLogger("mqim.hooks")

FETCH_BATCH: Final = 100
"""Rows read from the outbox at once per endpoint."""

_RETRY_STATUSES: Final = frozenset({408, 429})


@dataclass(slots=True)
class EndpointStats:
    """Counters of one endpoint (read by status and metrics)."""

    delivered: int = 0
    rejected: int = 0
    failed_attempts: int = 0
    failing: bool = False
    last_status: int | None = None
    last_error: str | None = None


def signed_headers(
    endpoint: HookEndpoint, *, event: str, delivery: str, body: bytes, now: float
) -> dict[str, str]:
    """The mqim headers of one attempt: event, delivery id, timestamp and signature."""
    timestamp = int(now)
    return {
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(endpoint.secret.get_secret_value(), timestamp, body),
    }


def client_for(endpoint: HookEndpoint, *, max_response_bytes: int) -> HttpClient:
    """An HTTP client for the endpoint's URL."""
    return HttpClient(
        url=endpoint.url,
        timeout_s=endpoint.timeout_s,
        cafile=endpoint.cafile,
        max_response_bytes=max_response_bytes,
    )


class EndpointSender:
    """Delivers the rows of one endpoint until cancelled (`run`).

    Args:
        endpoint: Where to POST.
        outbox: The shared outbox.
        retry_initial_s: First pause after a failure.
        retry_max_s: Longest pause.
        max_response_bytes: Response body bytes read.
        clock: Wall-clock seconds (the signed timestamp).
    """

    def __init__(
        self,
        *,
        endpoint: HookEndpoint,
        outbox: HookOutbox,
        retry_initial_s: float,
        retry_max_s: float,
        max_response_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = endpoint
        self.stats = EndpointStats()
        self._outbox = outbox
        self._initial = retry_initial_s
        self._max = retry_max_s
        self._clock = clock
        self._client = client_for(endpoint, max_response_bytes=max_response_bytes)

    async def run(self) -> None:
        """Deliver rows as they are committed, in id order."""
        name = self.endpoint.name
        signal = self._outbox.signal(name)
        last = 0
        try:
            while True:
                signal.clear()
                rows = await self._outbox.fetch(name, after=last, limit=FETCH_BATCH)
                if not rows:
                    await signal.wait()
                    continue
                for row in rows:
                    await self._deliver(row)
                    self._outbox.done(row.id)
                    last = row.id
        finally:
            await self._client.close()

    async def _deliver(self, row: OutboxRow) -> None:
        delay = self._initial
        while True:
            headers = signed_headers(
                self.endpoint, event=row.event, delivery=row.delivery, body=row.body, now=self._clock()
            )
            try:
                status = await self._client.post(row.body, headers)
            except HookHttpError as exc:
                self._failed(f"{exc}")
            else:
                self.stats.last_status = status
                if 200 <= status < 300:
                    self._recovered()
                    self.stats.delivered += 1
                    return
                if 400 <= status < 500 and status not in _RETRY_STATUSES:
                    self.stats.rejected += 1
                    log.warning(
                        "hook %s refused event %s with HTTP %d: dropped",
                        self.endpoint.name,
                        row.delivery,
                        status,
                    )
                    return
                self._failed(f"HTTP {status}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max)

    def _failed(self, why: str) -> None:
        stats = self.stats
        stats.failed_attempts += 1
        stats.last_error = why
        if not stats.failing:
            stats.failing = True
            log.warning("hook %s failing (%s): retrying with back-off", self.endpoint.name, why)

    def _recovered(self) -> None:
        if self.stats.failing:
            self.stats.failing = False
            log.info("hook %s delivering again", self.endpoint.name)
