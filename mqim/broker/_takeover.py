"""Cluster mode in the hub: the `ClusterPort` it was given, and the take-over and hand-over of
sessions between nodes (the cluster calls these instead of editing the hub's sessions and index).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mqim._util import Deadlines
from mqim.broker._ports import ClusterPort
from mqim.broker._session import Session
from mqim.broker._shared_subs import SharedIndex
from mqim.storage import RetainedRecord, StoredSession


@runtime_checkable
class Evictable(Protocol):
    """A connection that can be closed at once, leaving its session to another owner."""

    def evict(self, reason: str, *, will: bool = False) -> None: ...


class ClusterSessions:
    """`Hub`'s cluster mode (a mixin: the state is the hub's)."""

    sessions: dict[str, Session]
    index: SharedIndex
    _cluster: ClusterPort | None
    _expiry: Deadlines[str]

    if TYPE_CHECKING:

        def restore(self, sessions: list[StoredSession], retained: list[RetainedRecord]) -> None: ...

    def attach_cluster(self, port: ClusterPort) -> None:
        """Join this node's hub to a cluster (before the broker starts; once).

        From then on a local publish is also offered to `port.forward`, a CONNECT with a client id
        waits for `port.claim`, and the index reports its filters to `port.filter_changed` and
        asks `port.take_local` which node serves a share group.
        """
        if self._cluster is not None:
            raise RuntimeError("a cluster port is attached already")
        self._cluster = port
        self.index.on_filter = port.filter_changed
        self.index.share_router = port

    async def claim_session(self, client_id: str, clean: bool) -> bool:
        """Take `client_id` over before its CONNECT is accepted (cluster mode: it may live on
        another node); False refuses the CONNECT. True at once without a cluster."""
        cluster = self._cluster
        return True if cluster is None else await cluster.claim(client_id, clean)

    def take_over(self, sessions: Iterable[StoredSession]) -> int:
        """Load persistent sessions this node now owns (a claimed client id, an adopted node, a
        rejoin) from their stored state, skipping those that have a session here already.

        Returns how many were loaded.
        """
        fresh = [stored for stored in sessions if stored.client_id not in self.sessions]
        if fresh:
            self.restore(fresh, [])
        return len(fresh)

    def hand_over(self, session: Session) -> bool:
        """Forget `session` in memory only: another node owns it now (or may, once this node is
        fenced). It leaves `sessions` and the index; its stored state is untouched (the new owner
        loads it). False when it is not this hub's session for its client id (any more).
        """
        if self.sessions.get(session.client_id) is not session:
            return False
        del self.sessions[session.client_id]
        self._expiry.discard(session.client_id)
        for topic_filter in session.subscriptions:
            self.index.remove(session.client_id, topic_filter)
        return True

    def evict(self, session: Session, reason: str, *, will: bool = False) -> bool:
        """Close `session`'s connection at once, leaving the session to another owner (a take-over
        from another node, a fence): the connection detaches it first and, with `will`, publishes
        the client's will. False when the session has no connection.
        """
        conn = session.conn
        if not isinstance(conn, Evictable):
            return False
        conn.evict(reason, will=will)
        return True

    def hide_sessions(self, client_ids: Iterable[str]) -> list[Session]:
        """Take these sessions out of routing until `unhide_sessions` (synchronous use only, within
        one call: a message they already have must skip them, share groups included)."""
        hidden: list[Session] = []
        for client_id in client_ids:
            session = self.sessions.pop(client_id, None)
            if session is not None:
                hidden.append(session)
        return hidden

    def unhide_sessions(self, hidden: Iterable[Session]) -> None:
        """Put back the sessions `hide_sessions` took out."""
        for session in hidden:
            self.sessions[session.client_id] = session
