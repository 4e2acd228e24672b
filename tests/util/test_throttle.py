"""`worth_logging`: the 1st, 2nd, 4th, 8th... occurrence of a repeated event is logged."""

from __future__ import annotations

from mqim._util import worth_logging


def test_logs_the_powers_of_two() -> None:
    assert [n for n in range(1, 70) if worth_logging(n)] == [1, 2, 4, 8, 16, 32, 64]


def test_a_million_occurrences_make_20_lines() -> None:
    assert sum(worth_logging(n) for n in range(1, 1_000_001)) == 20  # 2**0 ... 2**19
