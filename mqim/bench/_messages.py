"""The line protocol between the harness and its load-generator processes (JSON, one per line).

The harness writes a `WorkerSpec` as the first line of the worker's stdin, then `Command`s; the
worker writes `Event`s to its stdout. Closing the worker's stdin makes it disconnect and exit.

Clients worker (`ClientsSpec`)::

    <- started            -> connect          <- ready (connected, failed, timings)
    <- count ... (every ~0.2 s while deliveries change)
    <- complete (fan-out mode: message n reached every client of this worker)
    -> stop (expect_n)    <- result (latency histogram, loss) and exit

Publisher worker (`PublisherSpec`)::

    <- ready              -> go (open or closed loop)   <- done      (go may repeat)
    -> stop               <- result and exit

Any failure: ``<- error`` and exit.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from mqim.bench._adapters import AdapterSpec, ClientSet
from mqim.bench._histogram import HistogramSnapshot
from mqim.bench._loss import LossStats

MAX_CLIENTS_PER_WORKER = 15_000
"""Clients one worker process may hold; each needs a file descriptor (the limit is ~20,000)."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClientsSpec(_Model):
    """A worker holding `count` subscribing clients `start..start+count-1` of `client_set`."""

    role: Literal["clients"] = "clients"
    host: str
    port: int
    adapter: AdapterSpec
    client_set: ClientSet
    start: int = 0
    count: Annotated[int, Field(ge=1, le=MAX_CLIENTS_PER_WORKER)] = 1
    track: bool = False
    """Record latency and loss of bench messages received."""
    fanout: bool = False
    """Emit `complete` when every client of this worker received message n."""
    connect_window: Annotated[int, Field(ge=1)] = 64
    """Connections being established at once (keeps the broker's accept backlog short)."""
    connect_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    keepalive: Annotated[int, Field(ge=5)] = 60


class PublisherSpec(_Model):
    """A worker holding one publishing client of `client_set`."""

    role: Literal["publisher"] = "publisher"
    host: str
    port: int
    adapter: AdapterSpec
    client_set: ClientSet
    connect_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    keepalive: Annotated[int, Field(ge=5)] = 60


WorkerSpec = Annotated[ClientsSpec | PublisherSpec, Field(discriminator="role")]


class ConnectCmd(_Model):
    """Clients: start connecting and subscribing."""

    cmd: Literal["connect"] = "connect"


class GoCmd(_Model):
    """Publisher: publish (QoS1) in open loop (`rate` msg/s on a fixed schedule) or closed loop
    (keep `window` unacknowledged publishes in flight), for `duration_s` and/or `count` messages."""

    cmd: Literal["go"] = "go"
    mode: Literal["open", "closed"]
    window: Annotated[int, Field(ge=1)]
    rate: Annotated[float, Field(gt=0)] | None = None
    duration_s: Annotated[float, Field(gt=0)] | None = None
    count: Annotated[int, Field(ge=1)] | None = None
    ack_timeout_s: Annotated[float, Field(gt=0)] = 10.0


class StopCmd(_Model):
    """Report results and exit. Clients check loss against the messages numbered 1..expect_n."""

    cmd: Literal["stop"] = "stop"
    expect_n: Annotated[int, Field(ge=0)] = 0


Command = Annotated[ConnectCmd | GoCmd | StopCmd, Field(discriminator="cmd")]


class StartedEv(_Model):
    """Clients: the spec was read; waiting for `connect`."""

    ev: Literal["started"] = "started"


class ReadyEv(_Model):
    """All clients connected and subscribed (or failed, or the connect timeout passed).

    Timestamps are `time.monotonic_ns()`, comparable across processes on Linux.
    """

    ev: Literal["ready"] = "ready"
    connected: int
    failed: int
    first_ns: int
    last_ns: int
    error: str | None = None


class CountEv(_Model):
    """Clients: bench messages received so far (valid ones / distinct ones)."""

    ev: Literal["count"] = "count"
    received: int
    distinct: int


class CompleteEv(_Model):
    """Clients (fan-out): message `number` reached every client of this worker."""

    ev: Literal["complete"] = "complete"
    number: int
    sent_ns: int
    last_ns: int


class DoneEv(_Model):
    """Publisher: a `go` finished. `start_ns` is the first publish, `end_ns` the last PUBACK."""

    ev: Literal["done"] = "done"
    sent: int
    acked: int
    first_number: int
    last_number: int
    start_ns: int
    last_sent_ns: int
    end_ns: int
    error: str | None = None


class ResultEv(_Model):
    """Final figures of a worker."""

    ev: Literal["result"] = "result"
    latency: HistogramSnapshot = HistogramSnapshot()
    loss: LossStats = LossStats()
    stale: int = 0
    first_recv_ns: int = 0
    last_recv_ns: int = 0
    disconnects: int = 0


class ErrorEv(_Model):
    """The worker failed and exits."""

    ev: Literal["error"] = "error"
    message: str


Event = Annotated[
    StartedEv | ReadyEv | CountEv | CompleteEv | DoneEv | ResultEv | ErrorEv, Field(discriminator="ev")
]

SPEC_ADAPTER: TypeAdapter[ClientsSpec | PublisherSpec] = TypeAdapter(WorkerSpec)
COMMAND_ADAPTER: TypeAdapter[ConnectCmd | GoCmd | StopCmd] = TypeAdapter(Command)
EVENT_ADAPTER: TypeAdapter[StartedEv | ReadyEv | CountEv | CompleteEv | DoneEv | ResultEv | ErrorEv] = (
    TypeAdapter(Event)
)
