"""Small ideas every layer uses, written once: token buckets, violation windows, log throttling,
deadlines in a heap.

The bottom layer: it imports nothing from mqim.
"""

from mqim._util._buckets import KeyedBuckets, TokenBucket
from mqim._util._cancel import cancel_and_wait, raise_if_cancelling
from mqim._util._deadlines import Deadlines
from mqim._util._logsummary import SummaryLog, host_of
from mqim._util._ratelimit import ViolationWindow, address_key
from mqim._util._throttle import worth_logging

__all__ = [
    "Deadlines",
    "KeyedBuckets",
    "SummaryLog",
    "TokenBucket",
    "ViolationWindow",
    "address_key",
    "cancel_and_wait",
    "host_of",
    "raise_if_cancelling",
    "worth_logging",
]
