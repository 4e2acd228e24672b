"""`SeenIndex` (pure): the message ids each local session already queued, bounded first in first out."""

from __future__ import annotations

import pytest

from mqim.cluster._adopt import SeenIndex


def test_holders_per_message_id() -> None:
    seen = SeenIndex()
    seen.add("n1.a.1", "alice")
    seen.add("n1.a.1", "bob")
    seen.add("n1.a.2", "alice")
    assert seen.has("n1.a.1", "bob")
    assert not seen.has("n1.a.2", "bob")
    assert seen.holders("n1.a.1") == {"alice", "bob"}
    assert seen.holders("unknown") == set()
    assert len(seen) == 2


def test_the_oldest_id_leaves_first_and_look_ups_do_not_keep_it() -> None:
    seen = SeenIndex(limit=2)
    seen.add("m1", "a")
    seen.add("m2", "a")
    assert seen.has("m1", "a")  # asked about, still the oldest
    seen.add("m1", "b")  # a new holder of a known id does not make it newer either
    seen.add("m3", "a")
    assert len(seen) == 2
    assert seen.holders("m1") == set()
    assert seen.holders("m2") == {"a"}
    assert seen.holders("m3") == {"a"}


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SeenIndex(limit=0)
