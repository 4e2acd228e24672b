"""Target selection, URL parsing and argument checks (no broker started)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mqim.bench import (
    InvalidParameter,
    MqimTarget,
    UnknownScenario,
    UnknownTarget,
    make_target,
    run,
    scenario_names,
)
from mqim.bench._adapters import IM_GROUP, IM_SENDER, member_user
from mqim.bench._host import free_port, process_tree_rss
from mqim.bench._plain_targets import ExternalTarget
from mqim.bench._procs import child_env


def test_builtin_names_and_urls() -> None:
    assert make_target("mosquitto").name == "mosquitto"
    assert make_target("amqtt").name == "amqtt"
    assert isinstance(make_target("mqim"), MqimTarget)
    ext = make_target("mqtt://bench:p%40ss@127.0.0.1:18830")
    assert isinstance(ext, ExternalTarget)
    assert (ext.host, ext.port, ext.username, ext.password) == ("127.0.0.1", 18830, "bench", "p@ss")
    assert ext.name == "ext:127.0.0.1:18830"  # no password in names, hence none in reports
    assert make_target("mqtt://broker.example").port == 1883


@pytest.mark.parametrize("spec", ["rabbitmq", "http://host:1883", "mqtt://host:notaport", "mqtt://"])
def test_unknown_targets_are_refused(spec: str) -> None:
    with pytest.raises(UnknownTarget):
        make_target(spec)


def test_scenario_names() -> None:
    assert scenario_names("all") == ["p2p", "standalone", "group", "p2p-crowd", "idle"]
    assert scenario_names("idle") == ["idle"]
    assert scenario_names("standalone") == ["standalone"]
    assert scenario_names("cluster") == ["cluster"]
    assert scenario_names("p2p,cluster") == ["p2p", "cluster"]
    with pytest.raises(UnknownScenario):
        scenario_names("nope")
    with pytest.raises(UnknownScenario):
        scenario_names("p2p,nope")


@pytest.mark.parametrize(
    "kwargs",
    [{"targets": []}, {"duration_s": 0.0}, {"rate": 0}, {"group_size": 0}, {"crowd_size": -1}],
)
def test_bad_parameters_are_refused_before_anything_starts(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"targets": ["mosquitto"], **kwargs}
    with pytest.raises(InvalidParameter):
        run("p2p", **args)  # type: ignore[arg-type]


def test_mqim_commands_are_in_one_place(tmp_path: Path) -> None:
    target = MqimTarget()
    serve = target.command(tmp_path, 1884)
    assert serve[1:4] == ["-m", "mqim.cli", "serve"]
    assert serve[serve.index("--port") + 1] == "1884"
    add = target.user_add_command("alice")
    assert add[1:6] == ["-m", "mqim.cli", "user", "add", "alice"]
    assert add[add.index("--password") + 1] == target.password
    assert target.adapter_spec("r1").kind == "im"


def test_memory_of_a_process_tree() -> None:
    rss = process_tree_rss(os.getpid())
    assert rss is not None
    assert rss > 0
    assert process_tree_rss(2**22 + 12345) is None


def test_free_port_is_bindable() -> None:
    assert 0 < free_port() < 65536


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_group_of_ten_thousand_members_and_its_sender_can_be_made(tmp_path: Path) -> None:
    # `mqim bench group --group-size 10000`: 10,000 members plus the sender (the owner) is one
    # more than the server's default limit; the bench config raises it and the CLI reads it.
    target = MqimTarget()
    target.command(tmp_path, free_port())  # writes the bench config into the data dir
    members = [member_user(i) for i in range(10_000)]

    async def provision() -> None:
        await target.ensure_users([IM_SENDER, *members])
        await target.ensure_group(IM_GROUP, owner=IM_SENDER, members=members)

    asyncio.run(provision())
    assert target.data_dir is not None
    info = subprocess.run(
        [
            sys.executable,
            "-m",
            "mqim.cli",
            "group",
            "info",
            IM_GROUP,
            "--json",
            "--data-dir",
            str(target.data_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
        env=child_env(),
    )
    assert len(json.loads(info.stdout)["members"]) == 10_001
