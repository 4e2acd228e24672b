"""`mqim token ...`: signed access tokens (HMAC-SHA256 JWT) and their keys.

A client presents a token as its MQTT password, with its user id as the MQTT username. Keys live
in `<data-dir>/token-keys.json` (mode 0600) unless `auth.token_keys_file` says otherwise; the
running server reloads the file when it changes.

Cluster mode: every node reads its own key file (the same rule, per node), while the accounts
`issue` checks and the revocations `revoke` writes are in the cluster's MongoDB (`--mongo`). So
the nodes must share one key file: point `auth.token_keys_file` of every node and of these
commands at the same file (a shared path, or copy it to each node after `issue` creates it and
after each `rotate`); a node without the key refuses the token.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mqim.cli._common import fail, get_config, open_storage, run, storage_config
from mqim.cli._config import MqimConfig
from mqim.cli._exceptions import CliError
from mqim.cli._options import ConfigOpt, DatabaseOpt, DataDirOpt, MongoOpt
from mqim.protocol import InvalidId, validate_id
from mqim.storage import StorageError

if TYPE_CHECKING:
    from mqim.auth import Keyring

MAX_JTI_CHARS = 256
"""Longest token id accepted by `revoke`."""

token_app = typer.Typer(
    name="token",
    help=(
        "Signed access tokens: the client sends its user id as MQTT username and the token as "
        "password. Keys are in <data-dir>/token-keys.json (mode 0600) or auth.token_keys_file; "
        "in a cluster every node needs the same key file."
    ),
    no_args_is_help=True,
)


def _config(config_path: ConfigOpt, data_dir: DataDirOpt) -> MqimConfig:
    return get_config(config_path, {"server.data_dir": data_dir})


def keys_path(config: MqimConfig) -> Path:
    """The token key file the configuration names."""
    # Imported here: only the token commands need the broker package.
    from mqim.auth import TOKEN_KEYS_FILENAME

    configured = config.auth.token_keys_file
    return configured if configured is not None else config.server.data_dir / TOKEN_KEYS_FILENAME


def _keyring(path: Path, *, create: bool) -> Keyring:
    from mqim.auth import KeyringError, ensure_keyring, load_keyring

    try:
        return ensure_keyring(path, now=int(time.time())) if create else load_keyring(path)
    except KeyringError as exc:
        fail(str(exc))


@token_app.command("issue")
def issue(
    user: Annotated[str, typer.Argument(help="The user the token is for.", show_default=False)],
    ttl: Annotated[
        int, typer.Option("--ttl", help="Lifetime in seconds.", min=1, max=366 * 24 * 3600)
    ] = 3600,
    aud: Annotated[
        str | None, typer.Option("--aud", help="Audience  [default: auth.token_audience, mqim]")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {token, jti, sub, exp} as JSON instead of the token.")
    ] = False,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Print a token for USER (the key file is created on first use)."""
    from mqim.auth import issue_token, verify_token

    config = storage_config(config_path, data_dir, mongo_url, database)
    try:
        user_id = validate_id(user, what="user")
    except InvalidId as exc:
        fail(exc.message, 2)
    audience = aud or config.auth.token_audience

    async def check() -> None:
        async with open_storage(config) as storage:
            try:
                record = await storage.get_user(user_id)
            except StorageError as exc:
                raise CliError(f"storage error: {exc}") from exc
        if record is None:
            raise CliError(f"user {user_id!r} not found")
        if record.disabled:
            raise CliError(f"user {user_id!r} is disabled")

    run(check())
    keyring = _keyring(keys_path(config), create=True)
    now = int(time.time())
    token = issue_token(keyring, subject=user_id, audience=audience, ttl_s=ttl, now=now)
    if as_json:
        claims = verify_token(keyring, token, audience=audience, now=now)
        typer.echo(
            json.dumps(
                {"token": token, "jti": claims.token_id, "sub": claims.subject, "exp": int(claims.expires_at)}
            )
        )
    else:
        typer.echo(token)


@token_app.command("revoke")
def revoke(
    token_or_jti: Annotated[
        str, typer.Argument(help="The token itself, or its id (jti).", show_default=False)
    ],
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Revoke a token: the server refuses it at every later CONNECT."""
    from mqim.auth import InvalidToken, looks_like_token, unverified_claims

    config = storage_config(config_path, data_dir, mongo_url, database)
    jti, expires = token_or_jti, None
    if looks_like_token(token_or_jti):
        try:
            # Only read to learn which id to revoke: revoking grants nothing.
            claims = unverified_claims(token_or_jti)
        except InvalidToken as exc:
            fail(f"cannot read the token: {exc}", 2)
        raw_jti, raw_exp = claims.get("jti"), claims.get("exp")
        if not isinstance(raw_jti, str) or not raw_jti:
            fail("the token has no jti claim", 2)
        jti = raw_jti
        expires = int(raw_exp) if isinstance(raw_exp, int | float) and not isinstance(raw_exp, bool) else None
    if not jti or len(jti) > MAX_JTI_CHARS or not jti.isprintable():
        fail(f"a token id is 1 to {MAX_JTI_CHARS} printable characters", 2)

    async def go() -> None:
        async with open_storage(config) as storage:
            try:
                await storage.revoke_token(jti, expires_ts=expires)
            except StorageError as exc:
                raise CliError(f"storage error: {exc}") from exc

    run(go())
    typer.echo(f"revoked token {jti}")


@token_app.command("rotate")
def rotate(
    keep: Annotated[
        int, typer.Option("--keep", help="Keys kept in all, the new one included.", min=1, max=16)
    ] = 3,
    data_dir: DataDirOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Add a new signing key; tokens signed by the kept older keys stay valid."""
    from mqim.auth import KeyringError, save_keyring

    config = _config(config_path, data_dir)
    path = keys_path(config)
    keyring = _keyring(path, create=False)
    try:
        rotated = keyring.rotated(now=int(time.time()), keep=keep)
        save_keyring(path, rotated)
    except KeyringError as exc:
        fail(str(exc))
    signing = rotated.signing_key
    assert signing is not None
    dropped = len(keyring) + 1 - len(rotated)
    typer.echo(f"new signing key {signing.kid}; {len(rotated)} key(s) kept, {dropped} dropped")


@token_app.command("keys")
def keys(
    data_dir: DataDirOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """List the key ids (never the secrets); the last one signs."""
    config = _config(config_path, data_dir)
    keyring = _keyring(keys_path(config), create=False)
    if not len(keyring):
        typer.echo("no keys yet (`mqim token issue` creates the first)", err=True)
    for key in keyring.keys:
        marker = "  (signs)" if key is keyring.signing_key else ""
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(key.created))
        typer.echo(f"{key.kid}  created {created} UTC{marker}")
