"""TLS client certificates as credentials: CN or first DNS subjectAltName names the user.

Certificates are made for each test module with the `openssl` command line (a CA, a server
certificate for 127.0.0.1, client certificates, and a second CA nobody trusts).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mqim.auth import AuthOptions, CertUserField, certificate_user
from mqim.broker import Listener
from mqim.server import EmbeddedServer
from tests.conftest import PASSWORD
from tests.security.conftest import started
from tests.support.mqtt import Paho

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip


def _leaf(directory: Path, name: str, *, ca: str, subject: str, extensions: str) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject,
        cwd=directory,
    )  # fmt: skip
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip


CLIENT_EXT = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "rogue")
    _leaf(
        d, "server", ca="ca", subject="/CN=localhost",
        extensions="basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )  # fmt: skip
    _leaf(d, "alice", ca="ca", subject="/CN=tls-alice", extensions=CLIENT_EXT)
    _leaf(d, "ghost", ca="ca", subject="/CN=tls-ghost", extensions=CLIENT_EXT)
    _leaf(d, "wild", ca="ca", subject="/CN=tls\\+#", extensions=CLIENT_EXT)
    _leaf(d, "san", ca="ca", subject="/CN=nobody", extensions=CLIENT_EXT + "subjectAltName=DNS:tls-alice\n")
    _leaf(d, "forged", ca="rogue", subject="/CN=tls-alice", extensions=CLIENT_EXT)
    return d


@pytest.fixture
async def tls_server(
    tmp_path: Path, pki: Path, request: pytest.FixtureRequest
) -> AsyncIterator[EmbeddedServer]:
    field: CertUserField = getattr(request, "param", "cn")
    listeners = [
        Listener(name="default", port=0),
        Listener(
            name="tls", port=0, certfile=pki / "server.pem", keyfile=pki / "server.key", cafile=pki / "ca.pem"
        ),
    ]
    async with started(
        tmp_path / "data", listeners=listeners, auth=AuthOptions(cert_user_field=field)
    ) as srv:
        for user in ("tls-alice", "tls-bob"):
            await srv.storage.add_user(user, password=PASSWORD)
        yield srv


@pytest.fixture
def tls_client(tls_server: EmbeddedServer, pki: Path) -> Iterator[Callable[..., Paho]]:
    made: list[Paho] = []

    def make(
        cert: str | None, *, user: str | None = None, password: str | None = None, cid: str = "t"
    ) -> Paho:
        client = Paho(port=tls_server.port("tls"), user=user, password=password, client_id=cid)
        if cert is None:
            client.client.tls_set(ca_certs=str(pki / "ca.pem"))
        else:
            client.client.tls_set(
                ca_certs=str(pki / "ca.pem"),
                certfile=str(pki / f"{cert}.pem"),
                keyfile=str(pki / f"{cert}.key"),
            )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


async def connect(client: Paho, timeout: float = 10.0) -> int | None:
    """`Paho.connect` for TLS (the handshake needs the server's loop, so it runs in a thread).

    Returns the CONNACK code, or None when none came within `timeout`.
    """
    await asyncio.to_thread(client.client.connect, "127.0.0.1", client.port, client.keepalive)
    client.client.loop_start()
    if not await asyncio.to_thread(client._connected.wait, timeout):
        return None
    assert client.connack is not None
    return client.connack[1]


async def rc_of(client: Paho) -> int | None:
    try:
        return await connect(client)
    finally:
        client.close()


def user_of(server: EmbeddedServer, client_id: str) -> str | None:
    assert server.broker is not None
    session = server.broker.hub.sessions.get(client_id)
    return session.user if session is not None else None


async def test_certificate_alone_authenticates_its_cn(
    tls_server: EmbeddedServer, tls_client: Callable[..., Paho]
) -> None:
    client = tls_client("alice", cid="a1")
    assert await connect(client) == 0
    assert user_of(tls_server, "a1") == "tls-alice"
    await client.subscribe("im/v1/u/tls-alice/#")  # its own inbox: allowed


async def test_certificate_with_the_same_username(
    tls_server: EmbeddedServer, tls_client: Callable[..., Paho]
) -> None:
    client = tls_client("alice", user="tls-alice", cid="a2")
    assert await connect(client) == 0
    assert user_of(tls_server, "a2") == "tls-alice"


@pytest.mark.parametrize("cert", ["ghost", "wild"])
async def test_certificate_of_no_valid_account_is_refused(
    tls_server: EmbeddedServer, tls_client: Callable[..., Paho], cert: str
) -> None:
    assert await rc_of(tls_client(cert)) == 4


async def test_certificate_of_a_disabled_account_is_refused(
    tls_server: EmbeddedServer, tls_client: Callable[..., Paho]
) -> None:
    await tls_server.storage.set_disabled("tls-alice", True)
    assert await rc_of(tls_client("alice")) == 4


async def test_certificate_does_not_make_you_someone_else(
    tls_server: EmbeddedServer, tls_client: Callable[..., Paho]
) -> None:
    # alice's certificate, bob's name: only bob's password can make this bob.
    assert await rc_of(tls_client("alice", user="tls-bob")) == 4
    assert await rc_of(tls_client("alice", user="tls-bob", password="wrong")) == 4
    client = tls_client("alice", user="tls-bob", password=PASSWORD, cid="b1")
    assert await connect(client) == 0
    assert user_of(tls_server, "b1") == "tls-bob"


async def test_certificate_from_another_ca_fails_the_handshake(
    tls_server: EmbeddedServer, tls_client: Callable[..., Paho]
) -> None:
    client = tls_client("forged", cid="f1")
    try:
        rc = await connect(client, timeout=2.0)
    except (ssl.SSLError, OSError):
        rc = None  # refused during the handshake (TLS 1.2)
    finally:
        client.close()
    # With TLS 1.3 the client finishes first and the server drops it: never a CONNACK either way.
    assert rc is None
    assert user_of(tls_server, "f1") is None


async def test_no_certificate_password_still_works(
    tls_server: EmbeddedServer, tls_client: Callable[..., Paho]
) -> None:
    assert await rc_of(tls_client(None)) == 4  # no cert, no credentials
    client = tls_client(None, user="tls-bob", password=PASSWORD, cid="b2")
    assert await connect(client) == 0
    assert user_of(tls_server, "b2") == "tls-bob"


@pytest.mark.parametrize("tls_server", ["san"], indirect=True)
async def test_san_mode_uses_the_first_dns_name(
    tls_server: EmbeddedServer, tls_client: Callable[..., Paho]
) -> None:
    client = tls_client("san", cid="s1")
    assert await connect(client) == 0
    assert user_of(tls_server, "s1") == "tls-alice"
    assert await rc_of(tls_client("alice", cid="s2")) == 4  # no SAN: names nobody in this mode


@pytest.mark.parametrize(
    ("cert", "field", "user"),
    [
        ({"subject": ((("commonName", "alice"),),)}, "cn", "alice"),
        ({"subject": ((("countryName", "FR"),), (("commonName", "alice"),))}, "cn", "alice"),
        ({"subject": ((("commonName", "a"),), (("commonName", "b"),))}, "cn", None),  # ambiguous
        ({"subject": ((("commonName", "a/b"),),)}, "cn", None),
        ({"subject": ()}, "cn", None),
        ({"subjectAltName": (("email", "x@y"), ("DNS", "alice"), ("DNS", "other"))}, "san", "alice"),
        ({"subjectAltName": (("DNS", "*.example.com"),)}, "san", None),
        ({}, "san", None),
    ],
)
def test_certificate_user(cert: dict[str, Any], field: CertUserField, user: str | None) -> None:
    assert certificate_user(cert, field) == user
