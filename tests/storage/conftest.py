"""Storage test fixtures: real Redis and SecantusDB servers (see `tests.support.servers`)."""

from tests.support.servers import mongo_proc, redis_proc

__all__ = ["mongo_proc", "redis_proc"]
