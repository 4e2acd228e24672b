"""Errors of the benchmark harness.

Hierarchy::

    BenchError                    any failure of the harness
    ├── UnknownScenario           a scenario name that is not registered
    ├── UnknownTarget             neither a known target name nor an mqtt:// URL
    ├── InvalidParameter          a size, duration, rate or budget out of range (also a ValueError)
    ├── TargetError               a target could not be prepared, started, used or stopped
    │   └── TargetUnsupported     the target cannot run this scenario (yet)
    ├── WorkerError               a load-generator process failed or broke the protocol
    │   └── WorkerTimeout         it did not report what was awaited in time
    ├── PhaseError                a measurement could not be taken (e.g. the subscriber never got ready)
    └── TrackingLimitExceeded     a named bookkeeping limit was exceeded (values, sequence numbers)
"""

from __future__ import annotations


class BenchError(Exception):
    """Any failure of the benchmark harness."""


class UnknownScenario(BenchError):
    """The scenario name is not registered."""


class UnknownTarget(BenchError):
    """The target is neither a known name nor an `mqtt://` URL."""


class InvalidParameter(BenchError, ValueError):
    """A size, duration, rate or budget is out of range."""


class TargetError(BenchError):
    """A target could not be prepared, started, used or stopped."""


class TargetUnsupported(TargetError):
    """The target cannot run this scenario (yet); the message says why."""


class WorkerError(BenchError):
    """A load-generator process failed, timed out or broke the protocol."""


class WorkerTimeout(WorkerError):
    """A load-generator process did not report the awaited event in time."""


class PhaseError(BenchError):
    """A measurement phase could not be taken."""


class TrackingLimitExceeded(BenchError):
    """A named bookkeeping limit (histogram range, tracked sequence numbers) was exceeded."""
