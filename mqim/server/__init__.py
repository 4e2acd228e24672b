"""The servers: a broker, the logic service and storage composed into one running process.

`EmbeddedServer` is what `mqim serve` runs (SQLite, one process); `ClusterServer` is one node of
a cluster (MongoDB, Redis, the `ClusterLink`). Both are async context managers; tests and
programs embedding mqim start them directly. Beside them live the IM features that run on the
broker's events: presence, delivery receipts and the membership follower. `LogicWorker` is
the logic service as its own process (`mqim logic`).
"""

from mqim.server._cluster import ClusterServer
from mqim.server._embedded import EmbeddedServer
from mqim.server._exceptions import ServerError
from mqim.server._follower import (
    STAMP_NAME,
    MembershipFollower,
    load_membership,
    touch_membership_stamp,
)
from mqim.server._presence import PresenceTracker
from mqim.server._receipts import DeliveryReceipts
from mqim.server._stamps import membership_stamp_key
from mqim.server._worker import LogicWorker

__all__ = [
    "STAMP_NAME",
    "ClusterServer",
    "DeliveryReceipts",
    "EmbeddedServer",
    "LogicWorker",
    "MembershipFollower",
    "PresenceTracker",
    "ServerError",
    "load_membership",
    "membership_stamp_key",
    "touch_membership_stamp",
]
