"""The bridges file: validation, atomic private writes, missing and broken files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mqim.bridge import (
    BridgeConfig,
    BridgeConfigError,
    BridgesFile,
    ImMapping,
    load_bridges,
    parse_bridges,
    parse_remote,
    save_bridges,
)


def _bridge(**kwargs: object) -> dict[str, object]:
    return {"name": "edge", "remote": "mqtt://10.0.0.5", "topics": ["a/# both 1"], **kwargs}


def test_round_trip_and_private_file(tmp_path: Path) -> None:
    path = tmp_path / "d" / "bridges.json"
    assert load_bridges(path) == BridgesFile()
    config = BridgesFile(
        bridges=[BridgeConfig.model_validate(_bridge(username="u", password="secret"))],
        mappings=[ImMapping(name="m", source="bridge/p/#", sender="p", group="ops")],
    )
    save_bridges(path, config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_bridges(path) == config
    assert "secret" not in repr(config.bridges[0])
    edge = config.bridges[0]
    assert edge.effective_client_id == "mqim-bridge-edge"
    assert edge.remote_url.port == 1883
    assert not edge.remote_url.tls


def test_remote_urls() -> None:
    assert parse_remote("mqtts://h").port == 8883
    assert parse_remote("mqtt://h:1999/").port == 1999
    for bad in ("http://h", "mqtt://", "mqtt://h/path", "mqtt://u:p@h", "mqtt://h:99999"):
        with pytest.raises(BridgeConfigError):
            parse_remote(bad)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json", "not valid JSON"),
        ('{"bridges": [{"name": "e"}]}', "bridges.0.remote"),
        ('{"bridges": [{"name": "e", "remote": "mqtt://h", "topics": ["a sideways"]}]}', "direction"),
        ('{"bridges": [{"name": "e", "remote": "ftp://h", "topics": ["a"]}]}', "mqtt://"),
        ('{"unknown": 1}', "unknown"),
        (
            '{"bridges": [{"name": "e", "remote": "mqtt://h", "topics": ["a"]},'
            ' {"name": "e", "remote": "mqtt://h", "topics": ["b"]}]}',
            "duplicate bridge names",
        ),
        (
            '{"bridges": [{"name": "e", "remote": "mqtt://h", "topics": ["a"], "client_id": "c"},'
            ' {"name": "f", "remote": "mqtt://h", "topics": ["b"], "client_id": "c"}]}',
            "same client id",
        ),
        ('{"bridges": [{"name": "e", "remote": "mqtt://h", "topics": []}]}', "topics"),
    ],
)
def test_invalid_files_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(BridgeConfigError, match=fragment):
        parse_bridges(text)


def test_unreadable_or_huge_files(tmp_path: Path) -> None:
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(BridgeConfigError):
        load_bridges(tmp_path / "dir.json")
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (1024 * 1024 + 1))
    with pytest.raises(BridgeConfigError, match="larger"):
        load_bridges(huge)
