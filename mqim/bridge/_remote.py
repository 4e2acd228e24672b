"""The aiomqtt side of an outbound bridge: its client, and two things to check around aiomqtt."""

from __future__ import annotations

import ssl
from typing import Final

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from mqim.bridge._config import BridgeConfig

SEND_WINDOW: Final = 32
"""Outbound messages published before waiting for their acknowledgements."""

CONNECT_TIMEOUT_S: Final = 10.0
"""How long a connection attempt (and its subscriptions) may take."""


def new_client(config: BridgeConfig, *, tls: ssl.SSLContext | None) -> aiomqtt.Client:
    """A fresh aiomqtt client for one connection attempt of the bridge `config` to its remote."""
    remote = config.remote_url
    client = aiomqtt.Client(
        remote.host,
        remote.port,
        username=config.username,
        password=config.password,
        identifier=config.effective_client_id,
        clean_session=False,
        keepalive=config.keepalive,
        tls_context=tls,
        timeout=CONNECT_TIMEOUT_S,
        max_inflight_messages=SEND_WINDOW,
    )
    # Acknowledge inbound QoS 1 only once the message is routed and durable here. aiomqtt has
    # no option for it; its paho client does (`manual_ack`); `OutboundBridge._read_loop` calls `ack()`.
    client._client.manual_ack_set(True)
    # Up to SEND_WINDOW publishes wait for their acknowledgements by design: not a warning.
    client.pending_calls_threshold = SEND_WINDOW
    return client


def refused(granted: tuple[int, ...] | list[ReasonCode]) -> bool:
    """Whether a SUBACK's grants refuse any subscription (a code of 0x80 or above)."""
    return any((code.value if isinstance(code, ReasonCode) else code) >= 0x80 for code in granted)
