"""The access policy in force: stored ACL rules, roles and account states, applied to live sessions.

`LivePolicy` loads the stored rules and roles at start and polls storage for changes (a rule,
role, disable or removal made by the CLI in another process): identities get their new roles,
subscriptions no longer allowed are removed, disabled users' connections are closed, and the
authenticator reloads its token keys.
"""

from __future__ import annotations

import asyncio
import logging

from mqim.acl import Identity, InvalidRule
from mqim.auth import Authenticator, RefreshableAuthenticator
from mqim.broker._admission import Admission
from mqim.broker._connection import MqttConnection
from mqim.broker._counting import count_event
from mqim.broker._exceptions import ConfigError
from mqim.broker._hub import Hub
from mqim.broker._policy import PolicySource, with_roles
from mqim.broker._session import Session
from mqim.broker._settings import BrokerSettings
from mqim.storage import Storage, StorageError

log = logging.getLogger("mqim.broker")


class LivePolicy:
    """The rules and roles the broker enforces, kept in step with storage.

    Args:
        storage: Where rules, roles and accounts live; None keeps only the rules the hub's ACL
            engine was built with.
        hub: Sessions and the ACL engine.
        admission: Blocks and unblocks accounts disabled and enabled in storage.
        authenticator: Refreshed on every reload when it has state to reload (token keys).
        settings: `policy_poll_interval_s`.
    """

    def __init__(
        self,
        *,
        storage: Storage | None,
        hub: Hub,
        admission: Admission,
        authenticator: Authenticator,
        settings: BrokerSettings,
    ) -> None:
        self.hub = hub
        self.admission = admission
        self.authenticator = authenticator
        self.settings = settings
        self._static_rules = hub.acl.rules
        self._policy = PolicySource(storage=storage) if storage is not None else None
        self._policy_lock = asyncio.Lock()
        self._roles: dict[str, frozenset[str]] = {}
        hub.add_observer(_SubscriptionGuard(self))

    @property
    def polled(self) -> bool:
        """Whether there is storage to poll (`watch` then runs)."""
        return self._policy is not None

    def with_roles(self, identity: Identity) -> Identity:
        """`identity` with the roles the policy gives its user."""
        return with_roles(identity, self._roles)

    async def load(self) -> None:
        """Initial load: stored rules and roles must be valid, or the broker does not start."""
        if self._policy is None:
            return
        try:
            await self.reload()
        except InvalidRule as exc:
            raise ConfigError(str(exc)) from exc

    async def reload(self) -> None:
        """Read rule, role, account and token key changes from storage and apply them now.

        Called every `policy_poll_interval_s` (`watch`); callers that just changed
        storage in this process may call it to apply the change at once.

        Raises:
            InvalidRule: A stored rule does not parse (the previous rules stay in force).
            StorageError: Storage failed; nothing was half-applied.
        """
        policy = self._policy
        if policy is None:
            return
        async with self._policy_lock:
            update = await policy.acl_update()
            if update is not None:
                self._apply_roles(update.roles)
                self.hub.acl.set_rules([*self._static_rules, *update.rules])
                log.info(
                    "ACL version %d: %d stored rule(s), %d user(s) with roles",
                    update.version,
                    len(update.rules),
                    len(update.roles),
                )
                await self._recheck_subscriptions()
            accounts = await policy.account_update(self.admission.users())
            for user in accounts.allowed:
                self.admission.unblock_user(user)
            for user in accounts.blocked:
                self.admission.block_user(user)
            if isinstance(self.authenticator, RefreshableAuthenticator):
                await self.authenticator.refresh()

    def _apply_roles(self, roles: dict[str, frozenset[str]]) -> None:
        self._roles = roles
        for session in self.hub.sessions.values():
            identity = session.identity
            if identity is None:
                continue
            updated = with_roles(identity, roles)
            if updated is not identity:
                session.identity = updated
                conn = session.conn
                if isinstance(conn, MqttConnection):
                    conn.identity = updated

    async def _recheck_subscriptions(self) -> None:
        # Every session's receive scopes follow the new rules and roles at once (a persistent
        # session that is away keeps queueing only what it may receive). Subscriptions whose
        # scope is now empty are removed from connected sessions; one that is away keeps them
        # (delivering nothing) until it comes back (`_SubscriptionGuard`), as its identity then
        # comes from a live authentication.
        sessions = list(self.hub.sessions.values())
        for index, session in enumerate(sessions):
            if index and index % 1000 == 0:
                await asyncio.sleep(0)  # thousands of sessions: let the loop breathe
            if self.hub.sessions.get(session.client_id) is not session:
                continue
            if session.conn is not None:
                self.revoke_denied_subscriptions(session)
            else:
                self.hub.refresh_scopes(session, drop_empty=False)

    def revoke_denied_subscriptions(self, session: Session) -> int:
        """Recompile `session`'s receive scopes; remove the subscriptions that may deliver nothing.

        Returns how many were removed.
        """
        denied = self.hub.refresh_scopes(session, drop_empty=True)
        for topic_filter in denied:
            log.info("subscription %r of %s removed: no longer allowed", topic_filter, session.client_id)
        if denied:
            count_event(self.hub.counters, "subscriptions_revoked", len(denied))
        return len(denied)

    async def watch(self) -> None:
        """Poll storage for policy changes until cancelled; a failed poll is logged and retried."""
        interval = max(self.settings.policy_poll_interval_s, 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload()
            except (StorageError, InvalidRule) as exc:
                log.error("policy reload failed (previous policy stays in force): %s", exc)


class _SubscriptionGuard:
    """Re-checks a session's subscriptions when it (re)connects: a persistent session may hold
    filters from before a rule or role change made while it was away."""

    def __init__(self, policy: LivePolicy) -> None:
        self._policy = policy

    def session_connected(self, session: Session) -> None:
        self._policy.revoke_denied_subscriptions(session)

    def session_disconnected(self, session: Session) -> None:
        return None

    def delivered(self, session: Session, topic: str, payload: bytes) -> None:
        return None
