"""The mqim broker: amqtt's `Broker` with mqim's connection handling, routing and durable sessions."""

from mqim._util import KeyedBuckets, TokenBucket
from mqim.broker._auth import (
    DEFAULT_AUTH_METHODS,
    TOKEN_KEYS_FILENAME,
    AuthMethod,
    AuthOptions,
    CompositeAuthenticator,
    build_authenticator,
)
from mqim.broker._authenticator import Authenticator, ConnectRequest, RefreshableAuthenticator
from mqim.broker._broker import MqimBroker
from mqim.broker._cert_auth import CertificateAuthenticator, CertUserField, certificate_user
from mqim.broker._exceptions import (
    AuthenticationBusy,
    BrokerError,
    ConfigError,
    InvalidToken,
    KeyringError,
    MalformedPacket,
    ProtocolViolation,
)
from mqim.broker._hub import Counters, Hub, HubObserver
from mqim.broker._keyring import Keyring, KeyringFile, TokenKey, ensure_keyring, load_keyring, save_keyring
from mqim.broker._listener import Listener
from mqim.broker._managed import group_of
from mqim.broker._password_auth import PasswordAuthenticator, PasswordCheckStats, StorageAuthenticator
from mqim.broker._plugins import MqimAuthPlugin
from mqim.broker._ports import ClusterPort
from mqim.broker._ratelimit import ViolationWindow, address_key
from mqim.broker._router import SubscriptionIndex
from mqim.broker._session import Delivery, Session
from mqim.broker._settings import BrokerSettings
from mqim.broker._shared import SharedIndex, parse_shared
from mqim.broker._sys import SYS_ROOT, SysPublisher
from mqim.broker._token_auth import TokenAuthenticator
from mqim.broker._tokens import TokenClaims, issue_token, looks_like_token, unverified_claims, verify_token
from mqim.broker._traffic import TOPIC_CLASSES, Traffic

__all__ = [
    "DEFAULT_AUTH_METHODS",
    "SYS_ROOT",
    "TOKEN_KEYS_FILENAME",
    "TOPIC_CLASSES",
    "AuthMethod",
    "AuthOptions",
    "AuthenticationBusy",
    "Authenticator",
    "BrokerError",
    "BrokerSettings",
    "CertUserField",
    "CertificateAuthenticator",
    "ClusterPort",
    "CompositeAuthenticator",
    "ConfigError",
    "ConnectRequest",
    "Counters",
    "Delivery",
    "Hub",
    "HubObserver",
    "InvalidToken",
    "KeyedBuckets",
    "Keyring",
    "KeyringError",
    "KeyringFile",
    "Listener",
    "MalformedPacket",
    "MqimAuthPlugin",
    "MqimBroker",
    "PasswordAuthenticator",
    "PasswordCheckStats",
    "ProtocolViolation",
    "RefreshableAuthenticator",
    "Session",
    "SharedIndex",
    "StorageAuthenticator",
    "SubscriptionIndex",
    "SysPublisher",
    "TokenAuthenticator",
    "TokenBucket",
    "TokenClaims",
    "TokenKey",
    "Traffic",
    "ViolationWindow",
    "address_key",
    "build_authenticator",
    "certificate_user",
    "ensure_keyring",
    "group_of",
    "issue_token",
    "load_keyring",
    "looks_like_token",
    "parse_shared",
    "save_keyring",
    "unverified_claims",
    "verify_token",
]
