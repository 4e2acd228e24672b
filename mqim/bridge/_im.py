"""Device traffic into conversations and conversation commands out to devices. Pure.

`uplink_for` turns a bridged device message into an ordinary uplink request
(`im/v1/up/{sender}/msg`), so the logic service validates, persists, sequences and acks it like
a message typed by a person. `command_for` turns a stored conversation message carrying
`data.device_cmd` into a device command publish.

The request id is derived from the device message (a digest of topic and payload), so a QoS 1
redelivery of the same device message maps to the same id and the logic service stores it once.
Two genuinely distinct device messages must therefore differ in topic or payload (devices
usually include a timestamp or counter).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from string import Template
from typing import Any, Final

from mqim.bridge._config import CommandRoute, ImMapping
from mqim.protocol import UpKind, up_topic

MAX_TEXT_CHARS: Final = 4096
"""Longest text produced from a mapping's template."""

MAX_DEVICE_LEVELS: Final = 8
"""Topic levels a command's `data.device` may add under the route's prefix."""

_LEVEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def stable_message_id(topic: str, payload: bytes) -> str:
    """The request id of a device message: the same message always gets the same id."""
    digest = hashlib.blake2b(topic.encode("utf-8", "replace") + b"\0" + payload, digest_size=16)
    return f"br-{digest.hexdigest()}"


def decode_payload(payload: bytes) -> dict[str, Any]:
    """A device payload as JSON content: parsed JSON, else UTF-8 text, else base64."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return {"payload_b64": base64.b64encode(payload).decode("ascii")}
    try:
        return {"payload": json.loads(text)}
    except ValueError:
        return {"payload": text}


def uplink_for(mapping: ImMapping, topic: str, payload: bytes) -> tuple[str, bytes]:
    """The uplink request (topic, JSON payload) for a device message matched by `mapping`."""
    data: dict[str, Any] = {"topic": topic, **decode_payload(payload)}
    body: dict[str, Any] = {"v": 1, "id": stable_message_id(topic, payload), "data": data}
    if mapping.group is not None:
        body["group"] = mapping.group
    else:
        body["to"] = mapping.to
    if mapping.text is not None:
        text = Template(mapping.text).safe_substitute(
            topic=topic,
            last=topic.rsplit("/", 1)[-1],
            payload=payload.decode("utf-8", "replace")[:MAX_TEXT_CHARS],
        )
        body["text"] = text[:MAX_TEXT_CHARS]
    return up_topic(mapping.sender, UpKind.MSG), json.dumps(body, separators=(",", ":")).encode()


def _device_topic(device: object) -> str | None:
    if device is None:
        return "all"
    if not isinstance(device, str):
        return None
    levels = device.split("/")
    if len(levels) > MAX_DEVICE_LEVELS or not all(
        _LEVEL.match(level) and level not in (".", "..") for level in levels
    ):
        return None
    return device


def command_for(route: CommandRoute, payload: bytes) -> tuple[str, bytes] | None:
    """The device command (topic, JSON payload) carried by a stored message, or None.

    The message must be a delivered message (`{"conv", "seq", "from", "data": {"device_cmd"...}}`);
    `data.device` (optional, `a/b` levels of `[A-Za-z0-9_.-]`, not `.` or `..`) picks the
    sub-topic. Anything
    else is not a command.
    """
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(message, dict):
        return None
    data = message.get("data")
    if not isinstance(data, dict) or "device_cmd" not in data:
        return None
    device = _device_topic(data.get("device"))
    if device is None:
        return None
    command = {
        "cmd": data["device_cmd"],
        "from": message.get("from"),
        "conv": message.get("conv"),
        "seq": message.get("seq"),
        "id": message.get("id"),
    }
    return f"{route.topic_prefix}/{device}", json.dumps(command, separators=(",", ":")).encode()
