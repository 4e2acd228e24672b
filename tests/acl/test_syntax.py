"""The rule text format: parse_rule / format_rule / parse_rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqim.acl import (
    Action,
    Effect,
    InvalidRule,
    Rule,
    RuleSyntaxError,
    Subject,
    format_rule,
    parse_rule,
    parse_rules,
)


def test_parse_example() -> None:
    parsed = parse_rule("allow user:alice publish,subscribe sensors/%u/#")
    assert parsed == Rule(
        effect=Effect.ALLOW,
        actions=frozenset({Action.PUBLISH, Action.SUBSCRIBE}),
        pattern="sensors/%u/#",
        subject=Subject.for_user("alice"),
    )
    assert format_rule(parsed) == "allow user:alice publish,subscribe sensors/%u/#"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("  deny   role:guest   receive,subscribe   a/#  ", "deny role:guest subscribe,receive a/#"),
        ("allow all receive room 1/+", "allow all receive room 1/+"),
        ('allow all receive " lead/space"', 'allow all receive " lead/space"'),
        ('allow all receive "\\"quoted"', 'allow all receive "\\"quoted"'),
        ('allow all receive "tab\\there"', 'allow all receive "tab\\there"'),
        ("allow all subscribe $share/+/jobs/#", "allow all subscribe $share/+/jobs/#"),
        ("deny user:a:b publish,subscribe,receive #", "deny user:a:b publish,subscribe,receive #"),
    ],
)
def test_canonical_form(text: str, canonical: str) -> None:
    parsed = parse_rule(text)
    assert format_rule(parsed) == canonical
    assert parse_rule(canonical) == parsed


def test_name_and_description_are_kept_out_of_text() -> None:
    named = parse_rule("allow all publish a", name="n", description="d")
    assert (named.name, named.description) == ("n", "d")
    assert format_rule(named) == "allow all publish a"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "expected"),
        ("allow all publish", "expected"),
        ("permit all publish a", "unknown effect"),
        ("allow everyone publish a", "unknown subject"),
        ("allow user: publish a", "needs a name"),
        ("allow group:x publish a", "unknown subject"),
        ("allow all pub a", "unknown action"),
        ("allow all publish, a", "unknown action"),
        ("allow all publish,publish a", "twice"),
        ("allow all publish foo%u", "placeholder"),
        ("allow all publish a/#/b", "not a valid topic filter"),
        ("allow all publish $share/+/a", "cannot cover publish"),
        ('allow all publish "unterminated', "JSON"),
        ("allow all publish 12", None),
    ],
)
def test_errors(text: str, fragment: str | None) -> None:
    if fragment is None:  # a valid pattern that merely looks like JSON
        assert parse_rule(text).pattern == "12"
        return
    with pytest.raises(RuleSyntaxError, match=fragment) as info:
        parse_rule(text)
    assert isinstance(info.value, InvalidRule)
    assert isinstance(info.value, ValueError)
    assert info.value.line is None


def test_parse_rules_skips_comments_and_reports_lines() -> None:
    text = "# who may do what\n\nallow all subscribe a/#\n   # indented comment\ndeny user:bob receive a/b\n"
    rules = parse_rules(text)
    assert [format_rule(r) for r in rules] == ["allow all subscribe a/#", "deny user:bob receive a/b"]
    with pytest.raises(RuleSyntaxError) as info:
        parse_rules("allow all subscribe a\n\nallow all frob b\n")
    assert info.value.line == 3
    assert str(info.value).startswith("line 3: ")


level = st.one_of(
    st.sampled_from(["a", "+", "%u", "%c", "", "room 1", "$x", "ü", ' "q']),
    st.text(st.characters(exclude_characters="/+#%\0", exclude_categories=["Cs"]), max_size=4),
)


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    levels = draw(st.lists(level, min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    pattern = "/".join(levels)
    effect = draw(st.sampled_from(list(Effect)))
    actions = draw(st.frozensets(st.sampled_from(list(Action)), min_size=1))
    subject = draw(
        st.sampled_from([Subject.everyone(), Subject.for_user("alice"), Subject.for_role("ops:1")])
    )
    try:
        return Rule(effect=effect, actions=actions, pattern=pattern, subject=subject)
    except InvalidRule:
        return Rule(effect=effect, actions=actions, pattern="fallback/#", subject=subject)


@given(rules())
def test_round_trip(built: Rule) -> None:
    text = format_rule(built)
    assert "\n" not in text
    assert parse_rule(text) == built
    assert parse_rules(f"# c\n{text}\n") == [built]
