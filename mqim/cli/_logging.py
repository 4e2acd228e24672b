"""Logging set-up for the long-running commands (`serve`, `logic`): text or JSON lines."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from mqim.cli._sections import LogConfig

_HANDLER_NAME = "mqim-cli"

THIRD_PARTY_LOGGERS = ("amqtt", "transitions", "websockets")
"""Libraries whose INFO lines are noise in production (amqtt's state machine logs ~6 lines per
start through `transitions.core`; `websockets` one per refused handshake): WARNING and above
only, unless the configured level is DEBUG."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (ms), level, logger, msg, plus exc when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": int(record.created * 1000),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(config: LogConfig) -> None:
    """Send log records of `config.level` and above to stderr, formatted as `config.format`.

    Third-party libraries (`THIRD_PARTY_LOGGERS`) log WARNING and above only, unless the level
    is DEBUG. Calling it again replaces the handler it installed before (no duplicate lines).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter(
            "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
        )
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(config.level)
    # NOTSET hands the decision back to the root's level, so DEBUG shows them again.
    third_party = logging.NOTSET if config.level == "DEBUG" else logging.WARNING
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(third_party)
