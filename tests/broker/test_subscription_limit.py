"""max_subscriptions_per_session limits the client's own filters, not the server-managed ones."""

from __future__ import annotations

from collections.abc import Callable

from tests.broker.conftest import ServerFactory
from tests.conftest import PASSWORD
from tests.support.mqtt import Paho


async def test_group_subscriptions_do_not_use_up_the_client_limit(
    make_server: ServerFactory, uid: Callable[[str], str]
) -> None:
    server = await make_server(max_subscriptions_per_session=2)
    user = uid("u")
    await server.storage.add_user(user, password=PASSWORD)
    groups = [uid(f"g{n}") for n in range(3)]
    for group in groups:
        server.membership.set_group(group, [user])
    client = Paho(port=server.port(), user=user, password=PASSWORD, client_id=f"{user}-c")
    try:
        await client.connect()
        assert server.broker is not None
        managed = set(server.broker.hub.sessions[f"{user}-c"].subscriptions)
        assert {f"im/v1/g/{g}/#" for g in groups} <= managed  # inbox + 3 groups: over the limit
        assert await client.subscribe(f"t/{user}/a") == 1
        assert await client.subscribe(f"t/{user}/b") == 1
        assert await client.subscribe(f"t/{user}/c") == 0x80  # the client's third own filter
        assert await client.subscribe(f"t/{user}/a", qos=0) == 0  # re-subscribing is not new
    finally:
        client.close()
