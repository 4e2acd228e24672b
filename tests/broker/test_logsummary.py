"""Bounded logging: first occurrence logged, repeats summarised, keys bounded."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mqim._util._logsummary import LogSummary, SummaryLog, host_of, reason_class
from mqim.cli._config import LogConfig
from mqim.cli._logging import THIRD_PARTY_LOGGERS, configure_logging


def test_first_occurrence_then_counted() -> None:
    s = LogSummary(max_keys=10)
    assert s.note("10.0.0.1", "bad credentials") is True
    assert [s.note("10.0.0.1", "bad credentials") for _ in range(5)] == [False] * 5
    assert s.note("10.0.0.2", "bad credentials") is True  # another source
    assert s.note("10.0.0.1", "malformed") is True  # another reason
    summary = s.summary()
    assert [(line.key, line.reason, line.count) for line in summary.lines] == [
        ("10.0.0.1", "bad credentials", 5)
    ]
    assert s.total == 8
    assert s.totals == {"bad credentials": 7, "malformed": 1}


def test_a_steady_source_is_not_logged_as_new_every_period() -> None:
    s = LogSummary(max_keys=10)
    assert s.note("a", "r") is True
    s.note("a", "r")
    s.summary()
    assert s.note("a", "r") is False  # still going on: counted for the next summary
    assert s.summary().lines[0].count == 1
    s.summary()  # a quiet period
    assert s.note("a", "r") is True  # it stopped, now it is new again


def test_keys_are_bounded_and_the_rest_is_overflow() -> None:
    s = LogSummary(max_keys=3, max_lines=2)
    logged = [s.note(f"10.0.0.{i}", "r") for i in range(100)]
    assert logged.count(True) == 3
    for i in range(3):
        s.note(f"10.0.0.{i}", "r")
        s.note(f"10.0.0.{i}", "r")
    summary = s.summary()
    assert summary.overflow == 97
    assert len(summary.lines) == 2  # max_lines
    assert (summary.omitted_pairs, summary.omitted_events) == (1, 2)
    assert not s.summary()  # drained


def test_reason_class_drops_what_varies() -> None:
    assert reason_class("bad credentials for user 'x1'") == reason_class("bad credentials for user 'y2'")
    assert reason_class("packet type 15 not allowed") == reason_class("packet type 0 not allowed")
    assert reason_class("level 0xd4 is not supported") == reason_class("level 0x5b is not supported")
    assert "MQTT-3.1.0-1" in reason_class("first packet is not CONNECT (MQTT-3.1.0-1)")
    assert len(reason_class("x" * 10_000)) <= 120


@pytest.mark.parametrize(
    ("peer", "host"),
    [("127.0.0.2:5555", "127.0.0.2"), ("::1:5555", "::1"), ("?", "?"), ("/tmp/sock", "/tmp/sock")],
)
def test_host_of(peer: str, host: str) -> None:
    assert host_of(peer) == host


async def test_summary_log_writes_first_lines_then_one_summary(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("mqim.test.summary")
    out = SummaryLog(logger=logger, what="refused CONNECT", interval_s=0.05)
    with caplog.at_level(logging.INFO, logger="mqim.test.summary"):
        for i in range(1000):
            out.note("127.0.0.2", f"bad credentials for user 'u{i}'", "refusing %s: %s", "127.0.0.2", i)
        for _ in range(100):  # bounded: the timer fires once per period
            if any("999 more" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "refusing 127.0.0.2: 0"
    assert len(messages) == 2
    assert "refused CONNECT from 127.0.0.2" in messages[1]
    assert "999 more" in messages[1]


def test_summary_log_flush_without_a_loop(caplog: pytest.LogCaptureFixture) -> None:
    out = SummaryLog(logger=logging.getLogger("mqim.test.summary2"), what="closed")
    with caplog.at_level(logging.INFO, logger="mqim.test.summary2"):
        out.note("h", "r", "first")
        out.note("h", "r", "second")
        out.flush()
    assert caplog.records[0].getMessage() == "first"
    assert len(caplog.records) == 2


@pytest.mark.parametrize(("level", "quiet"), [("INFO", True), ("WARNING", True), ("DEBUG", False)])
def test_third_party_info_is_off_unless_debugging(level: str, quiet: bool) -> None:
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    try:
        configure_logging(LogConfig(level=level))  # type: ignore[arg-type]
        for name in THIRD_PARTY_LOGGERS:
            assert logging.getLogger(f"{name}.core").isEnabledFor(logging.INFO) is (not quiet)
            assert logging.getLogger(name).isEnabledFor(logging.WARNING)
    finally:
        for handler in root.handlers:
            if handler not in saved[1]:
                root.removeHandler(handler)
        root.setLevel(saved[0])
        for name in THIRD_PARTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
