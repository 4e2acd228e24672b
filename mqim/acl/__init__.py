"""Access control: who may publish, subscribe and receive. Pure: no I/O, no asyncio, no amqtt.

The pieces: MQTT topic/filter matching with exact subset and intersection (`_matcher`), the rule
model (`_rules`) and its text format (`_syntax`), the membership lookup (`_membership`), the
built-in v1 rules (`_builtin`), the caching evaluator (`_engine`) and the receive scopes of
wildcard subscriptions (`_scope`), compiled once per SUBSCRIBE (`_intersect`, from the grants of
`_grants`, with the filter algebra of `_meet` and the tries of `_filter_trie`).
"""

from mqim.acl._builtin import describe_builtins
from mqim.acl._engine import DEFAULT_DENY, INVALID_REQUEST, MAX_CACHED_TOPIC_LENGTH, AclEngine, Decision
from mqim.acl._exceptions import AclError, InvalidIdentity, InvalidRule, RuleSyntaxError
from mqim.acl._intersect import MAX_SCOPE_OWNERS, compile_receive_scope
from mqim.acl._listing import MembershipListing
from mqim.acl._matcher import (
    MAX_TOPIC_BYTES,
    filter_is_subset,
    filters_intersect,
    is_valid_filter,
    is_valid_topic,
    split_shared,
    topic_matches,
)
from mqim.acl._meet import find_witness, meet_levels
from mqim.acl._membership import (
    MembershipIndex,
    MembershipListener,
    MembershipLookup,
    ObservableMembership,
)
from mqim.acl._rules import Action, Effect, Identity, IdentityKind, Rule, Subject, SubjectKind
from mqim.acl._scope import DEFAULT_MAX_WIDE_SUBSCRIPTIONS_PER_SESSION, ReceiveScope, ScopePart
from mqim.acl._syntax import format_rule, parse_rule, parse_rules

__all__ = [
    "DEFAULT_DENY",
    "DEFAULT_MAX_WIDE_SUBSCRIPTIONS_PER_SESSION",
    "INVALID_REQUEST",
    "MAX_CACHED_TOPIC_LENGTH",
    "MAX_SCOPE_OWNERS",
    "MAX_TOPIC_BYTES",
    "AclEngine",
    "AclError",
    "Action",
    "Decision",
    "Effect",
    "Identity",
    "IdentityKind",
    "InvalidIdentity",
    "InvalidRule",
    "MembershipIndex",
    "MembershipListener",
    "MembershipListing",
    "MembershipLookup",
    "ObservableMembership",
    "ReceiveScope",
    "Rule",
    "RuleSyntaxError",
    "ScopePart",
    "Subject",
    "SubjectKind",
    "compile_receive_scope",
    "describe_builtins",
    "filter_is_subset",
    "filters_intersect",
    "find_witness",
    "format_rule",
    "is_valid_filter",
    "is_valid_topic",
    "meet_levels",
    "parse_rule",
    "parse_rules",
    "split_shared",
    "topic_matches",
]
