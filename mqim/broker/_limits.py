"""The old import path of `mqim.broker._ratelimit`, kept until `_broker.py` and `_auth.py` import from it."""

from mqim.broker._ratelimit import KeyedBuckets, TokenBucket, ViolationWindow, address_key

__all__ = ["KeyedBuckets", "TokenBucket", "ViolationWindow", "address_key"]
