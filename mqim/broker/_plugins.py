"""amqtt plugins that connect amqtt's plugin system to mqim's authenticator.

`MqimAuthPlugin` is loaded by amqtt's `PluginManager` like any auth plugin; the mqim broker asks
the plugin manager at every CONNECT, so amqtt auth plugins configured beside it still apply
(every answer that is not None must be True). The topic ACL is not routed through amqtt's
`map_plugin_topic`, which creates one task per plugin per call: the broker consults the cached
synchronous `AclEngine` directly on the hot path.
"""

from __future__ import annotations

from typing import Any

from amqtt.plugins.base import BaseAuthPlugin

from mqim.broker._authenticator import ConnectRequest


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
