"""Fan-out beyond sessions: in-process listeners and consumers (`BrokerPort`), the publishers'
holds they and logic workers take (back-pressure on publishers while too many are in force), and
the held requests a leaving worker hands to another member of its share group.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Protocol

from mqim.acl import topic_matches
from mqim.broker._committer import Committer
from mqim.broker._holds import Hold
from mqim.broker._router import SubscriptionIndex
from mqim.broker._scopes import filter_allows
from mqim.broker._session import Session
from mqim.broker._settings import BrokerSettings
from mqim.broker._shared_subs import SharedIndex, parse_shared
from mqim.broker._traffic import Traffic

log = logging.getLogger("mqim.broker")


ConsumerCallback = Callable[[str, bytes, Hold | None], None]
"""An in-process consumer: `(topic, payload, hold)`; it must settle or fail a hold it is given."""


class Reader(Protocol):
    """A publisher's connection the hub may pause for back-pressure."""

    def resume_publishing(self) -> None: ...


class Fanout:
    """`Hub`'s in-process listeners, holds and worker hand-over (a mixin: the state is the hub's)."""

    settings: BrokerSettings
    sessions: dict[str, Session]
    index: SharedIndex
    committer: Committer
    traffic: Traffic
    listeners: SubscriptionIndex[int]
    held: int
    _listener_callbacks: dict[int, Callable[[str, bytes], None]]
    _consumers: dict[int, ConsumerCallback]
    _has_listeners: bool
    _paused: set[Reader]
    _listener_ids: itertools.count[int]

    def _hand_over_held(self, session: Session) -> None:
        """A logic worker left: give its held requests to another connected member of its share.

        A request delivered through `$share/{group}/...` belongs to the group, not to one
        worker: another connected member takes it (and the hold), so its sender's PUBACK does
        not wait for this worker to come back. A worker's plain subscription keeps its requests
        (persistent: redelivered when it reconnects; clean: failed, the senders resend).
        """
        shares = [f for f in session.subscriptions if parse_shared(f) is not None]
        if not shares:
            return
        moved = 0
        for msg in session.held():
            if msg.released:
                continue  # QoS 2 past PUBREC: the worker has it; only its PUBCOMP is missing
            target = self._other_member(session, shares, msg.topic)
            if target is None:
                continue
            hold = msg.hold
            session.release_held(msg)
            target.deliver(msg.topic, msg.topic_enc, msg.payload, msg.qos, hold=hold)
            if hold is not None:
                hold.settle()  # the target took it; this session's share of the hold ends
            moved += 1
        if moved:
            self.committer.kick()
            log.info("worker %r left: %d held requests handed to other workers", session.client_id, moved)

    def _other_member(self, session: Session, shares: list[str], topic: str) -> Session | None:
        for share_filter in shares:
            shared = parse_shared(share_filter)
            if shared is None or not topic_matches(shared[1], topic):
                continue
            for client_id in self.index.share_groups().get(share_filter, ()):
                other = self.sessions.get(client_id)
                if (
                    other is not None
                    and other is not session
                    and other.conn is not None
                    and filter_allows(other, share_filter, topic)
                ):
                    return other
        return None

    # -- in-process listeners (BrokerPort) -----------------------------------------------------
    def attach_listener(
        self, topic_filter: str, callback: Callable[[str, bytes], None]
    ) -> Callable[[], None]:
        listener_id = next(self._listener_ids)
        self._listener_callbacks[listener_id] = callback
        self._listener_callbacks_changed()
        self.listeners.add(listener_id, topic_filter, 2)

        def detach() -> None:
            self._listener_callbacks.pop(listener_id, None)
            self.listeners.remove(listener_id, topic_filter)
            self._listener_callbacks_changed()

        return detach

    def attach_consumer(self, topic_filter: str, callback: ConsumerCallback) -> Callable[[], None]:
        """Like `attach_listener`, for a consumer that takes the publisher's hold (see route)."""
        listener_id = next(self._listener_ids)
        self._consumers[listener_id] = callback
        self._listener_callbacks_changed()
        self.listeners.add(listener_id, topic_filter, 2)

        def detach() -> None:
            self._consumers.pop(listener_id, None)
            self.listeners.remove(listener_id, topic_filter)
            self._listener_callbacks_changed()

        return detach

    def _listener_callbacks_changed(self) -> None:
        # route() skips the listener index while no listener or consumer exists.
        self._has_listeners = bool(self._listener_callbacks or self._consumers)

    # -- back-pressure (HoldCounter) -----------------------------------------------------------
    def hold_opened(self) -> None:
        self.held += 1

    def hold_durable_ns(self, elapsed_ns: int) -> None:
        self.traffic.durable_latency.observe_ns(elapsed_ns)

    def hold_closed(self) -> None:
        self.held -= 1
        if self._paused and self.held <= self.settings.max_held_uplinks * 9 // 10:
            paused, self._paused = self._paused, set()
            for reader in paused:
                reader.resume_publishing()

    def saturated(self, reader: Reader) -> bool:
        """Whether too many publishes are held; if so `reader` is resumed when enough settle."""
        if self.held < self.settings.max_held_uplinks:
            return False
        self._paused.add(reader)
        return True

    def forget_reader(self, reader: Reader) -> None:
        self._paused.discard(reader)
