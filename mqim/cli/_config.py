"""The configuration model and its loader: defaults < TOML file < environment < command-line flags.

Environment variables are `MQIM_<SECTION>__<KEY>` (nested tables add more `__<KEY>` levels), e.g.
`MQIM_SERVER__PORT=1884` or `MQIM_SERVER__TLS__CERTFILE=/etc/mqim/cert.pem`; an empty value
means "not set" (None). Relative paths are relative to the working directory.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from mqim.cli._exceptions import ConfigError
from mqim.hooks import HooksConfig
from mqim.protocol import ID_PATTERN

ENV_PREFIX = "MQIM_"
"""Prefix of configuration environment variables."""

ENV_SEPARATOR = "__"
"""Separator of levels in configuration environment variable names."""

DB_FILENAME = "mqim.db"
"""The SQLite storage file inside `server.data_dir`."""

Port = Annotated[int, Field(ge=0, le=65535)]
"""A TCP port; 0 asks the OS for a free one."""

_MIB = 1024 * 1024


class _Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Section):
    """A TLS listener (MQTT over TLS)."""

    certfile: FilePath
    """Server certificate chain (PEM)."""
    keyfile: FilePath
    """Private key of the certificate (PEM)."""
    cafile: FilePath | None = None
    """CA bundle to verify client certificates; None accepts clients without certificates."""
    port: Port = 8883
    """Port of the TLS listener."""


class ServerConfig(_Section):
    """Listeners and where the single-node server keeps its data."""

    host: str = "127.0.0.1"
    """Address the listeners bind to."""
    port: Port = 1883
    """Plain MQTT (TCP) port."""
    data_dir: Path = Path("./mqim-data")
    """Directory of the SQLite database and session files."""
    ws_port: Port | None = None
    """MQTT over WebSocket port; None disables the WebSocket listener."""
    tls: TlsConfig | None = None
    """TLS listener; None disables it."""
    proxy_protocol: bool = False
    """The plain TCP listener reads a PROXY protocol header (v1 or v2) from `proxy_from`
    addresses first and uses the client's address it names (behind a TCP load balancer)."""
    proxy_from: tuple[str, ...] = ()
    """Addresses or networks (`10.0.0.0/8`) of the load balancers allowed to send that header."""

    @field_validator("proxy_from", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("proxy_from")
    @classmethod
    def _proxy_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return value

    @field_validator("host")
    @classmethod
    def _host_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _distinct_ports(self) -> Self:
        if self.proxy_protocol and not self.proxy_from:
            raise ValueError("proxy_protocol needs proxy_from (the load balancers' addresses)")
        ports = [("port", self.port), ("ws_port", self.ws_port)]
        if self.tls is not None:
            ports.append(("tls.port", self.tls.port))
        seen: dict[int, str] = {}
        for name, port in ports:
            if port is None or port == 0:
                continue
            if port in seen:
                raise ValueError(f"{name} and {seen[port]} are both {port}")
            seen[port] = name
        return self


class WebConfig(_Section):
    """The web chat client's HTTP listener (`mqim serve` only; it needs `server.ws_port`)."""

    enabled: bool = True
    """Serve the web client; it starts only when the WebSocket listener is on."""
    host: str = "127.0.0.1"
    """Address the HTTP listener binds to (loopback by default)."""
    port: Port = 8080
    """Port of the HTTP listener."""
    ws_url: str | None = None
    """WebSocket URL the page connects to (behind a proxy); None derives it from the address the
    browser used and `server.ws_port`."""
    root: Path | None = None
    """Directory of the built client; None means the one `make web` builds."""

    @field_validator("ws_url")
    @classmethod
    def _ws_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value


class AdminConfig(_Section):
    """The HTTP admin listener: `/metrics` (Prometheus), `/healthz`, `/readyz`, `/status`."""

    enabled: bool = True
    """Serve the admin endpoints (`mqim serve` and `mqim broker`)."""
    host: str = "127.0.0.1"
    """Address to bind; loopback by default: `/status` shows internals, keep it off the internet."""
    port: Port = 9883
    """Port of the admin listener. The same host and port as `[web]` serve both on one listener."""


class SysConfig(_Section):
    """The `$SYS/broker/...` topics (Mosquitto's names), readable only where the ACL grants it."""

    interval_s: Annotated[float, Field(ge=0, le=86400)] = 10.0
    """Seconds between publications; 0 publishes none."""


class LimitsConfig(_Section):
    """Named limits on everything a client can make grow."""

    max_payload_bytes: PositiveInt = 65536
    """Largest PUBLISH payload accepted from a client."""
    max_packet_bytes: PositiveInt = 262144
    """Largest MQTT packet accepted (any type); a bigger PUBLISH within
    `max_publish_discard_bytes` is discarded and answered `too_large`, anything else bigger
    closes the connection."""
    max_publish_discard_bytes: PositiveInt = 16 * _MIB
    """Hard safety bound: a PUBLISH longer than this closes the connection; between
    `max_packet_bytes` and this it is discarded and answered `too_large`. Also the largest
    WebSocket message accepted (a WebSocket message is buffered whole)."""
    max_connections: PositiveInt = 10000
    """Concurrent connections, all listeners together."""
    max_connections_per_listener: PositiveInt | None = None
    """Concurrent connections per listener; None means only `max_connections` applies."""
    max_inflight: PositiveInt = 100
    """Unacknowledged QoS 1/2 messages in flight to one client."""
    max_inflight_service: PositiveInt = 1000
    """Unacknowledged requests in flight to one logic worker (`mqim logic`)."""
    max_held_uplinks: PositiveInt = 20000
    """Client publishes whose PUBACK waits for the logic (stored) at once, all clients together;
    at this bound the broker stops reading from publishers until some are settled."""
    max_unacked_publishes: PositiveInt = 1000
    """PUBACKs one connection may be owed at once; beyond it the broker stops reading from it."""
    max_queue_messages: PositiveInt = 10000
    """Messages queued for one offline persistent session."""
    max_queue_bytes: PositiveInt = 16 * _MIB
    """Payload bytes queued for one offline persistent session."""
    session_expiry_s: PositiveInt = 7 * 24 * 3600
    """Seconds a disconnected persistent session is kept."""
    max_subscriptions_per_session: PositiveInt = 100
    """Subscriptions one session may hold (server-managed ones included)."""
    max_wide_subscriptions_per_session: PositiveInt = 8
    """Subscriptions one session may hold whose receive scope is narrower than their filter
    (`#` for an ordinary user: everything it may receive); one more gets SUBACK 0x80."""
    publish_rate: PositiveFloat = 100.0
    """Sustained publishes per second per user, all its connections together (token bucket rate);
    beyond it a publish is dropped with a `rate_limited` error."""
    publish_burst: PositiveInt = 200
    """Publishes a user may send at once (token bucket size)."""
    max_connections_per_user: PositiveInt = 16
    """Connections one user may hold at once; one more is refused with CONNACK 5."""
    connect_rate_per_address: PositiveFloat = 50.0
    """CONNECTs per second from one source address (IPv6: per /64); beyond it CONNACK 3."""
    connect_burst_per_address: PositiveInt = 500
    """CONNECTs one source address may send at once."""
    max_violations: PositiveInt = 20
    """Refused publishes (rate, size, ACL) within `violation_window_s` that close a connection."""
    violation_window_s: PositiveFloat = 10.0
    """The window of `max_violations`, in seconds."""
    max_client_id_length: PositiveInt = 128
    """Longest MQTT client id accepted."""
    max_keepalive_s: PositiveInt = 3600
    """Largest keepalive a client may ask for."""
    connect_timeout_s: PositiveFloat = 10.0
    """Seconds a new connection has to send its CONNECT."""
    max_group_members: PositiveInt = 10000
    """Members of one group (owner included)."""
    max_retained_messages: PositiveInt = 10000
    """Retained messages the broker keeps."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.max_payload_bytes > self.max_packet_bytes:
            raise ValueError(
                f"max_payload_bytes ({self.max_payload_bytes}) must not exceed "
                f"max_packet_bytes ({self.max_packet_bytes})"
            )
        per_listener = self.max_connections_per_listener
        if per_listener is not None and per_listener > self.max_connections:
            raise ValueError(
                f"max_connections_per_listener ({per_listener}) must not exceed "
                f"max_connections ({self.max_connections})"
            )
        return self


class LogicConfig(_Section):
    """The IM logic service: embedded in `mqim serve`, or a separate `mqim logic` process."""

    embedded: bool = True
    """Run the logic service inside `mqim serve`."""
    broker_url: str | None = None
    """Broker a standalone `mqim logic` connects to (`mqtt://[user:pass@]host[:port]`, or
    `mqtts://`); None means the `server` section's host and port."""
    service_user: Annotated[str, StringConstraints(pattern=f"^{ID_PATTERN}$")] = "mqim-logic"
    """Account the standalone logic service logs in with (kind `service`)."""
    service_password: SecretStr | None = None
    """Password of `service_user`."""

    @field_validator("broker_url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_broker_url(value)
        return value


AuthMethodName = Literal["cert", "token", "password"]


class AuthConfig(_Section):
    """Who may connect."""

    allow_anonymous: bool = False
    """Accept connections without credentials (they get no IM identity)."""
    methods: tuple[AuthMethodName, ...] = ("cert", "token", "password")
    """Authentication methods in the order they are tried (env: comma-separated)."""
    token_audience: Annotated[str, StringConstraints(min_length=1, max_length=256)] = "mqim"
    """The audience (`aud`) a token must name; `mqim token issue` uses it by default."""
    token_leeway_s: Annotated[int, Field(ge=0, le=3600)] = 60
    """Clock skew allowed on token expiry and issue times, in seconds."""
    token_keys_file: Path | None = None
    """Token signing keys (JSON, mode 0600); None means `<server.data_dir>/token-keys.json`."""
    cert_user_field: Literal["cn", "san"] = "cn"
    """Where a TLS client certificate names its user: subject CN or first DNS subjectAltName."""
    reload_interval_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    """How often the server reads stored ACL rules, roles and disabled accounts, in seconds."""

    @field_validator("methods", mode="before")
    @classmethod
    def _split_methods(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("methods")
    @classmethod
    def _distinct_methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one method is required")
        if len(set(value)) != len(value):
            raise ValueError(f"a method is listed twice: {list(value)}")
        return value


class LogConfig(_Section):
    """Logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level logged."""
    format: Literal["text", "json"] = "text"
    """`text` for humans, `json` for one structured object per line."""

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class ClusterConfig(_Section):
    """Cluster mode: `mqim broker` nodes sharing Redis and MongoDB; the admin commands use the
    MongoDB too (never the local SQLite) once `mongo_url` is set."""

    node_id: Annotated[str, StringConstraints(pattern=f"^{ID_PATTERN}$")] | None = None
    """This node's id, unique in the cluster (`mqim broker --node-id`)."""
    redis_url: str | None = None
    """Redis of the cluster: registry, routes, streams, sessions (`--redis`, env MQIM_REDIS_URL)."""
    mongo_url: str | None = None
    """MongoDB of the cluster: messages, accounts, groups, ACL rules (`--mongo`, env MQIM_MONGO_URL)."""
    database: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "mqim"
    """MongoDB database name."""
    prefix: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "mqim"
    """Redis key prefix shared by the cluster's nodes."""
    heartbeat_s: Annotated[float, Field(ge=0.05, le=60)] = 1.0
    """How often a node refreshes its heartbeat, in seconds."""
    node_ttl_s: Annotated[float, Field(ge=0.2, le=600)] = 4.0
    """A node silent this long is dead and its sessions are adopted, in seconds."""

    @field_validator("redis_url", "mongo_url")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _ttl_above_heartbeat(self) -> Self:
        if self.node_ttl_s <= self.heartbeat_s:
            raise ValueError(f"node_ttl_s ({self.node_ttl_s}) must exceed heartbeat_s ({self.heartbeat_s})")
        return self


class MqimConfig(_Section):
    """The whole configuration. Build it with `load_config`."""

    server: ServerConfig = ServerConfig()
    limits: LimitsConfig = LimitsConfig()
    logic: LogicConfig = LogicConfig()
    auth: AuthConfig = AuthConfig()
    log: LogConfig = LogConfig()
    web: WebConfig = WebConfig()
    admin: AdminConfig = AdminConfig()
    sys: SysConfig = SysConfig()
    cluster: ClusterConfig = ClusterConfig()
    hooks: HooksConfig = HooksConfig()

    @property
    def db_path(self) -> Path:
        """The SQLite storage file: `<server.data_dir>/mqim.db`."""
        return self.server.data_dir / DB_FILENAME


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """A parsed `mqtt://[user[:password]@]host[:port]` (or `mqtts://`) URL."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse a broker URL; the port defaults to 1883 (`mqtt`) or 8883 (`mqtts`).

    Raises:
        ValueError: When the URL is not an `mqtt://` or `mqtts://` URL with a host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"broker URL must start with mqtt:// or mqtts://, got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL must not have a path, query or fragment: {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid port in broker URL {url!r}") from exc
    if not parts.hostname:
        raise ValueError(f"broker URL has no host: {url!r}")
    tls = parts.scheme == "mqtts"
    return BrokerUrl(
        host=parts.hostname,
        port=port if port is not None else (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


# -- loading ---------------------------------------------------------------------------------------

_Flat = dict[tuple[str, ...], tuple[Any, str]]
"""Leaf values by key path, each with a description of where it came from."""


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> MqimConfig:
    """Build the configuration: defaults < TOML file < environment < `overrides`.

    Args:
        path: A TOML file, or None for no file.
        overrides: Values from command-line flags, by dotted key (`{"server.port": 1884}`);
            None values are ignored, so unset flags can be passed as they are.
        environ: The environment to read `MQIM_*` variables from; default `os.environ`.

    Raises:
        ConfigError: The file is missing or not TOML, or a value is invalid; the message names
            the key (`server.port`) and where the value came from.
    """
    flat: _Flat = {}
    if path is not None:
        _flatten(_read_toml(path), (), f"file {path}", flat)
    flat.update(_from_env(os.environ if environ is None else environ))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            flat[tuple(dotted.split("."))] = (value, "command line")
    tree = _unflatten(flat)
    try:
        return MqimConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, flat)) from exc


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc


def _flatten(table: Mapping[str, Any], prefix: tuple[str, ...], source: str, out: _Flat) -> None:
    for key, value in table.items():
        path = (*prefix, key)
        if isinstance(value, Mapping):
            _flatten(value, path, source, out)
        else:
            out[path] = (value, source)


def _from_env(environ: Mapping[str, str]) -> _Flat:
    out: _Flat = {}
    for name, value in environ.items():
        # Only names with a level separator are configuration (MQIM_CONFIG, MQIM_PASSWORD are not).
        if not name.startswith(ENV_PREFIX) or ENV_SEPARATOR not in name:
            continue
        levels = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_SEPARATOR))
        if any(not level for level in levels):
            raise ConfigError(f"malformed configuration variable {name}: empty level")
        out[levels] = (value if value != "" else None, f"env {name}")
    return out


def _unflatten(flat: _Flat) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, (value, source) in flat.items():
        node = tree
        for depth, key in enumerate(path[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"{where}: expected a table, got a value (from {source})")
            node = child
        if isinstance(node.get(path[-1]), dict):
            raise ConfigError(f"{'.'.join(path)}: expected a table, got a value (from {source})")
        node[path[-1]] = value
    return tree


def _explain(exc: ValidationError, flat: _Flat) -> str:
    problems = []
    for err in exc.errors():
        loc = tuple(str(part) for part in err["loc"])
        key = ".".join(loc) or "config"
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
        source = _source_of(loc, flat)
        if source is not None and loc in flat:
            problems.append(f"{key} = {flat[loc][0]!r} ({source}): {message}")
        elif source is not None:
            problems.append(f"{key} ({source}): {message}")
        else:
            problems.append(f"{key}: {message}")
    return "invalid configuration: " + "; ".join(problems)


def _source_of(loc: tuple[str, ...], flat: _Flat) -> str | None:
    if loc in flat:
        return flat[loc][1]
    # A section-level error (a cross-field check): name every source that fed the section.
    sources = sorted({source for path, (_, source) in flat.items() if path[: len(loc)] == loc})
    return ", ".join(sources) if sources else None
