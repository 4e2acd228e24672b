"""The mqim broker: amqtt's `Broker` with mqim's connection handling, routing and durable sessions."""

from mqim.broker._auth import Authenticator, ConnectRequest, StorageAuthenticator
from mqim.broker._broker import Listener, MqimBroker
from mqim.broker._exceptions import BrokerError, ConfigError, MalformedPacket, ProtocolViolation
from mqim.broker._plugins import MqimAuthPlugin
from mqim.broker._router import SubscriptionIndex
from mqim.broker._settings import BrokerSettings

__all__ = [
    "Authenticator",
    "BrokerError",
    "BrokerSettings",
    "ConfigError",
    "ConnectRequest",
    "Listener",
    "MalformedPacket",
    "MqimAuthPlugin",
    "MqimBroker",
    "ProtocolViolation",
    "StorageAuthenticator",
    "SubscriptionIndex",
]
