"""Retained topics bounded per owner: clients together, each account, the server apart."""

from __future__ import annotations

from mqim.broker._retained_quota import BY_TOPIC, SERVER, RetainedQuota, owner_of


def _quota() -> RetainedQuota:
    return RetainedQuota(max_client=3, max_per_account=2, max_server=4)


def test_each_account_stops_at_its_quota() -> None:
    quota = _quota()
    for topic in ("a/1", "a/2"):
        assert quota.refusal(topic, "alice") is None
        quota.set(topic, "alice")
    assert quota.refusal("a/3", "alice") == "max_retained_per_account=2 reached by 'alice'"
    assert quota.refusal("a/1", "alice") is None  # replacing its own topic costs nothing
    assert quota.refusal("b/1", "bob") is None


def test_clients_together_stop_at_max_retained() -> None:
    quota = _quota()
    for topic, owner in (("a/1", "alice"), ("b/1", "bob"), ("x/1", "")):
        quota.set(topic, owner)
    assert quota.refusal("c/1", "carol") == "max_retained=3 reached"
    assert quota.refusal("b/1", "carol") is None  # an existing topic changes hands
    quota.set("b/1", "carol")
    assert (quota.of_account("bob"), quota.of_account("carol"), quota.clients) == (0, 1, 3)


def test_the_server_is_counted_apart() -> None:
    quota = _quota()
    for n in range(3):
        quota.set(f"x/{n}", "")
    # Clients are full; presence of every account still goes in, up to the server's own bound.
    for n in range(4):
        assert quota.refusal(f"im/v1/presence/u{n}", SERVER) is None
        quota.set(f"im/v1/presence/u{n}", SERVER)
    assert quota.refusal("im/v1/presence/u9", SERVER) == "max_server_retained=4 reached"
    assert (quota.clients, quota.server) == (3, 4)


def test_clearing_gives_the_room_back() -> None:
    quota = _quota()
    quota.set("a/1", "alice")
    quota.set("a/2", "alice")
    quota.clear("a/1")
    quota.clear("never-set")
    assert quota.of_account("alice") == 1
    assert quota.refusal("a/3", "alice") is None


def test_an_unknown_setter_is_known_by_its_topic() -> None:
    # Restored from storage or forwarded by another node: the setter is not recorded.
    assert owner_of("im/v1/presence/bob") is SERVER
    assert owner_of("$SYS/broker/uptime") is SERVER
    assert owner_of("devices/7/status") == ""
    quota = _quota()
    quota.set("im/v1/presence/bob", BY_TOPIC)
    quota.set("devices/7/status", BY_TOPIC)
    assert (quota.server, quota.clients) == (1, 1)
