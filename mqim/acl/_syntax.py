"""The rule text format used by the CLI and the configuration file.

One rule per line::

    <effect> <subject> <actions> <pattern>

    allow user:alice publish,subscribe sensors/%u/#
    deny  role:guest subscribe,receive sensors/secret/#
    allow all        receive          "room 1/ends with a space "

- effect: `allow` or `deny`;
- subject: `all`, `user:NAME` or `role:NAME` (NAME without whitespace);
- actions: a comma-separated list of `publish`, `subscribe`, `receive`, without spaces;
- pattern: the rest of the line. It may contain spaces; write it as a JSON string (in double
  quotes) when it starts or ends with whitespace, starts with `"`, or holds control characters.

In a multi-line text (`parse_rules`), blank lines and lines starting with `#` are ignored (a rule
always starts with `allow` or `deny`, so a `#` in a pattern is never mistaken for a comment).
`format_rule` writes the canonical form (single spaces, actions in a fixed order) and
`parse_rule(format_rule(rule))` gives back the same rule, apart from `name` and `description`.
"""

from __future__ import annotations

import json

from mqim.acl._exceptions import InvalidRule, RuleSyntaxError
from mqim.acl._rules import Action, Effect, Rule, Subject, SubjectKind

_ACTION_ORDER = (Action.PUBLISH, Action.SUBSCRIBE, Action.RECEIVE)
_EXPECTED_ACTIONS = ", ".join(action.value for action in _ACTION_ORDER)


def _parse_subject(token: str) -> Subject:
    if token == "all":
        return Subject.everyone()
    kind, sep, name = token.partition(":")
    if not sep or kind not in (SubjectKind.USER.value, SubjectKind.ROLE.value):
        raise RuleSyntaxError(f"unknown subject {token!r}: expected all, user:NAME or role:NAME")
    if name == "":
        raise RuleSyntaxError(f"subject {token!r} needs a name after ':'")
    try:
        return Subject(kind=SubjectKind(kind), name=name)
    except InvalidRule as exc:
        raise RuleSyntaxError(str(exc)) from exc


def _parse_actions(token: str) -> frozenset[Action]:
    actions: set[Action] = set()
    for word in token.split(","):
        try:
            action = Action(word)
        except ValueError:
            raise RuleSyntaxError(
                f"unknown action {word!r} in {token!r}: expected a comma-separated list of "
                f"{_EXPECTED_ACTIONS} (no spaces)"
            ) from None
        if action in actions:
            raise RuleSyntaxError(f"action {word!r} is listed twice in {token!r}")
        actions.add(action)
    return frozenset(actions)


def _parse_pattern(text: str) -> str:
    if not text.startswith('"'):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RuleSyntaxError(f"quoted pattern {text!r} is not a valid JSON string: {exc.msg}") from exc
    if not isinstance(value, str):
        raise RuleSyntaxError(f"quoted pattern {text!r} is not a string")
    return value


def parse_rule(text: str, *, name: str = "", description: str = "") -> Rule:
    """Parse one rule written as `<effect> <subject> <actions> <pattern>`.

    Args:
        text: The rule text.
        name: The name of the rule for decisions and logs (the text is used when empty).
        description: Free text for humans.

    Raises:
        RuleSyntaxError: When the text does not parse or the rule is invalid (bad pattern...).
    """
    stripped = text.strip()
    parts = stripped.split(maxsplit=3)
    if len(parts) < 4:
        raise RuleSyntaxError(
            f"expected '<allow|deny> <all|user:NAME|role:NAME> <actions> <pattern>', got {stripped!r}"
        )
    effect_token, subject_token, actions_token, pattern_text = parts
    try:
        effect = Effect(effect_token)
    except ValueError:
        raise RuleSyntaxError(f"unknown effect {effect_token!r}: expected allow or deny") from None
    subject = _parse_subject(subject_token)
    actions = _parse_actions(actions_token)
    pattern = _parse_pattern(pattern_text)
    try:
        return Rule(
            effect=effect,
            actions=actions,
            pattern=pattern,
            subject=subject,
            name=name,
            description=description,
        )
    except RuleSyntaxError:
        raise
    except InvalidRule as exc:
        raise RuleSyntaxError(str(exc)) from exc


def parse_rules(text: str) -> list[Rule]:
    """Parse a multi-line rule text: one rule per line, blank lines and `#` comments ignored.

    Raises:
        RuleSyntaxError: For the first bad line; its `line` attribute is the 1-based line number.
    """
    rules: list[Rule] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped == "" or stripped.startswith("#"):
            continue
        try:
            rules.append(parse_rule(stripped))
        except RuleSyntaxError as exc:
            raise RuleSyntaxError(exc.message, line=number) from exc
    return rules


def _needs_quotes(pattern: str) -> bool:
    return pattern.startswith('"') or pattern != pattern.strip() or not pattern.isprintable()


def format_rule(rule: Rule) -> str:
    """Return the canonical text of `rule` (its name and description are not part of it)."""
    actions = ",".join(action.value for action in _ACTION_ORDER if action in rule.actions)
    pattern = json.dumps(rule.pattern) if _needs_quotes(rule.pattern) else rule.pattern
    return f"{rule.effect.value} {rule.subject} {actions} {pattern}"
