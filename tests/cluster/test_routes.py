"""Pure parts of cluster mode: the remote route table, share choice, stream entry codec."""

from __future__ import annotations

from mqim.cluster._keys import (
    Forward,
    Kick,
    decode_delta,
    decode_entry,
    encode_delta,
    encode_forward,
    encode_kick,
)
from mqim.cluster._routes import LOCAL, RemoteRoutes, ShareChooser


def test_remote_routes_match_replace_and_drop() -> None:
    routes = RemoteRoutes()
    routes.add("n2", "im/v1/u/bob/#")
    routes.add("n3", "im/v1/g/team/#")
    routes.add("n3", "$share/logic/im/v1/up/+/+")
    routes.add("n2", "$share/logic/im/v1/up/+/+")
    assert routes.plain_targets("im/v1/u/bob/msg") == ["n2"]
    assert routes.plain_targets("im/v1/up/alice/msg") == []
    assert routes.share_filters("im/v1/up/alice/msg") == ["$share/logic/im/v1/up/+/+"]
    assert routes.share_nodes("$share/logic/im/v1/up/+/+") == ["n2", "n3"]
    routes.replace("n2", ["im/v1/u/carol/#"])
    assert routes.plain_targets("im/v1/u/bob/msg") == []
    assert routes.share_nodes("$share/logic/im/v1/up/+/+") == ["n3"]
    routes.drop("n3")
    assert routes.share_filters("im/v1/up/alice/msg") == []
    assert routes.nodes == ["n2"]


def test_remote_routes_bound_per_node() -> None:
    routes = RemoteRoutes(max_filters_per_node=2)
    for n in range(5):
        routes.add("n2", f"t/{n}")
    assert len(routes.filters_of("n2")) == 2
    assert routes.refused == 3


def test_share_chooser_round_robin() -> None:
    chooser = ShareChooser(max_tracked=1)
    picks = [chooser.decide("$share/g/t", [LOCAL, "n2", "n3"]) for _ in range(6)]
    assert picks == [LOCAL, "n2", "n3", LOCAL, "n2", "n3"]
    assert chooser.decide("$share/g/t", []) is None
    assert chooser.decide("$share/h/t", ["n2"]) == "n2"  # over the bound: positions restart


def _as_read(fields: dict[bytes | str, bytes | str | int | float]) -> dict[bytes, bytes]:
    """What XREADGROUP returns for fields written by XADD."""
    out = {}
    for key, value in fields.items():
        k = key.encode() if isinstance(key, str) else key
        v = value if isinstance(value, bytes) else str(value).encode()
        out[k] = v
    return out


def test_entry_codec_round_trip() -> None:
    forward = Forward(
        topic="im/v1/u/bob/msg", payload=b"\x00{}", qos=1, retain=True, shares=("$share/g/a/+",), origin="n1"
    )
    assert decode_entry(_as_read(encode_forward(forward))) == forward
    kick = Kick(client_id="bob-phone", token="abc", by="n3")
    assert decode_entry(_as_read(encode_kick(kick))) == kick
    assert decode_entry({b"k": b"m", b"t": b"x", b"p": b"", b"q": b"7"}) is None
    assert decode_entry({b"k": b"other"}) is None
    assert decode_entry({}) is None
    assert decode_delta(encode_delta("n1", ["a/#"], ["b"]).encode()) == ("n1", ["a/#"], ["b"])
    assert decode_delta(b"not json") is None
    assert decode_delta(b'{"node": 1, "add": [], "del": []}') is None
