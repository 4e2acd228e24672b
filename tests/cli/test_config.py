"""Configuration: defaults < TOML file < MQIM_* environment < command-line flags, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from mqim.cli import (
    BrokerUrl,
    ConfigError,
    LimitsConfig,
    MqimConfig,
    app,
    load_config,
    parse_broker_url,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    config = load_config(None, {}, environ={})
    assert config == MqimConfig()
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 1883
    assert config.server.data_dir == Path("./mqim-data")
    assert config.server.ws_port is None
    assert config.server.tls is None
    assert config.db_path == Path("./mqim-data") / "mqim.db"
    limits = config.limits
    assert limits.max_payload_bytes == 65536
    assert limits.max_connections == 10000
    assert limits.max_inflight == 100
    assert limits.max_queue_messages == 10000
    assert limits.max_queue_bytes == 16 * 1024 * 1024
    assert limits.session_expiry_s == 7 * 24 * 3600
    assert limits.max_subscriptions_per_session == 100
    assert limits.max_packet_bytes == 262144
    assert (limits.publish_rate, limits.publish_burst) == (100.0, 200)
    assert config.logic.embedded is True
    assert config.logic.broker_url is None
    assert config.auth.allow_anonymous is False


def test_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "mqim.toml",
        """
        [server]
        host = "0.0.0.0"
        port = 2883
        data_dir = "/var/lib/mqim"
        ws_port = 8080

        [limits]
        max_inflight = 20
        publish_rate = 5.5

        [logic]
        embedded = false
        broker_url = "mqtt://10.0.0.1:1883"
        service_password = "s3cret"

        [auth]
        allow_anonymous = true
        """,
    )
    config = load_config(path, {}, environ={})
    assert config.server.host == "0.0.0.0"
    assert config.server.port == 2883
    assert config.server.data_dir == Path("/var/lib/mqim")
    assert config.server.ws_port == 8080
    assert config.limits.max_inflight == 20
    assert config.limits.publish_rate == 5.5
    assert config.limits.max_connections == 10000  # untouched keys keep their defaults
    assert config.logic.embedded is False
    assert config.logic.service_password is not None
    assert config.logic.service_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)
    assert config.auth.allow_anonymous is True


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path / "mqim.toml", "[server]\nport = 2883\nhost = 'example.org'\n")
    config = load_config(
        path,
        {},
        environ={
            "MQIM_SERVER__PORT": "1884",
            "MQIM_LIMITS__MAX_INFLIGHT": "7",
            "MQIM_AUTH__ALLOW_ANONYMOUS": "true",
            "MQIM_SERVER__WS_PORT": "",  # empty means unset
            # Not configuration: no level separator.
            "MQIM_CONFIG": "/nowhere.toml",
            "MQIM_PASSWORD": "x",
            "OTHER__THING": "1",
        },
    )
    assert config.server.port == 1884
    assert config.server.host == "example.org"
    assert config.server.ws_port is None
    assert config.limits.max_inflight == 7
    assert config.auth.allow_anonymous is True


def test_flags_override_env_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "mqim.toml", "[server]\nport = 2883\ndata_dir = 'from-file'\n")
    config = load_config(
        path,
        {"server.port": 3883, "server.data_dir": None, "server.host": None},
        environ={"MQIM_SERVER__PORT": "1884", "MQIM_SERVER__HOST": "from-env"},
    )
    assert config.server.port == 3883  # flag beats env and file
    assert config.server.host == "from-env"  # unset flag (None) leaves the env value
    assert config.server.data_dir == Path("from-file")  # unset flag leaves the file value


def test_nested_env_for_tls(tmp_path: Path) -> None:
    cert = write(tmp_path / "cert.pem", "cert")
    key = write(tmp_path / "key.pem", "key")
    config = load_config(
        None,
        {},
        environ={
            "MQIM_SERVER__TLS__CERTFILE": str(cert),
            "MQIM_SERVER__TLS__KEYFILE": str(key),
            "MQIM_SERVER__TLS__PORT": "9883",
        },
    )
    assert config.server.tls is not None
    assert config.server.tls.certfile == cert
    assert config.server.tls.port == 9883
    assert config.server.tls.cafile is None


def test_invalid_env_value_names_key_and_source() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {}, environ={"MQIM_SERVER__PORT": "70000"})
    message = str(info.value)
    assert "server.port" in message
    assert "MQIM_SERVER__PORT" in message
    assert info.value.exit_code == 2


def test_invalid_file_value_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", "[limits]\nmax_inflight = 'lots'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {}, environ={})
    assert "limits.max_inflight" in str(info.value)
    assert str(path) in str(info.value)


def test_invalid_flag_value_names_key() -> None:
    with pytest.raises(ConfigError, match=r"server\.port.*command line"):
        load_config(None, {"server.port": -1}, environ={})


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"MQIM_SERVER__PROT": "1"}, r"server\.prot.*unknown key"),
        ({"MQIM_NOPE__X": "1"}, r"nope.*unknown key"),
        ({"MQIM_LIMITS__MAX_CONNECTIONS": "0"}, r"limits\.max_connections"),
        ({"MQIM_LIMITS__MAX_PAYLOAD_BYTES": "300000"}, r"limits.*max_payload_bytes.*max_packet_bytes"),
        (
            {"MQIM_LIMITS__MAX_CONNECTIONS": "10", "MQIM_LIMITS__MAX_CONNECTIONS_PER_LISTENER": "11"},
            r"max_connections_per_listener",
        ),
        ({"MQIM_SERVER__WS_PORT": "1883"}, r"ws_port and port are both 1883"),
        ({"MQIM_SERVER__TLS__CERTFILE": "/does/not/exist"}, r"server\.tls\.certfile"),
        ({"MQIM_LOGIC__BROKER_URL": "http://x"}, r"logic\.broker_url.*mqtt://"),
        ({"MQIM_LOGIC__SERVICE_USER": "bad user"}, r"logic\.service_user"),
        ({"MQIM_LOG__LEVEL": "chatty"}, r"log\.level"),
        ({"MQIM_SERVER__HOST": " "}, r"server\.host.*must not be empty"),
    ],
)
def test_invalid_values(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(None, {}, environ=environ)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.toml", {}, environ={})
    bad = write(tmp_path / "bad.toml", "[server\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, {}, environ={})
    clash = write(tmp_path / "clash.toml", "server = 5\n")
    with pytest.raises(ConfigError, match="server"):
        load_config(clash, {}, environ={})


def test_value_where_table_expected(tmp_path: Path) -> None:
    path = write(tmp_path / "clash.toml", "server = 5\n")
    with pytest.raises(ConfigError, match="expected a table"):
        load_config(path, {}, environ={"MQIM_SERVER__PORT": "1"})


def test_log_level_is_case_insensitive() -> None:
    assert load_config(None, {}, environ={"MQIM_LOG__LEVEL": "debug"}).log.level == "DEBUG"


def test_port_zero_means_any_free_port() -> None:
    config = load_config(None, {"server.port": 0, "server.ws_port": 0}, environ={})
    assert (config.server.port, config.server.ws_port) == (0, 0)


def test_limits_are_frozen() -> None:
    limits = LimitsConfig()
    with pytest.raises(ValueError, match="frozen"):
        limits.max_inflight = 5


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker", BrokerUrl(host="broker", port=1883, tls=False)),
        ("mqtts://broker", BrokerUrl(host="broker", port=8883, tls=True)),
        (
            "mqtt://u:p%40ss@10.0.0.1:2883",
            BrokerUrl(host="10.0.0.1", port=2883, tls=False, username="u", password="p@ss"),
        ),
        ("mqtt://svc@h:1", BrokerUrl(host="h", port=1, tls=False, username="svc")),
    ],
)
def test_parse_broker_url(url: str, expected: BrokerUrl) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize("url", ["http://h", "mqtt://", "mqtt://h:99999", "mqtt://h/path", "broker:1883"])
def test_parse_broker_url_rejects(url: str) -> None:
    with pytest.raises(ValueError, match="broker URL"):
        parse_broker_url(url)


@given(port=st.integers(min_value=0, max_value=65535))
def test_any_valid_port_round_trips_through_env(port: int) -> None:
    assert load_config(None, {}, environ={"MQIM_SERVER__PORT": str(port)}).server.port == port


@given(port=st.one_of(st.integers(max_value=-1), st.integers(min_value=65536)))
def test_any_invalid_port_is_refused_with_its_key(port: int) -> None:
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_config(None, {}, environ={"MQIM_SERVER__PORT": str(port)})


def test_cli_reports_invalid_config_with_exit_code_2(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", "[server]\nport = 'many'\n")
    result = CliRunner().invoke(app, ["user", "list", "--config", str(path)])
    assert result.exit_code == 2
    assert "server.port" in result.stderr
    assert result.stderr.count("\n") == 1  # one line


def test_cli_reads_config_from_env_var(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", "[server]\nport = 'many'\n")
    result = CliRunner().invoke(app, ["user", "list"], env={"MQIM_CONFIG": str(path)})
    assert result.exit_code == 2
    assert "server.port" in result.stderr


def test_a_model_built_directly_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQIM_SERVER__PORT", "1999")
    assert MqimConfig().server.port == 1883
    assert load_config(None, {}).server.port == 1999  # load_config reads os.environ by default


def test_file_keys_are_case_sensitive_env_names_are_not(tmp_path: Path) -> None:
    path = write(tmp_path / "upper.toml", "[SERVER]\nport = 2883\n")
    with pytest.raises(ConfigError, match=r"SERVER.*unknown key"):
        load_config(path, {}, environ={})
    assert load_config(None, {}, environ={"MQIM_Server__Port": "2884"}).server.port == 2884


@pytest.mark.parametrize("name", ["MQIM_SERVER____PORT", "MQIM___PORT", "MQIM_SERVER__"])
def test_malformed_variable_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=f"malformed configuration variable {name}: empty level"):
        load_config(None, {}, environ={name: "1"})


def test_json_in_the_environment_is_not_decoded() -> None:
    with pytest.raises(ConfigError, match=r"auth\.methods"):
        load_config(None, {}, environ={"MQIM_AUTH__METHODS": '["token"]'})


def test_logic_limits_carry_every_configured_limit(tmp_path: Path) -> None:
    # One mapping for `serve`, `broker` and `logic`: `mqim broker` used to drop max_group_members.
    from mqim.cli._common import logic_limits

    config = load_config(
        write(tmp_path / "mqim.toml", "[limits]\nmax_payload_bytes = 4096\nmax_group_members = 7\n"),
        environ={},
    )
    limits = logic_limits(config)
    assert (limits.max_payload_bytes, limits.max_group_members) == (4096, 7)
