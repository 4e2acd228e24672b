"""Cluster mode: what keeps a session's messages once and only once while it changes node.

A session moves between nodes in three ways: a live node hands it over (a `kick`), a surviving
node adopts it from a dead one, or a fenced node takes it back (see `cluster/_fence.py`). In every
case there is a moment when two places may receive its messages: the old node's stream (still
in the other nodes' route tables) and the new one. Nothing is lost if the old place keeps
receiving until the new one is known everywhere ("make before break"), and nothing is delivered
twice if every copy is recognised. This module holds the three pieces for that:

* `SeenIndex`: the message ids (`Forward.mid`, one per published message, the same in every
  node stream it is written to) each local persistent session already queued. It is persisted
  with the session (`RedisSessionStore.record_seen`, in the same MULTI/EXEC as the enqueue), so
  the node that takes a session over knows them too.
* `Moved`: sessions this node handed over, for a grace period: their filters stay in this node's
  route set, and what still arrives for them here is sent on to the new node as a targeted entry.
* `deliver_to`: delivery of one message to named local sessions only (adopted sessions for the
  entries of a dead node's stream, a moved session for a targeted entry), skipping the sessions
  that already have it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from cachetools import FIFOCache

from mqim.acl import Action, topic_matches
from mqim.broker import Hub

SEEN_MAX: Final = 200_000
"""Message ids remembered by one node (oldest forgotten first)."""


class SeenIndex:
    """Message id -> the local sessions that already queued it (bounded, oldest out first).

    First in, first out (`cachetools.FIFOCache`): a message id is asked about while its copies
    can still arrive, which is shortly after it was first queued, so a look-up does not keep it.

    Raises:
        ValueError: `limit` is below 1.
    """

    def __init__(self, *, limit: int = SEEN_MAX) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._by_mid: FIFOCache[str, set[str]] = FIFOCache(maxsize=limit)

    def __len__(self) -> int:
        return len(self._by_mid)

    def add(self, mid: str, client_id: str) -> None:
        """Record that `client_id` queued `mid`."""
        holders = self._by_mid.get(mid)
        if holders is None:
            holders = self._by_mid[mid] = set()  # the oldest id leaves when full
        holders.add(client_id)

    def has(self, mid: str, client_id: str) -> bool:
        """True when `client_id` already queued `mid`."""
        holders = self._by_mid.get(mid)
        return holders is not None and client_id in holders

    def holders(self, mid: str) -> set[str]:
        """The sessions that already queued `mid` (a copy)."""
        return set(self._by_mid.get(mid, ()))


@dataclass(frozen=True, slots=True)
class MovedSession:
    """A session handed over to `node`; `filters` stay routed here until `until` (monotonic)."""

    node: str
    filters: tuple[str, ...]
    until: float


class Moved:
    """Sessions this node handed over recently (see the module docstring)."""

    def __init__(self) -> None:
        self._sessions: dict[str, MovedSession] = {}

    def __contains__(self, client_id: str) -> bool:
        return client_id in self._sessions

    def add(self, client_id: str, *, node: str, filters: tuple[str, ...], grace_s: float) -> None:
        """Remember that `client_id` moved to `node` (its plain filters only: a share group is
        served by another member meanwhile)."""
        plain = tuple(f for f in filters if not f.startswith("$share/"))
        self._sessions[client_id] = MovedSession(node, plain, time.monotonic() + grace_s)

    def discard(self, client_id: str) -> None:
        """Forget `client_id` (it came back to this node)."""
        self._sessions.pop(client_id, None)

    def node_of(self, client_id: str) -> str | None:
        """Where `client_id` went, while its grace lasts."""
        moved = self._sessions.get(client_id)
        return None if moved is None else moved.node

    def holds(self, topic_filter: str) -> bool:
        """True while a moved session keeps `topic_filter` in this node's routes."""
        return any(topic_filter in moved.filters for moved in self._sessions.values())

    def matching(self, topic: str) -> list[tuple[str, str]]:
        """(client id, node) of the moved sessions a message on `topic` is for."""
        return [
            (client_id, moved.node)
            for client_id, moved in self._sessions.items()
            if any(topic_matches(f, topic) for f in moved.filters)
        ]

    def expire(self) -> list[str]:
        """Drop the sessions whose grace ended; returns the filters they held."""
        now = time.monotonic()
        gone = [cid for cid, moved in self._sessions.items() if moved.until <= now]
        filters: list[str] = []
        for client_id in gone:
            filters.extend(self._sessions.pop(client_id).filters)
        return filters


def deliver_to(
    hub: Hub, client_ids: set[str], topic: str, payload: bytes, qos: int, *, mid: str, seen: SeenIndex
) -> tuple[bool, set[str]]:
    """Deliver a message to those of `client_ids` that are local, subscribed and without it.

    The same rules as `Hub.route` for each session (receive ACL, QoS downgrade, a full service
    queue refuses); no in-process listener is called (the message was routed on its own node).

    Returns:
        (durable, absent): durable when a persistent session queued a QoS>0 copy (the caller
        commits before acknowledging the entry); absent: the ids that have no session here.
    """
    matches = hub.index.match(topic)
    durable = False
    absent: set[str] = set()
    topic_enc: bytes | None = None
    for client_id in client_ids:
        session = hub.sessions.get(client_id)
        if session is None:
            absent.add(client_id)
            continue
        sub_qos = matches.get(client_id)
        if sub_qos is None or (mid and seen.has(mid, client_id)):
            continue
        identity = session.identity
        if identity is not None and not hub.acl.allowed(identity, Action.RECEIVE, topic):
            hub.counters.acl_denied_receive += 1
            continue
        out_qos = min(qos, sub_qos)
        if topic_enc is None:
            topic_enc = hub.encode_topic(topic)
        if session.deliver(topic, topic_enc, payload, out_qos).refused:
            hub.counters.refused_full += 1
            continue
        hub.counters.delivered += 1
        if out_qos and session.persistent:
            durable = True
    return durable, absent
