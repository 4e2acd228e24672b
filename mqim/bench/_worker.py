"""A load-generator process: `python -m mqim.bench._worker`, spoken to as `_messages` describes.

Generators run in their own processes so that they never share the broker's event loop or the
harness's; each is single-threaded (one `NetLoop`). Timestamps are `time.monotonic_ns()`:
CLOCK_MONOTONIC is system-wide on Linux, so a publisher's timestamp and a subscriber's clock are
directly comparable.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from pydantic import ValidationError

from mqim.bench._clients_worker import ClientsWorker
from mqim.bench._exceptions import BenchError
from mqim.bench._messages import SPEC_ADAPTER, ClientsSpec, ErrorEv
from mqim.bench._publisher_worker import PublisherWorker
from mqim.bench._worker_base import Stdin, Worker, emit


def _exit(code: int) -> NoReturn:
    # Thousands of paho clients make interpreter teardown take seconds; the kernel closes their
    # sockets at once. Nothing else is buffered but stdout and stderr.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> NoReturn:
    """Read the spec from stdin, play the role, exit 0 (or 1 after an `error` event)."""
    stdin = Stdin()
    try:
        spec = SPEC_ADAPTER.validate_json(stdin.read_first_line())
    except (ValidationError, BenchError) as exc:
        emit(ErrorEv(message=f"bad spec: {exc}"))
        _exit(1)
    worker: Worker = (
        ClientsWorker(spec, stdin) if isinstance(spec, ClientsSpec) else PublisherWorker(spec, stdin)
    )
    try:
        worker.run()
    except (BenchError, OSError) as exc:
        emit(ErrorEv(message=f"{type(exc).__name__}: {exc}"))
        _exit(1)
    except Exception as exc:
        emit(ErrorEv(message=f"{type(exc).__name__}: {exc} (traceback on the worker's stderr)"))
        raise
    _exit(0)


if __name__ == "__main__":
    main()
