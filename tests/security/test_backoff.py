"""`LoginBackoff`, the pure back-off after failed logins, walked through time exactly."""

from __future__ import annotations

import pytest

from mqim.auth._backoff import BackoffPolicy, LoginBackoff

POLICY = BackoffPolicy(
    free_failures=2,
    address_free_failures=4,
    base_delay_s=1.0,
    max_delay_s=8.0,
    account_max_delay_s=2.0,
    window_s=100.0,
    max_entries=50,
)


def fail(
    b: LoginBackoff, n: int, *, account: str = "alice", address: str = "10.0.0.1", now: float = 0.0
) -> None:
    for _ in range(n):
        b.failed(account=account, address=address, now=now)


def test_free_failures_then_exponential_and_capped() -> None:
    b = LoginBackoff(policy=POLICY)
    fail(b, 1)
    assert b.blocked(account="alice", address="10.0.0.1", now=0.0) is None
    fail(b, 1)  # the second: blocked for base_delay_s
    assert b.blocked(account="alice", address="10.0.0.1", now=0.5) == "account-address"
    assert b.blocked(account="alice", address="10.0.0.1", now=1.01) is None
    delays = []
    now = 1.01
    for _ in range(6):
        b.failed(account="alice", address="10.0.0.1", now=now)
        until = now
        while b.blocked(account="alice", address="10.0.0.1", now=until) is not None:
            until += 0.25
        delays.append(round(until - now))
        now = until
    assert delays == [2, 4, 8, 8, 8, 8]


def test_window_forgets_old_failures() -> None:
    b = LoginBackoff(policy=POLICY)
    fail(b, 1, now=0.0)
    fail(b, 1, now=150.0)  # the first is older than the window: this is a first again
    assert b.blocked(account="alice", address="10.0.0.1", now=150.0) is None


def test_account_back_off_spares_addresses_that_never_failed_on_it() -> None:
    b = LoginBackoff(policy=POLICY)
    fail(b, 1, address="10.0.0.1")
    fail(b, 1, address="10.0.0.2")  # the account's second failure: it backs off (cap 2 s)
    assert b.account_blocked("alice", 0.0)
    assert b.blocked(account="alice", address="10.0.0.1", now=0.1) == "account"
    assert b.blocked(account="alice", address="10.0.0.9", now=0.1) is None  # the real user
    assert b.blocked(account="bob", address="10.0.0.1", now=0.1) is None
    fail(b, 20, address="10.0.0.3", account="alice", now=0.2)
    assert not b.account_blocked("alice", 0.2 + POLICY.account_max_delay_s + 0.01)  # capped short


def test_address_backs_off_for_every_account_and_success_does_not_wash_it() -> None:
    b = LoginBackoff(policy=POLICY)
    for i in range(4):
        b.failed(account=f"u{i}", address="10.0.0.1", now=0.0)
    assert b.blocked(account="anyone", address="10.0.0.1", now=0.5) == "address"
    b.succeeded(account="anyone", address="10.0.0.1")
    assert b.blocked(account="anyone", address="10.0.0.1", now=0.5) == "address"


def test_success_clears_the_pair_not_the_account() -> None:
    b = LoginBackoff(policy=POLICY)
    fail(b, 1)
    b.succeeded(account="alice", address="10.0.0.1")
    fail(b, 1)
    # The pair starts over (1 failure, not blocked); the account counts both (blocked, briefly).
    assert b.blocked(account="alice", address="10.0.0.1", now=0.0) == "account"
    assert b.blocked(account="alice", address="10.0.0.1", now=POLICY.account_max_delay_s) is None


def test_table_is_bounded() -> None:
    b = LoginBackoff(policy=POLICY)
    for i in range(1000):
        b.failed(account=f"user{i}", address=f"10.0.{i // 250}.{i % 250}", now=float(i) / 100)
    assert len(b) <= POLICY.max_entries


@pytest.mark.parametrize(
    "bad",
    [
        {"free_failures": 0},
        {"base_delay_s": 0.0},
        {"max_delay_s": 0.5},
        {"window_s": 0.0},
        {"max_entries": 0},
    ],
)
def test_bad_policies_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must be|required|need"):
        BackoffPolicy(**bad)  # type: ignore[arg-type]
