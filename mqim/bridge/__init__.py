"""Bridges: other MQTT brokers into mqim and mqim out to them, without loops or loss.

Inbound bridges (a Mosquitto or EMQX `connection` pointing at mqim) are handled by the broker
(bridge accounts, protocol level 0x84, `$SYS/broker/connection/{name}/state` notices). This
package holds the outbound side and the glue into the IM:

- `_topics`: Mosquitto's `topic pattern [in|out|both [qos [local remote]]]` rules and the
  topic mapping (pure);
- `_loop`: loop prevention, origin marking and the echo guard (pure);
- `_im`: device messages into conversation requests, commands out to devices (pure);
- `_config`: `<data_dir>/bridges.json` (bridges, IM mappings, command routes);
- `_status`: counters and the status file `mqim bridge list` reads;
- `_outbox`: `Outbox`, the durable bounded queue (SQLite) of what a bridge sends out;
- `_outbound`: `OutboundBridge`, the aiomqtt client of one bridge (async shell);
- `_service`: `BridgeService`, runs everything in the embedded server.
"""

from mqim.bridge._config import (
    BRIDGES_FILENAME,
    MAX_BRIDGES,
    MAX_MAPPINGS,
    MAX_TOPICS_PER_BRIDGE,
    STATUS_FILENAME,
    BridgeConfig,
    BridgesFile,
    CommandRoute,
    ImMapping,
    load_bridges,
    outbox_filename,
    parse_bridges,
    parse_remote,
    save_bridges,
)
from mqim.bridge._exceptions import (
    BridgeConfigError,
    BridgeError,
    BridgeStorageError,
    BridgeUnavailable,
    TopicRuleError,
)
from mqim.bridge._im import command_for, stable_message_id, uplink_for
from mqim.bridge._loop import EchoGuard
from mqim.bridge._outbound import Barrier, OutboundBridge
from mqim.bridge._outbox import Outbox
from mqim.bridge._service import BridgeService, committer_barrier
from mqim.bridge._status import BridgeStats, read_status
from mqim.bridge._topics import (
    Direction,
    TopicRule,
    cover_filters,
    format_topic_rule,
    local_filters,
    map_in,
    map_out,
    may_echo,
    parse_topic_rule,
    subscriptions,
)

__all__ = [
    "BRIDGES_FILENAME",
    "MAX_BRIDGES",
    "MAX_MAPPINGS",
    "MAX_TOPICS_PER_BRIDGE",
    "STATUS_FILENAME",
    "Barrier",
    "BridgeConfig",
    "BridgeConfigError",
    "BridgeError",
    "BridgeService",
    "BridgeStats",
    "BridgeStorageError",
    "BridgeUnavailable",
    "BridgesFile",
    "CommandRoute",
    "Direction",
    "EchoGuard",
    "ImMapping",
    "OutboundBridge",
    "Outbox",
    "TopicRule",
    "TopicRuleError",
    "command_for",
    "committer_barrier",
    "cover_filters",
    "format_topic_rule",
    "load_bridges",
    "local_filters",
    "map_in",
    "map_out",
    "may_echo",
    "outbox_filename",
    "parse_bridges",
    "parse_remote",
    "parse_topic_rule",
    "read_status",
    "save_bridges",
    "stable_message_id",
    "subscriptions",
    "uplink_for",
]
