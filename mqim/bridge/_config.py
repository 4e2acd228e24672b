"""Bridge definitions, IM mapping rules and the `<data_dir>/bridges.json` file that holds them.

The file is the configuration of bridges: `mqim bridge add|remove|map|command` edit it, and it may
be edited by hand (the server reads it at start). Its shape::

    {
      "version": 1,
      "bridges": [{"name": "edge", "remote": "mqtt://10.0.0.5:1883", "username": "mqim",
                   "password": "...", "topics": ["sensors/# both 1 site/ edge/"]}],
      "mappings": [{"name": "plant7-alarms", "source": "bridge/plant7/alarms/+",
                    "sender": "plant7", "group": "ops"}],
      "commands": [{"name": "ops-cmd", "group": "ops", "topic_prefix": "bridge/plant7/cmd"}]
    }

The file holds remote passwords: it is written with mode 0600.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Final, Self
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from mqim.acl import is_valid_filter, is_valid_topic
from mqim.bridge._exceptions import BridgeConfigError, TopicRuleError
from mqim.bridge._loop import DEFAULT_ECHO_WINDOW_S, DEFAULT_MAX_ECHO_ENTRIES
from mqim.bridge._topics import TopicRule, parse_topic_rule
from mqim.protocol import ID_PATTERN

BRIDGES_FILENAME: Final = "bridges.json"
"""The bridges file inside the data directory."""

STATUS_FILENAME: Final = "bridges-status.json"
"""Where a running server writes bridge status and counters, inside the data directory."""

OUTBOX_FILENAME: Final = "bridge-{name}-outbox.db"
"""The durable outbox of outbound bridge `name`, inside the data directory (`outbox_filename`)."""

MAX_BRIDGES: Final = 64
"""Outbound bridges in one file."""

MAX_TOPICS_PER_BRIDGE: Final = 64
"""Topic rules of one outbound bridge."""

MAX_MAPPINGS: Final = 256
"""IM mapping rules (and, separately, command routes) in one file."""

MAX_FILE_BYTES: Final = 1024 * 1024
"""Largest bridges file read."""

Name = Annotated[str, StringConstraints(pattern=f"^{ID_PATTERN}$")]
"""A bridge, mapping or account name: the id rule of users and groups."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RemoteUrl(_Model):
    """A parsed `mqtt://host[:port]` or `mqtts://host[:port]`."""

    host: str
    port: int
    tls: bool


def parse_remote(url: str) -> RemoteUrl:
    """Parse a remote broker URL; the port defaults to 1883 (mqtt) or 8883 (mqtts).

    Credentials belong in `username`/`password`, not in the URL (the URL is shown by `list`).

    Raises:
        BridgeConfigError: The URL is not `mqtt://` or `mqtts://` with a host and nothing else.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise BridgeConfigError(f"remote must start with mqtt:// or mqtts://, got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BridgeConfigError(f"remote must not have a path, query or fragment: {url!r}")
    if parts.username is not None or parts.password is not None:
        raise BridgeConfigError("put credentials in --username/--password, not in the remote URL")
    try:
        port = parts.port
    except ValueError as exc:
        raise BridgeConfigError(f"invalid port in remote {url!r}") from exc
    if not parts.hostname:
        raise BridgeConfigError(f"remote has no host: {url!r}")
    tls = parts.scheme == "mqtts"
    return RemoteUrl(host=unquote(parts.hostname), port=port or (8883 if tls else 1883), tls=tls)


class BridgeConfig(_Model):
    """One outbound bridge: mqim connects to `remote` and maps `topics` both ways."""

    name: Name
    """Unique name (also the default client id suffix and the key of its status)."""
    remote: str
    """`mqtt://host[:port]` or `mqtts://host[:port]`."""
    topics: list[str] = Field(min_length=1, max_length=MAX_TOPICS_PER_BRIDGE)
    """Topic rules in Mosquitto syntax: `pattern [in|out|both [qos [local_prefix remote_prefix]]]`."""
    username: str | None = None
    """User name on the remote broker."""
    password: str | None = Field(default=None, repr=False)
    """Password on the remote broker (kept in the 0600 bridges file, never printed)."""
    client_id: str | None = Field(default=None, max_length=128)
    """MQTT client id on the remote; default `mqim-bridge-{name}`. Fixed, so the remote keeps
    our persistent session (clean_session=0) across reconnects and restarts."""
    cafile: Path | None = None
    """CA bundle to verify an `mqtts://` remote; None uses the system's."""
    keepalive: PositiveInt = 60
    """MQTT keepalive towards the remote, in seconds."""
    reconnect_min_delay: PositiveFloat = 0.5
    """First reconnect delay, in seconds; doubles on each failed attempt."""
    reconnect_max_delay: PositiveFloat = 30.0
    """Longest reconnect delay, in seconds."""
    max_pending_out: PositiveInt = 10_000
    """Messages the durable outbox holds until the remote confirms them; when it is full, new
    messages are refused (their publishers are not acknowledged and send again), never dropped."""
    max_pending_out_bytes: PositiveInt = 64 * 1024 * 1024
    """Payload plus topic bytes the outbox holds (an empty outbox takes one message of any size)."""
    echo_window_s: PositiveFloat = DEFAULT_ECHO_WINDOW_S
    """Seconds an exported message's echo from the remote is expected (see `mqim.bridge._loop`)."""
    max_echo_entries: PositiveInt = DEFAULT_MAX_ECHO_ENTRIES
    """Expected echoes remembered."""

    @field_validator("remote")
    @classmethod
    def _valid_remote(cls, value: str) -> str:
        try:
            parse_remote(value)
        except BridgeConfigError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("topics")
    @classmethod
    def _valid_topics(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                parse_topic_rule(text)
            except TopicRuleError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @model_validator(mode="after")
    def _delays(self) -> Self:
        if self.reconnect_min_delay > self.reconnect_max_delay:
            raise ValueError("reconnect_min_delay must not exceed reconnect_max_delay")
        return self

    @property
    def rules(self) -> tuple[TopicRule, ...]:
        """The parsed topic rules."""
        return tuple(parse_topic_rule(text) for text in self.topics)

    @property
    def effective_client_id(self) -> str:
        """The client id used on the remote."""
        return self.client_id or f"mqim-bridge-{self.name}"

    @property
    def remote_url(self) -> RemoteUrl:
        """The parsed remote URL."""
        return parse_remote(self.remote)


def outbox_filename(name: str) -> str:
    """The file name of bridge `name`'s outbox inside the data directory."""
    return OUTBOX_FILENAME.format(name=name)


class ImMapping(_Model):
    """Turns bridged device messages into conversation messages.

    Every message routed on a topic matching `source` becomes an `im/v1/up/{sender}/msg` request
    to `group` (or to user `to`) with `data = {"topic": ..., "payload": ...}`, processed by the
    logic service like any other message (validated, persisted, sequenced, acked to `sender`).
    """

    name: Name
    """Unique name of the rule."""
    source: str
    """Topic filter of the device messages, e.g. `bridge/plant7/alarms/+`."""
    sender: Name
    """Account the messages are sent as (a device user, e.g. `plant7`)."""
    group: Name | None = None
    """Target group (exactly one of `group` and `to`)."""
    to: Name | None = None
    """Target user, for a direct conversation."""
    text: str | None = Field(default=None, max_length=1024)
    """Optional text template: `${topic}`, `${last}` (last topic level) and `${payload}`."""

    @field_validator("source")
    @classmethod
    def _valid_source(cls, value: str) -> str:
        if not is_valid_filter(value) or value.startswith(("$", "im/")):
            raise ValueError(f"source {value!r} must be a valid filter outside im/ and $ topics")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.group is None) == (self.to is None):
            raise ValueError("exactly one of 'group' and 'to' is required")
        return self


class CommandRoute(_Model):
    """Sends conversation commands out to devices.

    A stored message of `group` (or delivered to user `user`, e.g. a direct message to the device
    account) whose `data` has a `device_cmd` field is published (QoS 1) on
    `{topic_prefix}/{data.device or "all"}` with payload
    `{"cmd": <device_cmd>, "from": ..., "conv": ..., "seq": ..., "id": ...}`. Only messages the
    logic service stored and delivered are seen (the route listens on `im/v1/g/{group}/msg` or
    `im/v1/u/{user}/msg`), so a command has a seq like any message.
    """

    name: Name
    """Unique name of the route."""
    group: Name | None = None
    """The group whose messages may carry commands (exactly one of `group` and `user`)."""
    user: Name | None = None
    """The user whose inbox messages may carry commands."""
    topic_prefix: str
    """Where commands go, e.g. `bridge/plant7/cmd` (reaches the inbound bridge `plant7`)."""

    @field_validator("topic_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        if not is_valid_topic(value) or value.startswith(("$", "im/")) or value.endswith("/"):
            raise ValueError(f"topic_prefix {value!r} must be a topic outside im/ and $ topics")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.group is None) == (self.user is None):
            raise ValueError("exactly one of 'group' and 'user' is required")
        return self


class BridgesFile(_Model):
    """The content of `<data_dir>/bridges.json`."""

    version: int = 1
    bridges: list[BridgeConfig] = Field(default_factory=list, max_length=MAX_BRIDGES)
    mappings: list[ImMapping] = Field(default_factory=list, max_length=MAX_MAPPINGS)
    commands: list[CommandRoute] = Field(default_factory=list, max_length=MAX_MAPPINGS)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        for what, names in (
            ("bridge", [b.name for b in self.bridges]),
            ("mapping", [m.name for m in self.mappings]),
            ("command route", [c.name for c in self.commands]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {what} names: {', '.join(dupes)}")
        client_ids = [b.effective_client_id for b in self.bridges]
        if len(set(client_ids)) != len(client_ids):
            raise ValueError("two bridges use the same client id")
        return self

    def bridge(self, name: str) -> BridgeConfig | None:
        """The bridge named `name`, if any."""
        return next((b for b in self.bridges if b.name == name), None)


def _explain(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "file"
        message = str(err["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


def parse_bridges(text: str, *, source: str = "bridges file") -> BridgesFile:
    """Validate the JSON text of a bridges file.

    Raises:
        BridgeConfigError: Not JSON, or an invalid value (the message names where).
    """
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise BridgeConfigError(f"{source} is not valid JSON: {exc}") from exc
    try:
        return BridgesFile.model_validate(raw)
    except ValidationError as exc:
        raise BridgeConfigError(f"invalid {source}: {_explain(exc)}") from exc


def load_bridges(path: Path) -> BridgesFile:
    """Read a bridges file; a missing file is an empty configuration.

    Raises:
        BridgeConfigError: The file cannot be read, is too large or is invalid.
    """
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return BridgesFile()
    except OSError as exc:
        raise BridgeConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise BridgeConfigError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    return parse_bridges(data.decode("utf-8", errors="replace"), source=str(path))


def dump_bridges(config: BridgesFile) -> str:
    """The JSON text of a bridges file (passwords included: the file is private)."""
    return json.dumps(config.model_dump(mode="json", exclude_none=True), indent=2) + "\n"


def save_bridges(path: Path, config: BridgesFile) -> None:
    """Write a bridges file atomically (temporary file + rename), readable by its owner only.

    Raises:
        BridgeConfigError: The file cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".bridges-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(dump_bridges(config))
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise BridgeConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
