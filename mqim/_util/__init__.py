"""Small ideas every layer uses, written once: per-key token buckets, the log throttle.

The bottom layer: it imports nothing from mqim.
"""

from mqim._util._buckets import KeyedBuckets, TokenBucket
from mqim._util._throttle import worth_logging

__all__ = ["KeyedBuckets", "TokenBucket", "worth_logging"]
