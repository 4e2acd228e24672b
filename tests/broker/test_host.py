"""`MqimBroker` is the `ConnectionHost` its connections are typed against.

mypy cannot check that (the broker's base class, amqtt's `Broker`, is untyped, so mypy takes any
subclass of it for any protocol): the members and their parameters are compared here, on a
running broker.
"""

from __future__ import annotations

import asyncio
import inspect

from mqim.broker import BrokerSettings, Hub
from mqim.broker._host import ConnectionHost
from mqim.server import EmbeddedServer
from tests.broker.conftest import broker_of

_PROPERTIES = ("hub", "settings", "loop")


def _methods() -> list[str]:
    return [
        name
        for name, member in vars(ConnectionHost).items()
        if not name.startswith("_") and inspect.isfunction(member)
    ]


def test_the_contract_is_what_a_connection_calls() -> None:
    # One place lists what a connection needs from its broker; a new need changes it on purpose.
    assert sorted(_methods()) == [
        "accept_special_publish",
        "admit_connection",
        "admit_publish",
        "authenticate",
        "connection_closed",
        "connection_established",
        "connection_opened",
        "dropped_sys_publish",
        "no_consumer",
        "publish_will",
        "spawn",
        "tell_error",
    ]
    assert all(isinstance(vars(ConnectionHost)[name], property) for name in _PROPERTIES)


async def test_the_broker_implements_every_member(tserver: EmbeddedServer) -> None:
    broker = broker_of(tserver)
    assert isinstance(broker.hub, Hub)
    assert isinstance(broker.settings, BrokerSettings)
    assert broker.loop is asyncio.get_running_loop()
    for name in _methods():
        wanted = inspect.signature(vars(ConnectionHost)[name])
        got = inspect.signature(getattr(type(broker), name))
        assert list(got.parameters) == list(wanted.parameters), name
        assert [p.kind for p in got.parameters.values()] == [p.kind for p in wanted.parameters.values()], name
        assert inspect.iscoroutinefunction(getattr(type(broker), name)) == inspect.iscoroutinefunction(
            vars(ConnectionHost)[name]
        ), name
