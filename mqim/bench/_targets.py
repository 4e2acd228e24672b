"""The brokers under test: started by the harness on free loopback ports, or external.

* ``mosquitto``: Debian's ``/usr/sbin/mosquitto`` with a generated config.
* ``amqtt``: stock amqtt 0.12.1 (`mqim.bench._amqtt_target`) in the harness's own venv.
* ``mqim``: ``python -m mqim.cli serve`` on a fresh data dir; bench users are created through
  ``mqim user add``. `MqimTarget` holds every command line and provisioning step in one place.
* ``mqtt://[user[:password]@]host[:port]``: a running broker, used as a plain topic relay.

Every started process is stopped at the end: SIGTERM, a bounded wait, then SIGKILL.
"""

from __future__ import annotations

from mqim.bench._exceptions import UnknownTarget
from mqim.bench._mqim_target import MqimTarget
from mqim.bench._plain_targets import AmqttTarget, ExternalTarget, MosquittoTarget
from mqim.bench._target import Target

BUILTIN_TARGETS = ("mosquitto", "amqtt", "mqim")


def make_target(spec: str) -> Target:
    """Return the target named `spec` (`mosquitto`, `amqtt`, `mqim`) or reached by an mqtt:// URL.

    Raises:
        UnknownTarget: `spec` is neither.
    """
    if spec == "mosquitto":
        return MosquittoTarget()
    if spec == "amqtt":
        return AmqttTarget()
    if spec == "mqim":
        return MqimTarget()
    if "://" in spec:
        return ExternalTarget(spec)
    raise UnknownTarget(f"unknown target {spec!r}: use one of {', '.join(BUILTIN_TARGETS)} or an mqtt:// URL")
