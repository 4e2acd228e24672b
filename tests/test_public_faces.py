"""The public face of every package, pinned: what each `__init__.py` exports, and nothing else.

A name added to or removed from a package's `__all__` must be added or removed here too, on
purpose. Every exported name must resolve, and the lists stay sorted (ruff's RUF022 order).
"""

from __future__ import annotations

import importlib

import pytest

FACES: dict[str, str] = {
    "mqim._util": (
        "Deadlines KeyedBuckets SummaryLog TokenBucket ViolationWindow address_key "
        "cancel_and_wait host_of raise_if_cancelling worth_logging"
    ),
    "mqim.acl": (
        "DEFAULT_DENY DEFAULT_MAX_WIDE_SUBSCRIPTIONS_PER_SESSION INVALID_REQUEST "
        "MAX_CACHED_TOPIC_LENGTH MAX_SCOPE_OWNERS MAX_TOPIC_BYTES AclEngine AclError Action "
        "Decision Effect Identity IdentityKind InvalidIdentity InvalidRule MembershipIndex "
        "MembershipListener MembershipListing MembershipLookup ObservableMembership "
        "ReceiveScope Rule RuleSyntaxError ScopePart Subject SubjectKind compile_receive_scope "
        "describe_builtins filter_is_subset filters_intersect find_witness format_rule "
        "is_valid_filter is_valid_topic meet_levels parse_rule parse_rules split_shared "
        "topic_matches"
    ),
    "mqim.admin": (
        "AdminError AdminOptions NodeParts Observability ObservabilityOptions fetch_status node_parts"
    ),
    "mqim.auth": (
        "DEFAULT_AUTH_METHODS TOKEN_KEYS_FILENAME AuthError AuthMethod AuthOptions "
        "AuthenticationBusy Authenticator CertUserField CertificateAuthenticator "
        "CompositeAuthenticator ConnectRequest InvalidToken Keyring KeyringError KeyringFile "
        "PasswordAuthenticator PasswordCheckStats RefreshableAuthenticator StorageAuthenticator "
        "TokenAuthenticator TokenClaims TokenKey build_authenticator certificate_user "
        "ensure_keyring issue_token load_keyring looks_like_token save_keyring "
        "unverified_claims verify_token"
    ),
    "mqim.bench": (
        "BenchError BenchParams BenchReport FigureChange Histogram HistogramSnapshot "
        "InvalidParameter LossStats MachineInfo MqimTarget PhaseError ScenarioResult "
        "SequenceChecker Target TargetError TargetUnsupported TrackingLimitExceeded "
        "UnknownScenario UnknownTarget WorkerError WorkerTimeout compare compare_with "
        "format_comparison format_report load_report machine_info make_target run run_bench "
        "scenario_names"
    ),
    "mqim.bridge": (
        "BRIDGES_FILENAME MAX_BRIDGES MAX_MAPPINGS MAX_TOPICS_PER_BRIDGE STATUS_FILENAME "
        "Barrier BridgeConfig BridgeConfigError BridgeError BridgeService BridgeStats "
        "BridgeStorageError BridgeUnavailable BridgesFile CommandRoute Direction EchoGuard "
        "ImMapping OutboundBridge Outbox TopicRule TopicRuleError command_for committer_barrier "
        "cover_filters format_topic_rule load_bridges local_filters map_in map_out may_echo "
        "outbox_filename parse_bridges parse_remote parse_topic_rule read_status save_bridges "
        "stable_message_id subscriptions uplink_for"
    ),
    "mqim.broker": (
        "TOPIC_CLASSES BrokerError BrokerSettings ClusterPort ConfigError Counters Delivery Hub "
        "HubObserver Listener MalformedPacket MembershipView MqimAuthPlugin MqimBroker "
        "ProtocolViolation Session SharedIndex SubscriptionIndex Traffic group_of parse_shared"
    ),
    "mqim.cli": (
        "AuthConfig BrokerUrl CliError ClusterConfig ConfigError LimitsConfig LogConfig "
        "LogicConfig MqimConfig ServerConfig TlsConfig app configure_logging load_config main "
        "parse_broker_url"
    ),
    "mqim.client": (
        "AckTimeout AuthError ClientClosed ClientError ConnectError ConnectionLost DedupWindow "
        "Incoming IncomingBuffer InvalidRequest MqimClient PendingAcks SendError ack_of "
        "backoff_delay decode error_of lenient_validate new_message_id"
    ),
    "mqim.cluster": (
        "ClusterError ClusterKeys ClusterLink ClusterSettings NodeDeath NodeStatus "
        "read_cluster_status read_node_deaths"
    ),
    "mqim.hooks": (
        "DELIVERY_HEADER EVENT_HEADER MAX_ENDPOINTS OUTBOX_FILENAME SIGNATURE_HEADER "
        "TIMESTAMP_HEADER EndpointStats HookConfigError HookEndpoint HookEventName "
        "HookHttpError HookOutbox HookService HookStorageError HooksConfig HooksError "
        "client_for probe_event signed_headers verify"
    ),
    "mqim.logic": (
        "BrokerPort Bus BusClosed BusError BusUnavailable InProcessBus Inbound LogicCounters "
        "LogicError LogicLimits LogicService MqttBus Receipt RequestRejected"
    ),
    "mqim.mqtt": (
        "ACCEPTED BRIDGE_FLAG CONNACK CONNECT DISCONNECT DISCONNECT_BYTES OVERSIZE_HEAD_BYTES "
        "PINGREQ PINGREQ_BYTES PINGRESP PINGRESP_BYTES PUBACK PUBCOMP PUBLISH PUBREC PUBREL "
        "REFUSED_BAD_CREDENTIALS REFUSED_IDENTIFIER REFUSED_NOT_AUTHORIZED REFUSED_PROTOCOL "
        "REFUSED_UNAVAILABLE SUBACK SUBACK_FAILURE SUBSCRIBE UNSUBACK UNSUBSCRIBE Connect Frame "
        "MalformedPacket MqttError Oversize PacketDecoder ProtocolViolation Publish "
        "UnsupportedProtocol decode_ack decode_connack decode_connect decode_publish "
        "decode_suback decode_subscribe decode_unsubscribe encode_ack encode_connack "
        "encode_connect encode_publish encode_str encode_suback encode_subscribe "
        "encode_unsuback encode_varint"
    ),
    "mqim.protocol": (
        "ID_PATTERN PREFIX SHARED_UP_FILTER UP_FILTER Ack Channel CmdError CmdReply CmdRequest "
        "DeliveredMessage ErrorCode ErrorPayload Event GroupKind GroupRole HistoryPage "
        "HistoryRequest InboxKind InvalidId InvalidPayload InvalidTopic MessageOp ParsedTopic "
        "Presence PresenceState ProtocolError ReadRequest Receipt ReceiptKind ReplyEncoder "
        "SendRequest SyncConv SyncPage SyncRequest TypingNotice TypingRequest UpKind "
        "direct_conv group_conv group_filter group_topic inbox_filter inbox_topic is_valid_id "
        "parse_conv parse_topic parse_up_topic peek_request_id presence_topic request_ref "
        "up_topic validate_id"
    ),
    "mqim.server": (
        "STAMP_NAME ClusterServer DeliveryReceipts EmbeddedServer LogicWorker "
        "MembershipFollower PresenceTracker ServerError load_membership membership_stamp_key "
        "touch_membership_stamp"
    ),
    "mqim.stats": "DEFAULT_BOUNDS_S SAMPLE_EVERY LatencyHistogram",
    "mqim.storage": (
        "AccountKind AclRuleRecord AlreadyExists AppendResult Conflict ConvState GroupRecord "
        "MessageRecord MongoStorage NewMessage NotFound QueuedMessage RedisSessionStore "
        "RetainedRecord Role RoleRecord SessionStore SqliteSessionStore SqliteStorage Storage "
        "StorageError StoredSession Unavailable UserChanges UserRecord hash_password "
        "verify_password"
    ),
    "mqim.web": "HttpHandler HttpRequest HttpResponse HttpServer WebError WebOptions WebServer WebSite",
}


@pytest.mark.parametrize("package", sorted(FACES))
def test_the_face_is_what_is_pinned(package: str) -> None:
    module = importlib.import_module(package)
    assert list(module.__all__) == FACES[package].split()


@pytest.mark.parametrize("package", sorted(FACES))
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, missing


def test_every_package_is_pinned() -> None:
    import pkgutil

    import mqim

    packages = {f"mqim.{info.name}" for info in pkgutil.iter_modules(mqim.__path__) if info.ispkg}
    assert packages == set(FACES)
