"""The sections of the configuration (`[server]`, `[limits]`, ...), one model each.

Every section refuses unknown keys and is frozen; `mqim/cli/_config.py` assembles them into
`MqimConfig` and loads it.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from mqim.cli._broker_url import parse_broker_url
from mqim.protocol import ID_PATTERN

Port = Annotated[int, Field(ge=0, le=65535)]
"""A TCP port; 0 asks the OS for a free one."""

_MIB = 1024 * 1024


class Section(BaseModel):
    """Base of the configuration's sections."""

    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(Section):
    """A TLS listener (MQTT over TLS)."""

    certfile: FilePath
    """Server certificate chain (PEM)."""
    keyfile: FilePath
    """Private key of the certificate (PEM)."""
    cafile: FilePath | None = None
    """CA bundle to verify client certificates; None accepts clients without certificates."""
    port: Port = 8883
    """Port of the TLS listener."""


class ServerConfig(Section):
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


class WebConfig(Section):
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


class AdminConfig(Section):
    """The HTTP admin listener: `/metrics` (Prometheus), `/healthz`, `/readyz`, `/status`."""

    enabled: bool = True
    """Serve the admin endpoints (`mqim serve` and `mqim broker`)."""
    host: str = "127.0.0.1"
    """Address to bind; loopback by default: `/status` shows internals, keep it off the internet."""
    port: Port = 9883
    """Port of the admin listener. The same host and port as `[web]` serve both on one listener."""


class SysConfig(Section):
    """The `$SYS/broker/...` topics (Mosquitto's names), readable only where the ACL grants it."""

    interval_s: Annotated[float, Field(ge=0, le=86400)] = 10.0
    """Seconds between publications; 0 publishes none."""


class LimitsConfig(Section):
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
    """Retained topics all clients together keep (presence is counted apart)."""
    max_retained_per_account: PositiveInt = 1000
    """Retained topics one account (user, bridge) keeps."""

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


class LogicConfig(Section):
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


class AuthConfig(Section):
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


class LogConfig(Section):
    """Logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level logged."""
    format: Literal["text", "json"] = "text"
    """`text` for humans, `json` for one structured object per line."""

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class ClusterConfig(Section):
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
