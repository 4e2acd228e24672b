"""Authentication at CONNECT: who is this client? Returns an ACL `Identity` or None."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from mqim.acl import Identity, IdentityKind
from mqim.storage import AccountKind, Storage

log = logging.getLogger("mqim.broker.auth")


@dataclass(slots=True, kw_only=True)
class ConnectRequest:
    """What a client presented at CONNECT.

    The attribute names (`username`, `password`, `client_id`, `remote_address`) match amqtt's
    `Session`, so amqtt authentication plugins can read this object; a plugin that knows mqim
    sets `identity`.
    """

    username: str | None
    password: bytes | None
    client_id: str
    listener: str
    remote_address: str
    peer_cert: dict[str, Any] | None = None
    bridge: bool = False
    identity: Identity | None = None


class Authenticator(Protocol):
    """Decides who a client is."""

    async def authenticate(self, request: ConnectRequest) -> Identity | None:
        """Return the identity, or None to refuse the connection."""
        ...


class StorageAuthenticator:
    """Username/password against the accounts in storage (scrypt hashes, constant-time compare).

    Args:
        storage: Where accounts live.
        allow_anonymous: Accept CONNECTs without a username as an anonymous identity (which the
            built-in ACL grants nothing).
    """

    def __init__(self, *, storage: Storage, allow_anonymous: bool = False) -> None:
        self._storage = storage
        self._allow_anonymous = allow_anonymous

    async def authenticate(self, request: ConnectRequest) -> Identity | None:
        if request.username is None:
            if self._allow_anonymous:
                return Identity(user="", client_id=request.client_id, kind="user")
            return None
        password = (request.password or b"").decode("utf-8", errors="replace")
        record = await self._storage.verify_password(request.username, password)
        if record is None:
            log.info("authentication failed for user %r from %s", request.username, request.remote_address)
            return None
        kind: IdentityKind = "service" if record.kind == AccountKind.SERVICE else (
            "bridge" if record.kind == AccountKind.BRIDGE else "user"
        )
        return Identity(user=record.user_id, client_id=request.client_id, kind=kind)
