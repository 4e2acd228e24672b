"""`HookTrigger`: turns routed messages and presence changes into outbox events.

Attached as in-process listeners of the broker (`im/v1/u/+/msg`, `im/v1/g/+/msg`,
`im/v1/presence/+`), whose callbacks run inside routing: they only look at the topic, check a
direct recipient's connection (a set lookup) and append to a bounded queue, so delivery is never
delayed. The owned task (`run`) parses the payloads and writes the events to the outbox.

- `u/{peer}/msg` from `sender != peer`, `peer` without a connected session: one
  `message.offline` per endpoint that asks for it (the sender's own copy on `u/{sender}/msg`
  is never an event).
- `g/{group}/msg`: one per member other than the sender without a connected session (checked
  when the task handles it, a moment after routing).
- `presence/{user}`: `user.online` / `user.offline` (the broker publishes one per transition).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Final, Literal, Protocol

from mqim._util import worth_logging
from mqim.hooks._config import HookEventName, HooksConfig
from mqim.hooks._events import StoredMessage, message_event, presence_event, preview_of, read_message
from mqim.protocol import PREFIX

log = logging.getLogger("mqim.hooks")

DIRECT_FILTER: Final = f"{PREFIX}/u/+/msg"
GROUP_FILTER: Final = f"{PREFIX}/g/+/msg"
PRESENCE_FILTER: Final = f"{PREFIX}/presence/+"

_USER_LEVEL: Final = len(PREFIX.split("/")) + 1  # im/v1/u/{user}/msg -> index of {user}


class OnlineView(Protocol):
    """Whether a user has a connected session (the broker's presence knowledge)."""

    def online(self, user: str) -> bool: ...


class MemberLookup(Protocol):
    """The current members of a group (`mqim.acl.MembershipIndex`)."""

    def members_of(self, group: str) -> Collection[str]: ...


class EventSink(Protocol):
    """Where events go (`HookOutbox.add`)."""

    def add(self, *, endpoint: str, event: str, delivery: str, body: bytes, now: float) -> None: ...


_Kind = Literal["u", "g", "p"]


class HookTrigger:
    """Listener callbacks plus the task that turns what they saw into events.

    Args:
        config: Endpoints (which events each wants, previews) and bounds.
        online: Connected-session lookup.
        members: Group members lookup.
        sink: The outbox.
        clock: Wall-clock seconds.
    """

    def __init__(
        self,
        *,
        config: HooksConfig,
        online: OnlineView,
        members: MemberLookup,
        sink: EventSink,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._online = online
        self._members = members
        self._sink = sink
        self._clock = clock
        self._preview_chars = config.preview_chars
        self._max_pending = config.max_pending_triggers
        self._wants: dict[HookEventName, list[tuple[str, bool]]] = {}
        for endpoint in config.endpoints:
            for event in endpoint.events:
                self._wants.setdefault(event, []).append((endpoint.name, endpoint.include_preview))
        self._pending: deque[tuple[_Kind, str, bytes]] = deque()
        self._wake = asyncio.Event()
        self.dropped = 0
        """Routed messages dropped because `max_pending_triggers` were waiting."""
        self.events = 0
        """Events handed to the outbox."""

    def filters(self) -> list[tuple[str, Callable[[str, bytes], None]]]:
        """The listener filters and callbacks the configured events need."""
        wanted: list[tuple[str, Callable[[str, bytes], None]]] = []
        if "message.offline" in self._wants:
            wanted += [(DIRECT_FILTER, self.on_direct), (GROUP_FILTER, self.on_group)]
        if "user.online" in self._wants or "user.offline" in self._wants:
            wanted.append((PRESENCE_FILTER, self.on_presence))
        return wanted

    # -- listener callbacks (inside routing: constant time) ------------------------------------
    def on_direct(self, topic: str, payload: bytes) -> None:
        """`u/{peer}/msg` was routed."""
        user = topic.split("/")[_USER_LEVEL]
        if not self._online.online(user):
            self._queue("u", user, payload)

    def on_group(self, topic: str, payload: bytes) -> None:
        """`g/{group}/msg` was routed."""
        self._queue("g", topic.split("/")[_USER_LEVEL], payload)

    def on_presence(self, topic: str, payload: bytes) -> None:
        """`presence/{user}` was published."""
        self._queue("p", topic.split("/")[_USER_LEVEL], payload)

    def _queue(self, kind: _Kind, name: str, payload: bytes) -> None:
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self.dropped += 1
            if worth_logging(self.dropped):
                log.warning("hooks: %d routed messages dropped before becoming events", self.dropped)
        self._pending.append((kind, name, payload))
        self._wake.set()

    # -- the task --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Handle what the callbacks queued, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            self.process()

    def process(self) -> int:
        """Turn everything queued into outbox events now; returns how many events."""
        before = self.events
        while self._pending:
            kind, name, payload = self._pending.popleft()
            if kind == "p":
                self._presence(name, payload)
                continue
            message = read_message(payload)
            if message is None:
                continue
            if kind == "u":
                if message.sender != name:  # the sender's own copy is not for a recipient
                    self._message(message, name, None)
                continue
            for member in sorted(self._members.members_of(name)):
                if member != message.sender and not self._online.online(member):
                    self._message(message, member, name)
        return self.events - before

    def _message(self, message: StoredMessage, recipient: str, group: str | None) -> None:
        now = self._clock()
        preview = preview_of(message.text, self._preview_chars)
        plain: tuple[str, bytes] | None = None
        full: tuple[str, bytes] | None = None
        for endpoint, with_preview in self._wants.get("message.offline", ()):
            if with_preview and preview is not None:
                full = full or message_event(
                    message, recipient=recipient, group=group, now_ms=int(now * 1000), preview=preview
                )
                delivery, body = full
            else:
                plain = plain or message_event(
                    message, recipient=recipient, group=group, now_ms=int(now * 1000), preview=None
                )
                delivery, body = plain
            self._sink.add(endpoint=endpoint, event="message.offline", delivery=delivery, body=body, now=now)
            self.events += 1

    def _presence(self, user: str, payload: bytes) -> None:
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(body, dict):
            return
        state, epoch = body.get("state"), body.get("epoch")
        if state not in ("online", "offline") or not isinstance(epoch, int) or isinstance(epoch, bool):
            return
        now = self._clock()
        event, delivery, data = presence_event(user=user, state=state, epoch=epoch, now_ms=int(now * 1000))
        for endpoint, _preview in self._wants.get(event, ()):
            self._sink.add(endpoint=endpoint, event=event, delivery=delivery, body=data, now=now)
            self.events += 1
