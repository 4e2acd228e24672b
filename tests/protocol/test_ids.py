"""Id rule and conversation ids (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqim.protocol import InvalidId, direct_conv, group_conv, is_valid_id, parse_conv, validate_id

ids = st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z")


@given(ids)
def test_valid_ids_pass_every_time(value: str) -> None:
    assert is_valid_id(value)
    assert validate_id(value) == value
    assert validate_id(value) == value  # the second call goes through the memo


@pytest.mark.parametrize(
    "value", ["", "a" * 65, "a b", "a/b", "a+b", "a#", "$SYS", "é", "a\x00", "a:b", "a\n"]
)
def test_invalid_ids_are_refused(value: str) -> None:
    assert not is_valid_id(value)
    with pytest.raises(InvalidId, match="must match"):
        validate_id(value, what="user")


def test_a_refused_id_stays_refused_after_valid_ones_were_memoised() -> None:
    validate_id("ok-user")
    with pytest.raises(InvalidId):
        validate_id("ok user")


def test_non_strings_are_refused() -> None:
    for value in (None, 5, ["a"], {"a": 1}):
        with pytest.raises(InvalidId):
            validate_id(value)  # type: ignore[arg-type]


@given(ids, ids)
def test_direct_conv_is_symmetric_and_parses_back(a: str, b: str) -> None:
    conv = direct_conv(a, b)
    assert conv == direct_conv(b, a)
    kind, users = parse_conv(conv)
    assert kind == "d"
    assert users == tuple(sorted((a, b)))


@given(ids)
def test_group_conv_parses_back(group: str) -> None:
    assert parse_conv(group_conv(group)) == ("g", (group,))


@pytest.mark.parametrize("conv", ["d:b:a", "d:a", "x:a", "g:", "g:a:b", "d:a b:c", "", "g:$x"])
def test_malformed_conversation_ids_are_refused(conv: str) -> None:
    with pytest.raises(InvalidId):
        parse_conv(conv)
