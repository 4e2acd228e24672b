"""`SharedIndex` (pure): one member per share group, round-robin, connected members first."""

from __future__ import annotations

from mqim.broker import SharedIndex, parse_shared


def test_parse_shared() -> None:
    assert parse_shared("$share/logic/im/v1/up/+/+") == ("logic", "im/v1/up/+/+")
    assert parse_shared("im/v1/up/+/+") is None
    assert parse_shared("$share/logic") is None
    assert parse_shared("$share//a") is None
    assert parse_shared("$share/a+/b") is None
    assert parse_shared("$share/g/a/#/b") is None


def test_one_member_per_group_round_robin_beside_plain_subscribers() -> None:
    index = SharedIndex()
    index.add("w1", "$share/g/a/+", 1)
    index.add("w2", "$share/g/a/+", 1)
    index.add("plain", "a/#", 0)
    picks = []
    for _ in range(4):
        result = index.match("a/b")
        assert result["plain"] == 0
        members = [k for k in result if k != "plain"]
        assert len(members) == 1
        picks.append(members[0])
    assert picks == ["w1", "w2", "w1", "w2"]
    assert index.match("x") == {}


def test_connected_members_first_and_filter_reports() -> None:
    changes: list[tuple[str, bool]] = []
    index = SharedIndex()
    index.on_filter = lambda f, present: changes.append((f, present))
    online = {"w2"}
    index.connected = lambda key: key in online
    index.add("w1", "$share/g/t", 1)
    index.add("w2", "$share/g/t", 1)
    assert [list(index.match("t")) for _ in range(3)] == [["w2"], ["w2"], ["w2"]]
    index.remove("w1", "$share/g/t")
    index.remove("w2", "$share/g/t")
    assert index.match("t") == {}
    assert changes == [("$share/g/t", True), ("$share/g/t", False)]
