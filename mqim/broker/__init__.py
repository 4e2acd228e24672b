"""The mqim broker: amqtt's `Broker` with mqim's connection handling, routing and durable sessions."""

from mqim.broker._broker import MqimBroker
from mqim.broker._counting import Counters
from mqim.broker._exceptions import BrokerError, ConfigError, MalformedPacket, ProtocolViolation
from mqim.broker._hub import Hub, HubObserver
from mqim.broker._listener import Listener
from mqim.broker._managed import group_of
from mqim.broker._outgoing import Delivery
from mqim.broker._plugins import MqimAuthPlugin
from mqim.broker._ports import ClusterPort, MembershipView
from mqim.broker._router import SubscriptionIndex
from mqim.broker._session import Session
from mqim.broker._settings import BrokerSettings
from mqim.broker._shared_subs import SharedIndex, parse_shared
from mqim.broker._traffic import TOPIC_CLASSES, Traffic

__all__ = [
    "TOPIC_CLASSES",
    "BrokerError",
    "BrokerSettings",
    "ClusterPort",
    "ConfigError",
    "Counters",
    "Delivery",
    "Hub",
    "HubObserver",
    "Listener",
    "MalformedPacket",
    "MembershipView",
    "MqimAuthPlugin",
    "MqimBroker",
    "ProtocolViolation",
    "Session",
    "SharedIndex",
    "SubscriptionIndex",
    "Traffic",
    "group_of",
    "parse_shared",
]
