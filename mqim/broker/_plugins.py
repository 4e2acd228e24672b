"""amqtt plugins that connect amqtt's plugin system to mqim's authenticator.

`MqimAuthPlugin` is loaded by amqtt's `PluginManager` like any auth plugin; the mqim broker asks
the plugin manager at every CONNECT, so amqtt auth plugins configured beside it still apply
(every answer that is not None must be True). The topic ACL is not routed through amqtt's
`map_plugin_topic`, which creates one task per plugin per call: the broker consults the cached
synchronous `AclEngine` directly on the hot path.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.plugins.base import BaseAuthPlugin

from mqim.acl import Identity
from mqim.auth import ConnectRequest
from mqim.broker._listener import Listener
from mqim.mqtt import Connect
from mqim.protocol import is_valid_id

log = logging.getLogger("mqim.broker")


class MqimAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """Authenticates through the mqim broker's `Authenticator` and records the identity."""

    async def authenticate(self, *, session: Any) -> bool | None:
        if not isinstance(session, ConnectRequest):
            return None  # not an mqim broker: no opinion
        # The context's broker is the MqimBroker that created this plugin manager.
        broker = getattr(self.context, "_broker_instance", None)
        authenticator = getattr(broker, "authenticator", None)
        if authenticator is None:
            return False
        session.identity = await authenticator.authenticate(session)
        return session.identity is not None


async def ask_auth_plugins(
    plugins_manager: Any,
    *,
    connect: Connect,
    listener: str,
    spec: Listener | None,
    peer: str,
    transport: asyncio.BaseTransport | None,
) -> Identity | None:
    """Ask every amqtt auth plugin (mqim's included) who a CONNECT is.

    All answers that are not None must be True.

    Args:
        plugins_manager: amqtt's `PluginManager` of the broker.
        connect: The CONNECT.
        listener: The name of the listener it came on.
        spec: That listener's configuration, if known.
        peer: The client's address, for logs.
        transport: The connection's transport (its TLS client certificate).

    Returns:
        The identity (without roles), or None to refuse the connection.
    """
    # Only a listener with its own CA passes certificates on: without one, the TLS context
    # verifies client certificates against the system's public CAs, which name no user.
    verified = spec is not None and spec.cafile is not None and transport is not None
    request = ConnectRequest(
        username=connect.username,
        password=connect.password,
        client_id=connect.client_id,
        listener=listener,
        remote_address=peer,
        peer_cert=(transport.get_extra_info("peercert") or None) if verified and transport else None,
        bridge=connect.bridge,
    )
    results = await plugins_manager.map_plugin_auth(session=request)
    answers = [r for r in results.values() if r is not None]
    if not answers or not all(answers):
        return None
    identity = request.identity
    if identity is None and connect.username:
        identity = Identity(user=connect.username, client_id=connect.client_id, kind="user")
    if identity is None:
        return None
    if identity.user and not is_valid_id(identity.user):
        # Topics are built from user ids (`im/v1/u/{user}/...`, `%u` rules): a name with
        # `+`, `#`, `/`, `$`, NUL... in it (an account made around the CLI, or by a plugin)
        # could only be trouble. Refused at the door.
        log.warning("refusing %s: user name %r is not a valid id", peer, identity.user)
        return None
    return identity
