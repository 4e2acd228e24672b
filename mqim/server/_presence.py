"""Presence: the broker publishes `im/v1/presence/{user}` (retained) as users come and go.

Payload `{"v":1,"user","state":"online"|"offline","ts","epoch"}`. A `HubObserver`:

- A user is online while at least one of its sessions is connected (any number of devices,
  each its own client id); `offline` is published only when the last one goes, whatever the
  reason (DISCONNECT, lost socket, will, keepalive expiry, takeover, shutdown).
- Every connection gets a new `epoch`, greater than every epoch published for that user before
  (also across restarts: it is at least the current time in milliseconds and above the
  retained one). An `offline` carrying an epoch older than the retained `online` is not
  published, so a late disconnect notice can never overwrite a newer connection's `online`.
- At start-up, retained `online` presences left by a previous run (whose connections died with
  it) are turned `offline`.

Only identities of kind `user` with a valid id have presence. The state is bounded by the
connected sessions; everything else lives in the retained messages, which the broker counts as
its own (`max_server_retained`), apart from what clients retain (`max_retained`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from mqim.broker import Hub, Session
from mqim.protocol import PREFIX, Presence, PresenceState, is_valid_id, presence_topic

log = logging.getLogger("mqim.broker.presence")

_PRESENCE_PREFIX = f"{PREFIX}/presence/"


def read_presence(payload: bytes) -> tuple[str, int] | None:
    """`(state, epoch)` of a retained presence payload, or None if it is not one. Pure."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    state, epoch = body.get("state"), body.get("epoch")
    if not isinstance(state, str) or not isinstance(epoch, int) or isinstance(epoch, bool):
        return None
    return state, epoch


def supersedes(new_state: str, new_epoch: int, current: tuple[str, int] | None) -> bool:
    """Whether a presence `(new_state, new_epoch)` may replace the `current` retained one. Pure.

    Any newer epoch wins; at the same epoch an `offline` ends its own connection's `online`;
    an older epoch never wins (that is the late disconnect of an earlier connection).
    """
    if current is None:
        return True
    state, epoch = current
    if new_epoch != epoch:
        return new_epoch > epoch
    return new_state == "offline" or state != "offline"


class PresenceTracker:
    """Publishes retained presence from session events (a `HubObserver`).

    Args:
        hub: The broker's hub (retained store and routing).
        clock: Wall-clock time in seconds (epochs and `ts` derive from it).
    """

    def __init__(self, *, hub: Hub, clock: Callable[[], float] = time.time) -> None:
        self._hub = hub
        self._clock = clock
        self._online: dict[str, set[str]] = {}
        self.published = 0

    def start(self) -> int:
        """Turn retained `online` presences of a previous run `offline`; returns how many."""
        stale = 0
        for topic, (payload, _qos) in list(self._hub.retained.items()):
            if not topic.startswith(_PRESENCE_PREFIX):
                continue
            user = topic[len(_PRESENCE_PREFIX) :]
            current = read_presence(payload)
            if current is None or current[0] != "online" or user in self._online or not is_valid_id(user):
                continue
            self._publish(user, "offline", current[1])
            stale += 1
        if stale:
            log.info("%d users marked offline after the restart", stale)
        return stale

    def online(self, user: str) -> bool:
        """Whether `user` has a connected session."""
        return user in self._online

    # -- HubObserver ---------------------------------------------------------------------------
    def session_connected(self, session: Session) -> None:
        """A session got a connection: a new epoch, `online`."""
        user = self._user(session)
        if user is None:
            return
        self._online.setdefault(user, set()).add(session.client_id)
        epoch = max(self._now_ms(), self._retained_epoch(user) + 1)
        self._publish(user, "online", epoch)

    def session_disconnected(self, session: Session) -> None:
        """A session lost its connection: `offline` if it was the user's last one."""
        user = self._user(session)
        if user is None:
            return
        sessions = self._online.get(user)
        if sessions is None:
            return
        sessions.discard(session.client_id)
        if sessions:
            return  # another device is still connected
        del self._online[user]
        self._publish(user, "offline", self._retained_epoch(user))

    def delivered(self, session: Session, topic: str, payload: bytes) -> None:
        """Not used by presence."""

    # -- internals -----------------------------------------------------------------------------
    @staticmethod
    def _user(session: Session) -> str | None:
        identity = session.identity
        if identity is None or identity.kind != "user" or not is_valid_id(identity.user):
            return None
        return identity.user

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _retained_epoch(self, user: str) -> int:
        retained = self._hub.retained.get(presence_topic(user))
        current = read_presence(retained[0]) if retained is not None else None
        return current[1] if current is not None else 0

    def _publish(self, user: str, state: PresenceState, epoch: int) -> None:
        topic = presence_topic(user)
        retained = self._hub.retained.get(topic)
        current = read_presence(retained[0]) if retained is not None else None
        if not supersedes(state, epoch, current):
            log.info(
                "late %s of %r (epoch %d) not published over epoch %d",
                state,
                user,
                epoch,
                current[1] if current else 0,
            )
            return
        payload = Presence(user=user, state=state, ts=self._now_ms(), epoch=epoch).to_json()
        self._hub.publish_local(topic, payload, qos=1, retain=True)
        self.published += 1
