"""The IM service: one handler per request kind, talking to the world through a `Bus` and `Storage`."""

from mqim._ports import BrokerPort, Receipt
from mqim.logic._bus import Bus, Inbound
from mqim.logic._exceptions import BusClosed, BusError, BusUnavailable, LogicError, RequestRejected
from mqim.logic._inprocess import InProcessBus
from mqim.logic._limits import LogicLimits
from mqim.logic._mqtt_bus import MqttBus
from mqim.logic._service import LogicCounters, LogicService

__all__ = [
    "BrokerPort",
    "Bus",
    "BusClosed",
    "BusError",
    "BusUnavailable",
    "InProcessBus",
    "Inbound",
    "LogicCounters",
    "LogicError",
    "LogicLimits",
    "LogicService",
    "MqttBus",
    "Receipt",
    "RequestRejected",
]
