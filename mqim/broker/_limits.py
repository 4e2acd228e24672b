"""The old import path of the broker's limits, kept until `_broker.py` (its last importer) switches.

They now live in `mqim.broker._ratelimit` and (the token buckets) `mqim._util`.
"""

from mqim._util import KeyedBuckets, TokenBucket
from mqim.broker._ratelimit import ViolationWindow, address_key

__all__ = ["KeyedBuckets", "TokenBucket", "ViolationWindow", "address_key"]
