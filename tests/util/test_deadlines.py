"""Deadlines in a heap: what is due comes out in order, replaced and discarded ones never do."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mqim._util import Deadlines


def test_due_keys_come_out_earliest_first_and_once() -> None:
    timers: Deadlines[str] = Deadlines()
    timers.set("b", 2.0)
    timers.set("a", 1.0)
    timers.set("c", 3.0)
    assert timers.pop_due(0.5) == []
    assert timers.pop_due(2.0) == ["a", "b"]  # at the deadline counts as due
    assert timers.pop_due(2.0) == []
    assert len(timers) == 1
    assert "c" in timers


def test_a_replaced_deadline_is_the_only_one() -> None:
    timers: Deadlines[str] = Deadlines()
    timers.set("a", 1.0)
    timers.set("a", 5.0)  # the connection received something: checked later
    assert timers.pop_due(2.0) == []
    assert timers.deadline("a") == 5.0
    assert timers.pop_due(5.0) == ["a"]


def test_a_discarded_key_never_comes_due() -> None:
    timers: Deadlines[str] = Deadlines()
    timers.set("a", 1.0)
    timers.discard("a")
    timers.discard("never-set")
    assert timers.pop_due(10.0) == []
    assert len(timers) == 0


def test_churn_leaves_the_heap_bounded_by_live_keys() -> None:
    timers: Deadlines[int] = Deadlines()
    for key in range(100_000):  # short connections with day-long deadlines
        timers.set(key, 86_400.0)
        timers.discard(key)
    assert len(timers) == 0
    assert timers.entries <= 64 + 1
    for key in range(1_000):
        timers.set(key, 1.0)
        timers.set(key, 2.0)
    assert timers.entries <= 2 * len(timers) + 64 + 1


@given(st.lists(st.tuples(st.integers(0, 20), st.floats(0, 100)), max_size=60), st.floats(0, 100))
def test_pop_due_matches_the_latest_deadline_of_each_key(ops: list[tuple[int, float]], now: float) -> None:
    timers: Deadlines[int] = Deadlines()
    latest: dict[int, float] = {}
    for key, deadline in ops:
        timers.set(key, deadline)
        latest[key] = deadline
    due = timers.pop_due(now)
    assert [latest[k] for k in due] == sorted(latest[k] for k in due)  # earliest first
    assert set(due) == {k for k, d in latest.items() if d <= now}
    assert len(timers) == len(latest) - len(due)
