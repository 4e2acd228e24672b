"""A sender's PUBACK waits for the logic worker, and the broker applies back-pressure instead of refusing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from mqim.broker import BrokerSettings, Listener
from mqim.server import EmbeddedServer
from mqim.storage import AccountKind
from tests.conftest import PASSWORD
from tests.support.mqtt import Paho


async def test_uplink_puback_waits_for_the_worker_and_the_broker_stops_reading_at_its_bound(
    tmp_path: Path, uid: Callable[[str], str]
) -> None:
    server = EmbeddedServer(
        data_dir=tmp_path / "data",
        listeners=[Listener(name="default", port=0)],
        settings=BrokerSettings(max_held_uplinks=5, connect_timeout_s=3.0),
        embedded_logic=False,  # the requests wait for a separate `mqim logic` worker
    )
    alice, worker = uid("alice"), uid("logic")
    clients: list[Paho] = []
    async with server:
        await server.storage.add_user(alice, password=PASSWORD)
        await server.storage.add_user(worker, password=PASSWORD, kind=AccountKind.SERVICE)
        hub = server.broker.hub if server.broker is not None else None
        assert hub is not None

        def client(user: str, **kwargs: object) -> Paho:
            made = Paho(port=server.port(), user=user, password=PASSWORD, **kwargs)  # type: ignore[arg-type]
            clients.append(made)
            return made

        try:
            # The worker's persistent session exists, then the worker is away (busy, restarting).
            away = client(worker, client_id=f"{worker}-1", clean_session=False)
            await away.connect()
            assert await away.subscribe("im/v1/up/+/+", qos=1) == 1
            away.close()

            sender = client(alice, client_id=f"{alice}-phone")
            await sender.connect()
            bodies = [json.dumps({"v": 1, "id": f"m-{n}", "to": worker, "text": str(n)}) for n in range(8)]
            sent = [sender.client.publish(f"im/v1/up/{alice}/msg", body, 1) for body in bodies]
            async with asyncio.timeout(10):
                while hub.held < 5:  # noqa: ASYNC110 - the broker exposes no event for this
                    await asyncio.sleep(0.01)
            await sender.nothing(0.5)
            # PUBACK means processed: nothing is acknowledged while the worker is away, and at
            # the bound the broker stops reading instead of refusing.
            assert hub.held == 5
            assert [info.is_published() for info in sent] == [False] * 8
            assert sender.messages.empty()  # no `rate_limited` on the error topic

            back = client(worker, client_id=f"{worker}-1", clean_session=False)
            session_present, _ = await back.connect()
            assert session_present
            got = [json.loads((await back.receive_on("/msg")).payload)["id"] for _ in range(8)]
            assert got == [f"m-{n}" for n in range(8)]  # every request, in order, once
            await back.nothing(0.5, suffix="/msg")
            for info in sent:
                await asyncio.to_thread(info.wait_for_publish, 10)
            assert [info.is_published() for info in sent] == [True] * 8
            assert hub.held == 0
        finally:
            for made in clients:
                made.close()
