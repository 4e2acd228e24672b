"""`mqim serve`: run the embedded single-node server until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

from mqim.auth import AuthOptions
from mqim.broker import BrokerSettings, Listener
from mqim.cli._common import logic_limits
from mqim.cli._config import MqimConfig
from mqim.cli._logging import configure_logging
from mqim.server import EmbeddedServer
from mqim.web import WebOptions

if TYPE_CHECKING:
    from mqim.admin import AdminOptions

log = logging.getLogger("mqim.server")


def broker_settings(config: MqimConfig) -> BrokerSettings:
    """Map the configuration's limits onto the broker's."""
    limits = config.limits
    return BrokerSettings(
        max_connections=limits.max_connections,
        max_packet_bytes=limits.max_packet_bytes,
        max_publish_discard_bytes=limits.max_publish_discard_bytes,
        max_inflight=limits.max_inflight,
        max_inflight_service=limits.max_inflight_service,
        max_held_uplinks=limits.max_held_uplinks,
        max_unacked_publishes=limits.max_unacked_publishes,
        max_queue_messages=limits.max_queue_messages,
        max_queue_bytes=limits.max_queue_bytes,
        session_expiry_s=float(limits.session_expiry_s),
        max_subscriptions_per_session=limits.max_subscriptions_per_session,
        max_wide_subscriptions_per_session=limits.max_wide_subscriptions_per_session,
        max_client_id_chars=limits.max_client_id_length,
        connect_timeout_s=limits.connect_timeout_s,
        max_retained=limits.max_retained_messages,
        max_retained_per_account=limits.max_retained_per_account,
        max_payload_bytes=limits.max_payload_bytes,
        publish_rate=limits.publish_rate,
        publish_burst=limits.publish_burst,
        max_connections_per_user=limits.max_connections_per_user,
        connect_rate_per_address=limits.connect_rate_per_address,
        connect_burst_per_address=limits.connect_burst_per_address,
        max_violations=limits.max_violations,
        violation_window_s=limits.violation_window_s,
        policy_poll_interval_s=config.auth.reload_interval_s,
    )


def auth_options(config: MqimConfig) -> AuthOptions:
    """Map the configuration's `auth` section onto the server's authentication options."""
    auth = config.auth
    return AuthOptions(
        methods=auth.methods,
        token_audience=auth.token_audience,
        token_leeway_s=float(auth.token_leeway_s),
        token_keys_file=auth.token_keys_file,
        cert_user_field=auth.cert_user_field,
    )


def listeners(config: MqimConfig) -> list[Listener]:
    """The listeners the configuration asks for: TCP, and optionally WebSocket and TLS."""
    server = config.server
    per_listener = config.limits.max_connections_per_listener or 0
    result = [
        Listener(
            name="default",
            host=server.host,
            port=server.port,
            max_connections=per_listener,
            proxy_protocol=server.proxy_protocol,
            proxy_from=server.proxy_from,
        )
    ]
    if server.ws_port is not None:
        result.append(
            Listener(
                name="ws", kind="ws", host=server.host, port=server.ws_port, max_connections=per_listener
            )
        )
    if server.tls is not None:
        tls = server.tls
        result.append(
            Listener(
                name="tls",
                host=server.host,
                port=tls.port,
                certfile=tls.certfile,
                keyfile=tls.keyfile,
                cafile=tls.cafile,
                max_connections=per_listener,
            )
        )
    return result


def web_options(config: MqimConfig) -> WebOptions | None:
    """The web client's HTTP listener, or None when `[web] enabled = false`."""
    web = config.web
    if not web.enabled:
        return None
    return WebOptions(host=web.host, port=web.port, root=web.root, ws_url=web.ws_url)


def admin_options(config: MqimConfig) -> AdminOptions | None:
    """The admin listener, or None when `[admin] enabled = false`."""
    from mqim.admin import AdminOptions

    admin = config.admin
    return AdminOptions(host=admin.host, port=admin.port) if admin.enabled else None


def build_server(config: MqimConfig) -> EmbeddedServer:
    """The embedded server described by `config`."""
    return EmbeddedServer(
        data_dir=config.server.data_dir,
        listeners=listeners(config),
        settings=broker_settings(config),
        logic_limits=logic_limits(config),
        embedded_logic=config.logic.embedded,
        allow_anonymous=config.auth.allow_anonymous,
        auth=auth_options(config),
        web=web_options(config),
        admin=admin_options(config),
        sys_interval_s=config.sys.interval_s,
        hooks=config.hooks,
    )


async def _serve(config: MqimConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with build_server(config) as server:
        assert server.broker is not None
        for spec in server.listeners:
            print(
                f"mqim listening on {spec.kind}://{spec.host}:{server.port(spec.name)} ({spec.name})",
                flush=True,
            )
        if server.web is not None:
            print(f"mqim web client on {server.web.url}", flush=True)
        observability = server.observability
        if observability is not None and observability.admin is not None:
            print(f"mqim admin endpoints on {observability.admin.url}", flush=True)
        print(
            f"data in {config.server.data_dir}; logic {'embedded' if config.logic.embedded else 'external'}",
            flush=True,
        )
        await stop.wait()
        log.info("stopping")


def serve_command(config: MqimConfig) -> None:
    """Run the server until interrupted; exit code 0 on a clean stop."""
    configure_logging(config.log)
    asyncio.run(_serve(config))
