"""Back-off after failed logins, as a pure state machine (every call takes `now`).

Three kinds of key are tracked, in one table bounded by `BackoffPolicy.max_entries` (the least
recently touched entry leaves first):

- the source **address** (IPv4 address or IPv6 /64, see `address_key`): any account;
- the **(account, address)** pair: one account guessed from one address;
- the **account**, all addresses together (distributed guessing of one account).

Once a key has failed `free_failures` times within `window_s` seconds it is blocked for
`base_delay_s`, and each further failure (checked after the block ended) doubles the block, up to
a cap. Attempts refused while a key is
blocked are not failures (nothing was checked), so they neither extend nor shorten the delay.

Why an attacker cannot lock a real user out: the account-wide back-off is capped short
(`account_max_delay_s`) and it only applies to addresses that themselves failed on that account
within the window. A correct login from an address that never failed on the account is always
checked, however hard the account is being hammered elsewhere. The long back-offs (up to
`max_delay_s`) belong to the attacker's own address and pair. The price: clients sharing one
address (a NAT) share its back-off, so the address key gets more free failures
(`address_free_failures`) than a pair; an evicted entry (table full) simply starts over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cachetools import LRUCache

BackoffScope = Literal["address", "account-address", "account"]
"""Which key refused an attempt."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffPolicy:
    """The named limits of login back-off.

    Attributes:
        free_failures: Failures of one (account, address) pair, or of one account from all
            addresses, within `window_s` that start its back-off (at least 1).
        address_free_failures: Failures from one address (any accounts) that start its back-off.
        base_delay_s: The first delay; each further failure doubles it.
        max_delay_s: Longest delay of an address or an (account, address) pair.
        account_max_delay_s: Longest delay of an account (short: see the module docstring).
        window_s: Failures older than this are forgotten (longer than `max_delay_s`, so a
            patient attacker stays at the cap).
        max_entries: Keys tracked at once, all kinds together.
    """

    free_failures: int = 5
    address_free_failures: int = 20
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    account_max_delay_s: float = 2.0
    window_s: float = 600.0
    max_entries: int = 10_000

    def __post_init__(self) -> None:
        if self.free_failures < 1 or self.address_free_failures < 1:
            raise ValueError("free failures must be >= 1")
        if self.base_delay_s <= 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("need 0 < base_delay_s <= max_delay_s")
        if self.account_max_delay_s < 0 or self.window_s <= 0 or self.max_entries < 1:
            raise ValueError("account_max_delay_s >= 0, window_s > 0 and max_entries >= 1 required")

    def delay(self, excess: int, cap: float) -> float:
        """The block after failure number `free + excess - 1` (excess 1: the `free`-th)."""
        if excess <= 0:
            return 0.0
        # min() before the power would overflow: 2**64 seconds is already "forever".
        return min(self.base_delay_s * 2.0 ** min(excess - 1, 64), cap)


class _Entry:
    __slots__ = ("failures", "last", "until")

    def __init__(self) -> None:
        self.failures = 0
        self.last = 0.0
        self.until = 0.0


_Key = tuple[str, ...]


class LoginBackoff:
    """Failed-login memory and the back-off it imposes.

    Args:
        policy: The limits.
    """

    def __init__(self, *, policy: BackoffPolicy) -> None:
        self.policy = policy
        self._entries: LRUCache[_Key, _Entry] = LRUCache(maxsize=policy.max_entries)

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, key: _Key, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and now - entry.last > self.policy.window_s and entry.until <= now:
            del self._entries[key]  # forgotten: its failures are older than the window
            return None
        return entry

    def blocked(self, *, account: str, address: str, now: float) -> BackoffScope | None:
        """Which back-off refuses a login of `account` from `address` at `now`, if any.

        A table look-up only: this is what an attempt costs while it backs off.
        """
        entry = self._live(("a", address), now)
        if entry is not None and entry.until > now:
            return "address"
        pair = self._live(("p", account, address), now)
        if pair is not None and pair.until > now:
            return "account-address"
        if pair is not None and pair.failures > 0:
            # Only addresses that failed on this account wait for the account (module docstring).
            whole = self._live(("u", account), now)
            if whole is not None and whole.until > now:
                return "account"
        return None

    def account_blocked(self, account: str, now: float) -> bool:
        """Whether `account` itself backs off at `now` (for addresses that failed on it)."""
        entry = self._live(("u", account), now)
        return entry is not None and entry.until > now

    def failed(self, *, account: str, address: str, now: float) -> None:
        """Record a checked login that failed."""
        policy = self.policy
        self._bump(("a", address), now, policy.address_free_failures, policy.max_delay_s)
        self._bump(("p", account, address), now, policy.free_failures, policy.max_delay_s)
        self._bump(("u", account), now, policy.free_failures, policy.account_max_delay_s)

    def succeeded(self, *, account: str, address: str) -> None:
        """Record a checked login that succeeded: the pair starts over.

        The address keeps its record (an attacker must not wash it with logins of its own
        account), and so does the account (the attacker elsewhere has not stopped).
        """
        self._entries.pop(("p", account, address), None)

    def _bump(self, key: _Key, now: float, free: int, cap: float) -> None:
        entry = self._live(key, now)  # a use: the key becomes the most recent
        if entry is None:
            # Full: the least recently touched entry leaves to make room.
            entry = self._entries[key] = _Entry()
        entry.failures += 1
        entry.last = now
        excess = entry.failures - free + 1
        if excess > 0:
            entry.until = max(entry.until, now + self.policy.delay(excess, cap))
