"""Server-managed subscriptions: every user session's inbox and groups (docs/architecture.md,
"IM features"),
what a revoked right or a left group takes out of a session (with its queued messages), and the
overflow notice a user gets on its inbox.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING

from mqim.acl import Identity, ReceiveScope, filter_is_subset, topic_matches
from mqim.broker._committer import Committer
from mqim.broker._counting import Counters
from mqim.broker._ports import MembershipView
from mqim.broker._scopes import ScopeCompiler, any_allows, recompile, users_sessions
from mqim.broker._session import Session
from mqim.broker._settings import BrokerSettings
from mqim.protocol import PREFIX, InboxKind, group_filter, inbox_topic

log = logging.getLogger("mqim.broker")


_GROUP_LEVELS = (*PREFIX.split("/"), "g")


def group_of(topic_or_filter: str) -> str | None:
    """The `{group}` level of `im/v1/g/{group}/...` (a topic or a filter), else None."""
    levels = topic_or_filter.split("/", 4)
    if len(levels) < 4 or tuple(levels[:3]) != _GROUP_LEVELS or levels[3] in ("+", "#", ""):
        return None
    return levels[3]


class ManagedSubscriptions:
    """`Hub`'s server-managed subscriptions and purges (a mixin: the state is the hub's)."""

    settings: BrokerSettings
    sessions: dict[str, Session]
    scope_compiler: ScopeCompiler
    committer: Committer
    counters: Counters
    auto_subscriptions: Callable[[Identity], Iterable[tuple[str, int]]] | None
    membership: MembershipView | None

    if TYPE_CHECKING:

        def subscribe(
            self, session: Session, topic_filter: str, qos: int, *, scope: ReceiveScope | None = None
        ) -> None: ...

        def unsubscribe(self, session: Session, topic_filter: str) -> bool: ...

        def encode_topic(self, topic: str) -> bytes: ...

    def auto_subscribe(self, session: Session) -> None:
        """Apply server-managed subscriptions (docs/architecture.md, "IM features").

        Also drops the group subscriptions of groups the user left while this session was away
        (or the broker was down), with their queued messages, before anything is resent.
        """
        if session.identity is None:
            return
        self._manage(session, self._managed_filters(session.identity))

    # -- server-managed subscriptions ----------------------------------------------------------
    def managed_filters(self, identity: Identity) -> dict[str, int]:
        """The server-managed subscriptions of `identity`: its inbox and its groups."""
        return self._managed_filters(identity)

    def _managed_filters(self, identity: Identity) -> dict[str, int]:
        wanted: dict[str, int] = {}
        if self.auto_subscriptions is not None:
            wanted.update(self.auto_subscriptions(identity))
        if self.membership is not None and identity.kind == "user" and identity.user:
            qos = min(1, self.settings.max_qos)
            for group in self.membership.groups_of(identity.user):
                wanted.setdefault(group_filter(group), qos)
        return wanted

    def _manage(self, session: Session, wanted: dict[str, int]) -> None:
        for topic_filter, qos in wanted.items():
            if session.subscriptions.get(topic_filter) != qos:
                self.subscribe(session, topic_filter, qos)
        identity = session.identity
        if self.membership is None or identity is None or identity.kind != "user":
            return
        keep = {group for f in wanted if (group := group_of(f)) is not None}
        stale = {group for f in session.subscriptions if (group := group_of(f)) is not None} - keep
        for group in sorted(stale):
            self.revoke(session, group_filter(group))

    def refresh_managed(self, users: Collection[str]) -> None:
        """Bring the server-managed subscriptions of every session of `users` in line, at once.

        Live and persistent (disconnected) sessions alike: a user who joined a group is
        subscribed to its `g/{group}/#`; one who left loses that subscription, any narrower one
        it made in that group, and every queued message of the group (see `revoke`). The
        embedded server registers this as a listener of its `MembershipIndex`.
        """
        if not users or (self.auto_subscriptions is None and self.membership is None):
            return
        affected = set(users)
        wanted_by_user: dict[str, dict[str, int]] = {}
        for session in list(self.sessions.values()):
            identity = session.identity
            if identity is None or identity.kind != "user" or identity.user not in affected:
                continue
            wanted = wanted_by_user.get(identity.user)
            if wanted is None:
                wanted = wanted_by_user[identity.user] = self._managed_filters(identity)
            self._manage(session, wanted)

    def set_user_filters(
        self, user: str, *, add: Iterable[tuple[str, int]] = (), remove: Iterable[str] = ()
    ) -> int:
        """Subscribe every session of `user` to `add` and revoke `remove` (see `revoke`).

        Returns the number of sessions changed (live and persistent ones).
        """
        adds, removes = list(add), list(remove)
        changed = 0
        for session in list(self.sessions.values()):
            if session.user != user:
                continue
            changed += 1
            for topic_filter, qos in adds:
                if session.subscriptions.get(topic_filter) != qos:
                    self.subscribe(session, topic_filter, qos)
            for topic_filter in removes:
                self.revoke(session, topic_filter)
        return changed

    def revoke(self, session: Session, topic_filter: str) -> int:
        """Remove `topic_filter` and every narrower subscription of `session`; purge its queue.

        Queued messages matching `topic_filter` leave the queue (and the durable store): those
        not yet sent, and, when the session is disconnected, those sent but unacknowledged,
        which would otherwise be resent on reconnect. On a live connection the in-flight ones
        are already on the wire and keep their packet ids until acknowledged. Returns the
        number of messages purged.
        """
        for existing in [f for f in session.subscriptions if filter_is_subset(f, topic_filter)]:
            self.unsubscribe(session, existing)
        doomed = [m for m in session.pending if topic_matches(topic_filter, m.topic)]
        if session.conn is None:
            for pid, msg in list(session.inflight.items()):
                if not msg.released and topic_matches(topic_filter, msg.topic):
                    del session.inflight[pid]
                    doomed.append(msg)
        if not doomed:
            return 0
        gone = {msg.qid for msg in doomed}
        session.pending = deque(m for m in session.pending if m.qid not in gone)
        for msg in doomed:
            session._forget(msg)  # queue, byte count and durable store, as an acknowledgement does
        self.committer.kick()
        log.info("session %r: %d queued messages of %r purged", session.client_id, len(doomed), topic_filter)
        return len(doomed)

    # -- receive scopes ------------------------------------------------------------------------
    def refresh_scopes(self, session: Session, *, drop_empty: bool, only_dynamic: bool = False) -> list[str]:
        """Compile `session`'s scopes again after a rule, role or membership change.

        With `drop_empty`, a subscription whose scope is now empty is removed (it could deliver
        nothing). When a scope changed, queued messages no subscription may deliver any more
        leave the queue (as in `revoke`). Returns the filters removed.
        """
        if session.identity is None or not session.subscriptions:
            return []
        empty, changed = recompile(self.scope_compiler, session, only_dynamic=only_dynamic)
        removed: list[str] = []
        if drop_empty:
            for topic_filter in empty:
                if self.unsubscribe(session, topic_filter):
                    removed.append(topic_filter)
        if changed:
            self._purge_unscoped(session)
        return removed

    def _purge_unscoped(self, session: Session) -> None:
        doomed = [m for m in session.pending if m.hold is None and not any_allows(session, m.topic)]
        if session.conn is None:
            for pid, msg in list(session.inflight.items()):
                if not msg.released and msg.hold is None and not any_allows(session, msg.topic):
                    del session.inflight[pid]
                    doomed.append(msg)
        if not doomed:
            return
        gone = {msg.qid for msg in doomed}
        session.pending = deque(m for m in session.pending if m.qid not in gone)
        for msg in doomed:
            session._forget(msg)
        self.committer.kick()
        log.info("session %r: %d queued messages no longer allowed purged", session.client_id, len(doomed))

    def _membership_changed(self, users: frozenset[str]) -> None:
        for session in users_sessions(list(self.sessions.values()), users):
            self.refresh_scopes(session, drop_empty=session.conn is not None, only_dynamic=True)

    # -- queue overflow ------------------------------------------------------------------------
    def _overflowed(self, session: Session, evicted: int) -> None:
        self.counters.evicted += evicted
        user = session.user
        if session.overflow_qid:
            return  # one pending notice (and one log line) per overflow episode, until it is read
        if user or session.evicted & (session.evicted - 1) == 0 or session.evicted == evicted:
            # Users: once per episode. Anonymous sessions (no inbox, no notice): at 1, 2, 4, 8...
            log.warning(
                "session %r queue full: %d oldest entries left the queue so far",
                session.client_id,
                session.evicted,
            )
        if not user:
            return
        topic = inbox_topic(user, InboxKind.EVENT)
        body = json.dumps(
            {
                "v": 1,
                "type": "queue_overflow",
                "dropped": session.evicted,
                "action": "sync",
                "message": "your offline queue was full; call sync to fetch what you missed",
            }
        ).encode()
        session.queue_notice(topic, self.encode_topic(topic), body)
