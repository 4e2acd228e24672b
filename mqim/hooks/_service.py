"""`HookService`: the outbox, the trigger and one sender per endpoint, as one async context.

What a server composition starts (a few lines): it gives the broker (anything with
`attach_listener`), the presence tracker (`OnlineView`) and the membership index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from mqim.hooks._config import OUTBOX_FILENAME, HooksConfig
from mqim.hooks._outbox import HookOutbox
from mqim.hooks._sender import EndpointSender
from mqim.hooks._trigger import HookTrigger, MemberLookup, OnlineView

log = logging.getLogger("mqim.hooks")


class ListenerPort(Protocol):
    """The broker as the hooks use it: in-process listeners with a synchronous callback."""

    def attach_listener(
        self, topic_filter: str, callback: Callable[[str, bytes], None]
    ) -> Callable[[], None]: ...


class HookService:
    """Webhooks of one server. Use as an async context manager.

    Args:
        config: The `[hooks]` section (at least one endpoint).
        data_dir: Where the outbox file lives.
        port: The broker (listeners).
        online: Whether a user has a connected session.
        members: Group members.
    """

    def __init__(
        self,
        *,
        config: HooksConfig,
        data_dir: Path,
        port: ListenerPort,
        online: OnlineView,
        members: MemberLookup,
    ) -> None:
        self.config = config
        self.outbox = HookOutbox(
            path=data_dir / OUTBOX_FILENAME,
            max_rows=config.max_outbox_rows,
            max_bytes=config.max_outbox_bytes,
        )
        self.trigger = HookTrigger(config=config, online=online, members=members, sink=self.outbox)
        self.senders = [
            EndpointSender(
                endpoint=endpoint,
                outbox=self.outbox,
                retry_initial_s=config.retry_initial_s,
                retry_max_s=config.retry_max_s,
                max_response_bytes=config.max_response_bytes,
            )
            for endpoint in config.endpoints
        ]
        self._port = port
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        stack = self._stack
        try:
            await self.outbox.open([endpoint.name for endpoint in self.config.endpoints])
            # Last out: what the trigger and senders left is committed after they stopped.
            stack.push_async_callback(self.outbox.close)
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            jobs = [("mqim-hooks-outbox", self.outbox.run()), ("mqim-hooks-trigger", self.trigger.run())]
            jobs += [(f"mqim-hooks:{s.endpoint.name}", s.run()) for s in self.senders]
            for name, job in jobs:
                stack.callback(tasks.create_task(job, name=name).cancel)
            # Before the tasks stop: what was routed until the listeners left becomes events.
            stack.callback(self.trigger.process)
            for topic_filter, callback in self.trigger.filters():
                stack.callback(self._port.attach_listener(topic_filter, callback))
        except BaseException:
            await stack.aclose()
            raise
        names = ", ".join(endpoint.name for endpoint in self.config.endpoints)
        log.info("webhooks on (%s), outbox %s", names, self.outbox.path)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def stats(self) -> dict[str, Any]:
        """Outbox depth, drops and per-endpoint counters (for status and metrics)."""
        return {
            "outbox_rows": self.outbox.rows,
            "outbox_bytes": self.outbox.size,
            "outbox_dropped_full": self.outbox.dropped_full,
            "trigger_dropped": self.trigger.dropped,
            "events": self.trigger.events,
            "endpoints": {
                s.endpoint.name: {
                    "delivered": s.stats.delivered,
                    "rejected": s.stats.rejected,
                    "failed_attempts": s.stats.failed_attempts,
                    "failing": s.stats.failing,
                    "last_status": s.stats.last_status,
                    "last_error": s.stats.last_error,
                }
                for s in self.senders
            },
        }
