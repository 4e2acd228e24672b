"""Small ideas every layer uses, written once: per-key token buckets.

The bottom layer: it imports nothing from mqim.
"""

from mqim._util._buckets import KeyedBuckets, TokenBucket

__all__ = ["KeyedBuckets", "TokenBucket"]
