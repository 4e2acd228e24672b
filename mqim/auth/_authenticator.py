"""What an authentication method is given and answers: the `Authenticator` contract.

`ConnectRequest` is what a client presented at CONNECT; an `Authenticator` turns it into an ACL
`Identity` or refuses it (None). Methods with state to reload from outside implement
`RefreshableAuthenticator`, which the broker polls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from mqim.acl import Identity


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


@runtime_checkable
class RefreshableAuthenticator(Authenticator, Protocol):
    """An authenticator with state to reload from outside (token keys); the broker polls it."""

    async def refresh(self) -> None:
        """Reload what may have changed."""
        ...
