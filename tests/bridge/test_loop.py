"""The echo guard (pure) and listener filter covering."""

from __future__ import annotations

import pytest

from mqim.bridge import EchoGuard, cover_filters


def test_an_expected_echo_is_dropped_once() -> None:
    guard = EchoGuard(window_s=10, max_entries=100)
    guard.expect("t", b"p", now=0)
    guard.expect("t", b"p", now=1)
    assert not guard.is_echo("t", b"other", now=2)
    assert not guard.is_echo("u", b"p", now=2)
    assert guard.is_echo("t", b"p", now=2)
    assert guard.is_echo("t", b"p", now=2)
    assert not guard.is_echo("t", b"p", now=2)
    assert len(guard) == 0


def test_expectations_expire() -> None:
    guard = EchoGuard(window_s=5, max_entries=100)
    guard.expect("t", b"p", now=0)
    guard.expect("u", b"p", now=3)
    assert not guard.is_echo("t", b"p", now=5.5)
    assert len(guard) == 1
    assert guard.is_echo("u", b"p", now=7.9)


def test_the_guard_is_bounded() -> None:
    guard = EchoGuard(window_s=100, max_entries=3)
    for n in range(5):
        guard.expect(f"t{n}", b"p", now=n)
    assert len(guard) == 3
    assert guard.forgotten == 2
    assert not guard.is_echo("t0", b"p", now=6)
    assert guard.is_echo("t4", b"p", now=6)
    guard.expect("same", b"p", now=7)
    guard.expect("same", b"p", now=7)
    guard.expect("same", b"p", now=7)
    assert len(guard) == 3


def test_invalid_guard() -> None:
    with pytest.raises(ValueError, match="positive"):
        EchoGuard(window_s=0)


def test_cover_filters_keeps_one_listener_per_message() -> None:
    assert cover_filters(["a/#", "a/b", "a/+/c", "x/y", "x/y"]) == ["a/#", "x/y"]
    assert cover_filters(["a/+/c", "a/b/+"]) == ["a/+/c", "a/b/+"]  # overlap without cover
