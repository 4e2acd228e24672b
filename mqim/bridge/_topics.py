"""Topic rules in Mosquitto's bridge syntax and the mapping between local and remote topics. Pure.

A rule is `pattern [direction [qos [local_prefix remote_prefix]]]`, exactly as in a
`mosquitto.conf` `topic` line: `direction` is `out` (local to remote, the default), `in` (remote
to local) or `both`; `qos` is 0, 1 or 2 (default 0); the prefixes are prepended to `pattern` on
their side, so the local filter is `local_prefix + pattern` and the remote filter is
`remote_prefix + pattern`. An empty pattern (`""`) with prefixes maps one exact topic.

A message on local topic `L` matching an `out` rule leaves as `remote_prefix + L[len(local_prefix):]`;
a message on remote topic `R` matching an `in` rule arrives as `local_prefix + R[len(remote_prefix):]`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from mqim.acl import filter_is_subset, is_valid_filter, is_valid_topic, topic_matches
from mqim.bridge._exceptions import TopicRuleError

MAX_RULE_CHARS: Final = 1024
"""Longest topic rule accepted (the text of one `--topic`)."""


class Direction(StrEnum):
    """Which way a rule carries messages."""

    OUT = "out"
    IN = "in"
    BOTH = "both"


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicRule:
    """One bridged topic pattern.

    Attributes:
        pattern: The topic filter relative to the prefixes (may be empty when a prefix is set).
        direction: out, in or both.
        qos: Maximum QoS on the way (messages are forwarded at this QoS).
        local_prefix: Prepended to `pattern` on the mqim side.
        remote_prefix: Prepended to `pattern` on the remote side.
    """

    pattern: str
    direction: Direction = Direction.OUT
    qos: int = 0
    local_prefix: str = ""
    remote_prefix: str = ""

    @property
    def local_filter(self) -> str:
        """The filter this rule covers on the mqim side."""
        return self.local_prefix + self.pattern

    @property
    def remote_filter(self) -> str:
        """The filter this rule covers on the remote broker."""
        return self.remote_prefix + self.pattern

    @property
    def outbound(self) -> bool:
        """Whether messages go from mqim to the remote."""
        return self.direction is not Direction.IN

    @property
    def inbound(self) -> bool:
        """Whether messages come from the remote into mqim."""
        return self.direction is not Direction.OUT


def _quote(text: str) -> str:
    return '""' if text == "" else shlex.quote(text)


def format_topic_rule(rule: TopicRule) -> str:
    """The rule in Mosquitto's syntax (what `parse_topic_rule` reads back)."""
    parts = [_quote(rule.pattern), rule.direction.value, str(rule.qos)]
    if rule.local_prefix or rule.remote_prefix:
        parts += [_quote(rule.local_prefix), _quote(rule.remote_prefix)]
    return " ".join(parts)


def parse_topic_rule(text: str) -> TopicRule:
    """Parse `pattern [in|out|both [qos [local_prefix remote_prefix]]]` (shell-style quoting).

    Raises:
        TopicRuleError: The text is not a valid rule; the message says why.
    """
    if len(text) > MAX_RULE_CHARS:
        raise TopicRuleError(f"topic rule longer than {MAX_RULE_CHARS} characters")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise TopicRuleError(f"topic rule {text!r}: {exc}") from exc
    if not words or len(words) > 5 or len(words) == 4:
        raise TopicRuleError(
            f"topic rule {text!r}: expected 'pattern [in|out|both [qos [local_prefix remote_prefix]]]'"
        )
    pattern = words[0]
    direction = Direction.OUT
    if len(words) > 1:
        try:
            direction = Direction(words[1].lower())
        except ValueError:
            raise TopicRuleError(f"topic rule {text!r}: direction must be in, out or both") from None
    qos = 0
    if len(words) > 2:
        if words[2] not in ("0", "1", "2"):
            raise TopicRuleError(f"topic rule {text!r}: qos must be 0, 1 or 2")
        qos = int(words[2])
    local_prefix, remote_prefix = (words[3], words[4]) if len(words) == 5 else ("", "")
    rule = TopicRule(
        pattern=pattern, direction=direction, qos=qos, local_prefix=local_prefix, remote_prefix=remote_prefix
    )
    check_topic_rule(rule)
    return rule


def check_topic_rule(rule: TopicRule) -> None:
    """Check that a rule maps valid filters on both sides (as Mosquitto does).

    Raises:
        TopicRuleError: When it does not.
    """
    where = format_topic_rule(rule)
    if rule.qos not in (0, 1, 2):
        raise TopicRuleError(f"topic rule {where!r}: qos must be 0, 1 or 2")
    if not rule.pattern and not (rule.local_prefix and rule.remote_prefix):
        raise TopicRuleError(f"topic rule {where!r}: an empty pattern needs both prefixes")
    for prefix in (rule.local_prefix, rule.remote_prefix):
        if "+" in prefix or "#" in prefix:
            raise TopicRuleError(f"topic rule {where!r}: a prefix may not contain wildcards")
    for side, topic_filter in (("local", rule.local_filter), ("remote", rule.remote_filter)):
        if not is_valid_filter(topic_filter) or topic_filter.startswith("$share/"):
            raise TopicRuleError(f"topic rule {where!r}: {side} filter {topic_filter!r} is not valid")


def _swap(topic: str, from_prefix: str, to_prefix: str) -> str | None:
    if not topic.startswith(from_prefix):
        return None
    mapped = to_prefix + topic[len(from_prefix) :]
    return mapped if is_valid_topic(mapped) else None


def map_out(rules: tuple[TopicRule, ...], local_topic: str) -> tuple[str, int] | None:
    """The remote topic and QoS for a local message, from the first matching out rule, or None."""
    for rule in rules:
        if rule.outbound and topic_matches(rule.local_filter, local_topic):
            remote = _swap(local_topic, rule.local_prefix, rule.remote_prefix)
            if remote is not None:
                return remote, rule.qos
    return None


def map_in(rules: tuple[TopicRule, ...], remote_topic: str) -> tuple[str, int] | None:
    """The local topic and QoS for a remote message, from the first matching in rule, or None."""
    for rule in rules:
        if rule.inbound and topic_matches(rule.remote_filter, remote_topic):
            local = _swap(remote_topic, rule.remote_prefix, rule.local_prefix)
            if local is not None:
                return local, rule.qos
    return None


def may_echo(rules: tuple[TopicRule, ...], remote_topic: str) -> bool:
    """Whether a message we publish on `remote_topic` can come back through our own subscriptions."""
    return any(rule.inbound and topic_matches(rule.remote_filter, remote_topic) for rule in rules)


def subscriptions(rules: tuple[TopicRule, ...]) -> dict[str, int]:
    """Remote filters to subscribe to (for in/both rules), each at its highest QoS."""
    subs: dict[str, int] = {}
    for rule in rules:
        if rule.inbound:
            subs[rule.remote_filter] = max(rule.qos, subs.get(rule.remote_filter, 0))
    return subs


def local_filters(rules: tuple[TopicRule, ...]) -> list[str]:
    """Local filters to listen on (for out/both rules), without duplicates, in rule order."""
    return list(dict.fromkeys(rule.local_filter for rule in rules if rule.outbound))


def cover_filters(filters: list[str]) -> list[str]:
    """Drop every filter that another one already covers (so a message fires one listener)."""
    filters = list(dict.fromkeys(filters))
    kept: list[str] = []
    for index, candidate in enumerate(filters):
        others = filters[:index] + filters[index + 1 :]
        if not any(filter_is_subset(candidate, other) for other in others):
            kept.append(candidate)
    return kept
