"""A standalone logic worker: the logic service in its own process, an MQTT client of the broker.

What `mqim logic` runs. Several workers may share the requests (`shared=True` subscribes with
`SHARED_UP_FILTER`, so the broker hands each request to one of them); a worker that goes away
leaves its unacknowledged requests to the others (see docs/architecture.md, "The logic service").
"""

from __future__ import annotations

import logging
import ssl

from mqim.logic import BusError, LogicLimits, LogicService, MqttBus
from mqim.protocol import SHARED_UP_FILTER, UP_FILTER
from mqim.server._exceptions import ServerError
from mqim.storage import Storage

log = logging.getLogger("mqim.logic.worker")


class LogicWorker:
    """The logic service over an `MqttBus` to a broker.

    Args:
        storage: Open storage (SQLite of the server's data dir, or the cluster's MongoDB).
        host: Broker host.
        port: Broker port.
        username: The service account.
        password: Its password.
        client_id: MQTT client id; unique per worker (its persistent session holds requests).
        shared: Split the requests with the other workers (`$share/logic/...`).
        tls_context: TLS for an `mqtts://` broker, or None.
        limits: The logic service's limits.
    """

    def __init__(
        self,
        *,
        storage: Storage,
        host: str,
        port: int,
        username: str,
        password: str,
        client_id: str = "mqim-logic",
        shared: bool = False,
        tls_context: ssl.SSLContext | None = None,
        limits: LogicLimits | None = None,
    ) -> None:
        self.where = f"{host}:{port}"
        self._username = username
        self._client_id = client_id
        self._bus = MqttBus(
            host=host,
            port=port,
            username=username,
            password=password,
            client_id=client_id,
            topic_filter=SHARED_UP_FILTER if shared else UP_FILTER,
            tls_context=tls_context,
            on_overflow=self._overflow,
        )
        self._service = LogicService(storage=storage, bus=self._bus, limits=limits or LogicLimits())

    def _overflow(self, topic: str, payload: bytes) -> None:
        # The bus refuses what its queue cannot hold; the service answers it `rate_limited`.
        self._service.reject_overflow(topic, payload)

    async def run(self) -> None:
        """Connect, then serve requests until cancelled; the bus closes on the way out.

        Raises:
            ServerError: The broker cannot be used (refused credentials, unreachable).
        """
        try:
            async with self._bus:
                log.info(
                    "logic service connected to %s as %r (client id %r)",
                    self.where,
                    self._username,
                    self._client_id,
                )
                await self._service.run()
        except BusError as exc:
            raise ServerError(f"logic service cannot use the broker at {self.where}: {exc}") from exc
