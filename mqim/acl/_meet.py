"""Filter algebra on split filters: the meet of two filters and a witness topic outside excludes.

Filters are tuples of levels (`Levels`); `()` stands for every topic. Used by the receive-scope
compiler (`mqim/acl/_intersect.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

from mqim.acl._matcher import intersect_levels

Levels = tuple[str, ...]

_WILD = ("+", "#")


def meet_levels(left: Levels, right: Levels) -> Levels | None:
    """Return the filter matching exactly the topic names both filters match, or None if none.

    The intersection of two MQTT filters is itself a filter: level by level, `+` yields to the
    other level, `#` to the other's remaining levels, two different literals to nothing. `()`
    stands for every topic. Wildcard-led filters never meet a literal `$...` first level
    (MQTT-4.7.2-1); the result of two wildcard-led filters is wildcard-led, so it excludes `$`
    topics as both of them do.

    Examples: `a/#` and `+/b` meet in `a/b`; `#` and `a` in `a`; `a/#` and `a` in `a` (`#`
    matches its parent level); `+/x` and `$SYS/x` in nothing; `/#` and `+` only in the empty
    topic, which is not a topic name, so in nothing.
    """
    if not left:
        return right
    if not right:
        return left
    left_wild, right_wild = left[0] in _WILD, right[0] in _WILD
    if (left_wild and not right_wild and right[0].startswith("$")) or (
        right_wild and not left_wild and left[0].startswith("$")
    ):
        return None
    out: list[str] = []
    for a, b in zip(left, right, strict=False):
        if a == "#":
            return _nonempty((*out, *right[len(out) :]))
        if b == "#":
            return _nonempty((*out, *left[len(out) :]))
        if a == "+":
            out.append(b)
        elif b == "+" or a == b:
            out.append(a)
        else:
            return None
    if len(left) != len(right):
        longer = left if len(left) > len(right) else right
        # The shorter filter matches only topics of exactly its length; the longer one matches
        # such a topic only through a `#` right after (MQTT 4.7.1.2: `#` matches the parent).
        if longer[len(out)] != "#":
            return None
    return _nonempty(tuple(out))


def _nonempty(levels: Levels) -> Levels | None:
    # The empty topic "" (one empty level) is not a topic name (MQTT-4.7.3-1).
    return None if levels == ("",) else levels


def _stop_matches(exclude: Levels, count: int) -> bool:
    """Whether `exclude`, matching a topic's first `count` levels, matches that topic itself."""
    return len(exclude) == count or (len(exclude) == count + 1 and exclude[count] == "#")


def find_witness(pattern: Levels, excludes: Sequence[Levels]) -> Levels | None:
    """Return a topic name (split) matched by `pattern` and by none of `excludes`, or None.

    Exact over valid topic names (the 65,535-byte limit aside): at each level only the literals
    the excludes use there and one fresh value can make a difference, and beyond the longest
    exclude nothing changes any more, so a depth-first search over those choices, with failed
    states remembered, decides it.
    """
    count = len(pattern)
    hash_at = count - 1 if pattern[-1] == "#" else -1
    wild_first = pattern[0] in _WILD
    prefix: list[str] = []
    failed: set[tuple[int, tuple[int, ...], bool]] = set()

    def candidates(index: int, alive: tuple[int, ...]) -> list[str]:
        literals = {
            excludes[k][index] for k in alive if index < len(excludes[k]) and excludes[k][index] not in _WILD
        }
        if index == 0 and wild_first:
            # A wildcard-led pattern never matches a `$` topic (MQTT-4.7.2-1).
            literals = {value for value in literals if not value.startswith("$")}
        fresh = "x"
        serial = 0
        while fresh in literals:
            serial += 1
            fresh = f"x{serial}"
        return [fresh, *sorted(literals)]

    def search(index: int, alive: tuple[int, ...]) -> bool:
        empty_first = index == 1 and prefix[0] == ""
        key = (index, alive, empty_first)
        if key in failed:
            return False
        in_hash = hash_at >= 0 and index >= hash_at
        may_stop = index >= 1 and (index == count or in_hash) and not (index == 1 and prefix[0] == "")
        if may_stop and not any(_stop_matches(excludes[k], index) for k in alive):
            return True
        if in_hash or index < count:
            level = "+" if in_hash or pattern[index] == "+" else pattern[index]
            for value in candidates(index, alive) if level == "+" else [level]:
                following: list[int] = []
                covered = False
                for k in alive:
                    exclude = excludes[k]
                    if index >= len(exclude):
                        continue
                    other = exclude[index]
                    if index == 0 and other in _WILD and value.startswith("$"):
                        continue  # MQTT-4.7.2-1
                    if other == "#":
                        covered = True
                        break
                    if other == "+" or other == value:
                        following.append(k)
                if covered:
                    continue
                prefix.append(value)
                if search(index + 1, tuple(following)):
                    return True
                prefix.pop()
        failed.add(key)
        return False

    relevant = tuple(k for k, exclude in enumerate(excludes) if intersect_levels(exclude, pattern))
    if search(0, relevant):
        return tuple(prefix)
    return None
