"""Drive many paho clients from one thread: paho's socket API on an epoll selector.

paho's own loops use `select()` (1,024 descriptors at most) or one thread per client; a worker
holding thousands of clients instead registers every client socket here and calls `loop_read`,
`loop_write` and `loop_misc` itself. Every client socket gets TCP_NODELAY, as asyncio (amqtt,
mqim) and the Mosquitto config of the harness use it, so no side waits on Nagle's algorithm.
"""

from __future__ import annotations

import os
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

MISC_INTERVAL_S = 1.0
"""How often every client's keepalive bookkeeping (`loop_misc`) runs."""

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


class NetLoop:
    """One selector for many paho clients plus any number of plain readable descriptors."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._masks: dict[int, int] = {}
        self._clients: list[mqtt.Client] = []
        self._next_misc = time.monotonic() + MISC_INTERVAL_S

    def close(self) -> None:
        """Release the selector (client sockets are closed by their clients)."""
        self._sel.close()

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Call `callback` whenever `fd` (not a client socket) is readable."""
        os.set_blocking(fd, False)
        self._sel.register(fd, _READ, callback)

    def remove_reader(self, fd: int) -> None:
        """Stop watching `fd`."""
        self._sel.unregister(fd)

    def attach(self, client: mqtt.Client) -> None:
        """Have this loop drive `client`; call before `client.connect()`."""
        client.on_socket_open = self._opened
        client.on_socket_close = self._closed
        self._clients.append(client)

    def _opened(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = sock.fileno()
        self._sel.register(fd, _READ, client)
        self._masks[fd] = _READ

    def _closed(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if self._masks.pop(fd, None) is not None:
            self._sel.unregister(fd)

    def flush(self, client: mqtt.Client) -> None:
        """Write what `client` has queued; watch for writability if the socket is full.

        paho writes at once only outside its callbacks; what a callback queued (a SUBSCRIBE from
        on_connect, a PUBACK after on_message) waits for this.
        """
        sock = client.socket()
        if sock is None:
            return
        fd = sock.fileno()
        if client.want_write():
            client.loop_write()
            if client.socket() is None:
                return
        mask = _READ | _WRITE if client.want_write() else _READ
        if self._masks.get(fd, mask) != mask:
            self._masks[fd] = mask
            self._sel.modify(fd, mask, client)

    def poll(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for socket events and process them."""
        for key, events in self._sel.select(timeout):
            target = key.data
            if isinstance(target, mqtt.Client):
                if events & _READ:
                    target.loop_read()
                if events & _WRITE and target.socket() is not None:
                    target.loop_write()
                self.flush(target)
            else:
                target()
        now = time.monotonic()
        if now >= self._next_misc:
            self._next_misc = now + MISC_INTERVAL_S
            for client in self._clients:
                if client.socket() is not None:
                    client.loop_misc()
                    self.flush(client)
