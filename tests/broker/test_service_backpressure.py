"""A logic worker's full queue refuses new requests (the sender is told) instead of evicting old ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from mqim.broker import BrokerSettings, Listener
from mqim.cli._embedded import EmbeddedServer
from mqim.storage import AccountKind
from tests.conftest import PASSWORD
from tests.support.mqtt import Paho


async def test_full_service_queue_refuses_new_uplinks_and_keeps_the_queued_ones(
    tmp_path: Path, uid: Callable[[str], str]
) -> None:
    server = EmbeddedServer(
        data_dir=tmp_path / "data",
        listeners=[Listener(name="default", port=0)],
        settings=BrokerSettings(max_queue_messages=5, connect_timeout_s=3.0),
        embedded_logic=False,  # the requests wait for a separate `mqim logic` worker
    )
    alice, worker = uid("alice"), uid("logic")
    clients: list[Paho] = []
    async with server:
        await server.storage.add_user(alice, password=PASSWORD)
        await server.storage.add_user(worker, password=PASSWORD, kind=AccountKind.SERVICE)

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
            for n in range(8):
                body = {"v": 1, "id": f"m-{n}", "to": worker, "text": str(n)}
                await sender.publish(f"im/v1/up/{alice}/msg", body)  # every one is PUBACKed
            refused = [(await sender.receive_on("/error")).json() for _ in range(3)]
            assert [(e["code"], e["ref"]) for e in refused] == [("rate_limited", f"m-{n}") for n in (5, 6, 7)]

            back = client(worker, client_id=f"{worker}-1", clean_session=False)
            session_present, _ = await back.connect()
            assert session_present
            got = [json.loads((await back.receive_on("/msg")).payload)["id"] for _ in range(5)]
            assert got == [f"m-{n}" for n in range(5)]  # the queued requests, none evicted
            await back.nothing(0.5, suffix="/msg")
        finally:
            for made in clients:
                made.close()
