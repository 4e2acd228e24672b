"""MQTT 3.1.1 topic names and topic filters: validation, matching, subset and intersection.

All functions here are pure and work on whole topic *levels* (the parts between `/`). Each public
function splits its arguments once and never uses regular expressions; the engine calls the
level functions (`match_levels`, `subset_levels`, `intersect_levels`) directly on pre-split input.

Semantics (MQTT 3.1.1 section 4.7):

- `+` matches exactly one level, which may be empty; `#` matches any number of levels, *including
  none*: `a/#` matches `a` itself as well as `a/b/c`.
- A filter whose first level is `+` or `#` never matches a topic name starting with `$`
  (MQTT-4.7.2-1), so `#` does not cover `$SYS/x` and `+/x` does not cover `$SYS/x`.
- ACL rule *patterns* are read differently (`rule_levels`): a leading `+` or `#` there also
  covers `$` topics other than `$SYS/...`. MQTT-4.7.2-1 is about which messages a
  subscription's filter matches, not about authorization; `$SYS` stays reachable only by
  patterns that name it.
- `$share/{name}/{filter}` is a shared subscription: `name` says which group gets one copy, not
  which topics are matched. The matching functions therefore compare the *inner* filter; the
  engine treats the share group separately.

Subset and intersection are computed over the set of all topic names, ignoring the 65,535-byte
limit on a single name. Both approximations err on the side of denial when used by the ACL:
a subset that only holds because of the length limit is reported as not a subset, and an
intersection that only exists beyond the limit is still reported.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_TOPIC_BYTES = 65535
"""The longest topic name or filter, in UTF-8 bytes (an MQTT string's length prefix is 16 bits)."""

SHARE_PREFIX = "$share/"

SYS_LEVEL = "$SYS"
"""The first level of the server's own topics, which wildcard-led rule patterns never cover."""

# A str of at most this many code points cannot exceed MAX_TOPIC_BYTES in UTF-8 (4 bytes each).
_SAFE_CHARS = MAX_TOPIC_BYTES // 4


def _fits(text: str) -> bool:
    """Return True if `text` is well-formed UTF-8 of at most MAX_TOPIC_BYTES bytes."""
    if text.isascii():
        return len(text) <= MAX_TOPIC_BYTES
    if len(text) <= _SAFE_CHARS:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates cannot travel in an MQTT string
            return False
        return True
    try:
        return len(text.encode("utf-8")) <= MAX_TOPIC_BYTES
    except UnicodeEncodeError:
        return False


def is_valid_topic(topic: str) -> bool:
    """Return True if `topic` is a valid MQTT topic name (what a PUBLISH carries).

    A topic name is non-empty, has no wildcard (`+`, `#`), no NUL and is at most 65,535 bytes
    of UTF-8. Topics starting with `$` are valid names; whether a client may use them is an
    ACL question.
    """
    return (
        isinstance(topic, str)
        and topic != ""
        and "+" not in topic
        and "#" not in topic
        and "\0" not in topic
        and _fits(topic)
    )


def parse_filter(topic_filter: str) -> tuple[str | None, tuple[str, ...]] | None:
    """Validate and split a topic filter in one pass.

    Args:
        topic_filter: A filter as sent in a SUBSCRIBE, possibly `$share/{name}/{filter}`.

    Returns:
        `(share, levels)`: the share name (None for a plain filter) and the levels of the inner
        filter; or None when the filter is invalid.
    """
    if not isinstance(topic_filter, str) or topic_filter == "" or "\0" in topic_filter:
        return None
    if not _fits(topic_filter):
        return None
    share: str | None = None
    if topic_filter.startswith(SHARE_PREFIX):
        parts = topic_filter.split("/")
        # "$share/name" alone has no inner filter; "$share/name/" has an empty one. Both invalid.
        if len(parts) < 3 or (len(parts) == 3 and parts[2] == ""):
            return None
        share = parts[1]
        if share == "" or "+" in share or "#" in share:
            return None
        levels = tuple(parts[2:])
    else:
        levels = tuple(topic_filter.split("/"))
    if "+" in topic_filter or "#" in topic_filter:
        last = len(levels) - 1
        for index, level in enumerate(levels):
            if level == "#":
                if index != last:
                    return None
            elif level != "+" and ("+" in level or "#" in level):
                return None
    return share, levels


def is_valid_filter(topic_filter: str) -> bool:
    """Return True if `topic_filter` is a valid MQTT 3.1.1 topic filter.

    `#` is allowed only as the whole last level, `+` only as a whole level; the filter is
    non-empty, has no NUL and fits in 65,535 bytes. `$share/{name}/{filter}` is accepted when
    `name` is non-empty without wildcards and `filter` is itself a valid filter.
    """
    return parse_filter(topic_filter) is not None


def split_shared(topic_filter: str) -> tuple[str | None, str]:
    """Split `$share/{name}/{filter}` into `(name, filter)`; other filters give `(None, filter)`.

    No validation is done: use `is_valid_filter` first.
    """
    if topic_filter.startswith(SHARE_PREFIX):
        parts = topic_filter.split("/", 2)
        if len(parts) == 3:
            return parts[1], parts[2]
    return None, topic_filter


def _is_wild(level: str) -> bool:
    return level == "+" or level == "#"


def match_levels(filter_levels: Sequence[str], topic_levels: Sequence[str]) -> bool:
    """Return True if the (valid, split) filter matches the (valid, split) topic name."""
    first = filter_levels[0]
    if (first == "+" or first == "#") and topic_levels[0].startswith("$"):
        return False
    count = len(topic_levels)
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= count:
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == count


def rule_levels(pattern: Sequence[str], first: str) -> Sequence[str]:
    """Read an ACL rule pattern against a topic or filter whose first level is `first`.

    A rule pattern says what an identity may do, not which messages a subscription matches:
    a pattern whose first level is `+` or `#` also covers `$` topics other than `$SYS/...`,
    so `allow ... #` permits publishing `$TopicA/B` (a `#` *subscription* still never receives
    it, MQTT-4.7.2-1). The result is the pattern with its leading wildcard replaced by `first`
    when that makes a difference, to be used with `match_levels`, `subset_levels` and
    `intersect_levels` (which apply the filter rules). Requests whose first level is itself a
    wildcard match no `$` topic, so they are unaffected.

    Examples: `#` against `$TopicA` reads as `$TopicA/#`; `+/b` against `$x` as `$x/b`; `#`
    against `$SYS` stays `#` (which does not cover `$SYS/...`).
    """
    head = pattern[0]
    if (head == "+" or head == "#") and first.startswith("$") and first != SYS_LEVEL:
        return (first, "#") if head == "#" else (first, *pattern[1:])
    return pattern


def _without_empty_topic(levels: Sequence[str]) -> Sequence[str]:
    # `/#` also matches the empty topic "" (one empty level, via the parent rule), which is not
    # a valid topic name; over valid names it matches exactly what `/+/#` matches. It is the only
    # valid filter for which this matters (`+`, `#` and `+/#` match other one-level topics too).
    if len(levels) == 2 and levels[0] == "" and levels[1] == "#":
        return ("", "+", "#")
    return levels


def subset_levels(sub: Sequence[str], sup: Sequence[str]) -> bool:
    """Return True if every topic matched by filter `sub` is matched by filter `sup` (split)."""
    sub = _without_empty_topic(sub)
    # A literal `$...` first level in `sub` matches `$` topics that a wildcard-led `sup` never does.
    if _is_wild(sup[0]) and not _is_wild(sub[0]) and sub[0].startswith("$"):
        return False
    sup_count = len(sup)
    for index, level in enumerate(sub):
        if level == "#":
            # `sub` matches every continuation of zero or more levels here (at least one level
            # when `#` is the whole filter, since a topic has at least one level). Only a `#`
            # at the same place covers "zero more levels"; at the start, `+/#` covers
            # "one or more levels" too.
            if index < sup_count and sup[index] == "#":
                return True
            return index == 0 and sup_count == 2 and sup[0] == "+" and sup[1] == "#"
        if index >= sup_count:
            return False
        other = sup[index]
        if other == "#":
            return True
        if other != "+" and other != level:
            return False
    count = len(sub)
    # `sub` matches only topics of exactly `count` levels; `sup` must match those: same length,
    # or a trailing `#` that also matches its parent level.
    return count == sup_count or (sup_count == count + 1 and sup[count] == "#")


def intersect_levels(left: Sequence[str], right: Sequence[str]) -> bool:
    """Return True if some topic name is matched by both (valid, split) filters."""
    left, right = _without_empty_topic(left), _without_empty_topic(right)
    left_first, right_first = left[0], right[0]
    left_wild, right_wild = _is_wild(left_first), _is_wild(right_first)
    if left_wild and not right_wild and right_first.startswith("$"):
        return False
    if right_wild and not left_wild and left_first.startswith("$"):
        return False
    left_count, right_count = len(left), len(right)
    shorter = min(left_count, right_count)
    for index in range(shorter):
        a, b = left[index], right[index]
        if a == "#" or b == "#":
            return True
        if a != b and a != "+" and b != "+":
            return False
    if left_count == right_count:
        return True
    longer = left if left_count > right_count else right
    # The shorter filter matches topics of exactly `shorter` levels; only a `#` right after
    # them (matching its parent) lets the longer one match such a topic too.
    return longer[shorter] == "#"


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Return True if `topic_filter` matches the topic name `topic`.

    Invalid filters or topic names match nothing. A `$share/{name}/` prefix is ignored (the
    inner filter is matched). Filters starting with `+` or `#` do not match topics starting
    with `$` (MQTT-4.7.2-1).
    """
    if not is_valid_topic(topic):
        return False
    if "+" not in topic_filter and "#" not in topic_filter and not topic_filter.startswith("$share/"):
        # No wildcard: a filter matches exactly itself (and must be valid, which the topic
        # check above already guarantees when they are equal).
        return topic_filter == topic
    parsed = parse_filter(topic_filter)
    if parsed is None:
        return False
    return match_levels(parsed[1], topic.split("/"))


def filter_is_subset(sub: str, sup: str) -> bool:
    """Return True iff every topic name that filter `sub` matches is also matched by `sup`.

    Examples: `a/#` covers `a/b/#`, `a/+` and `a`; `a/+` does not cover `a/#` (which matches
    `a` and `a/b/c`); `#` covers every filter that cannot match a `$` topic but not `$SYS/#`;
    `+/x` does not cover `$SYS/x`. `$share/{name}/` prefixes are ignored. Invalid filters
    give False.
    """
    parsed_sub = parse_filter(sub)
    parsed_sup = parse_filter(sup)
    if parsed_sub is None or parsed_sup is None:
        return False
    return subset_levels(parsed_sub[1], parsed_sup[1])


def filters_intersect(left: str, right: str) -> bool:
    """Return True iff some topic name is matched by both filters.

    `$share/{name}/` prefixes are ignored. Invalid filters give False.
    """
    parsed_left = parse_filter(left)
    parsed_right = parse_filter(right)
    if parsed_left is None or parsed_right is None:
        return False
    return intersect_levels(parsed_left[1], parsed_right[1])
