"""Information-system authentication on the client-facing ports (X-Road's ``isAuthentication``):
``none`` (plain HTTP or HTTPS), ``https`` (HTTPS only) and ``https-cert`` (HTTPS with a TLS client
certificate registered for the client subsystem).

The HTTPS port uses the server's self-signed internal certificate (``internal.pem`` in its state directory),
which the information system pins. Information-system certificates are made by the real ``openssl`` binary,
self-signed, as operators usually make them. Each test sets the mode it needs, so the order does not matter.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from multidict import CIMultiDict

from gateway.dev.demo import Federation, start_federation
from gateway.identifiers import SubsystemId
from gateway.messagelog.record import LogRecord
from gateway.server.runtime import SecurityServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CONSUMER = SubsystemId.parse("DEV/GOV/1001/consumer")
OTHER_CLIENT = SubsystemId.parse("DEV/GOV/1001/other")  # a second subsystem hosted on ss1
SERVICE_PATH = "/r1/DEV/GOV/1002/registry/persons/?limit=1"
OPENSSL_TIMEOUT = 30  # seconds for one openssl call


@dataclass(frozen=True, slots=True, kw_only=True)
class IsCert:
    """An information system's TLS key and certificate (PEM files)."""

    cert: Path
    key: Path


def openssl_cert(directory: Path, name: str, *, issuer: IsCert | None = None) -> IsCert:
    """A P-256 certificate: self-signed, or issued by ``issuer`` (openssl's default CA:TRUE self-signed cert)."""
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    base = ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-subj", f"/CN={name}"]
    if issuer is None:
        subprocess.run([*base, "-x509", "-days", "2", "-out", str(cert)], check=True, capture_output=True,
                       timeout=OPENSSL_TIMEOUT)
    else:
        csr = directory / f"{name}.csr"
        subprocess.run([*base, "-out", str(csr)], check=True, capture_output=True, timeout=OPENSSL_TIMEOUT)
        subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(issuer.cert), "-CAkey",
                        str(issuer.key), "-set_serial", "7", "-days", "2", "-out", str(cert)],
                       check=True, capture_output=True, timeout=OPENSSL_TIMEOUT)
    return IsCert(cert=cert, key=key)


@dataclass
class Env:
    fed: Federation
    registered: IsCert  # registered for CONSUMER
    other_clients: IsCert  # registered for OTHER_CLIENT only
    issued_by_registered: IsCert  # chains to the registered certificate, not registered itself
    unknown: IsCert  # registered nowhere
    spare: IsCert  # registered and removed by a test

    @property
    def ss1(self) -> SecurityServer:
        return self.fed.server("ss1")

    @property
    def ss2(self) -> SecurityServer:
        return self.fed.server("ss2")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    certs = tmp_path_factory.mktemp("is-certs")
    registered = openssl_cert(certs, "is-registered")
    e = Env(
        fed=await start_federation(tmp_path_factory.mktemp("isauth")),
        registered=registered,
        other_clients=openssl_cert(certs, "is-other"),
        issued_by_registered=openssl_cert(certs, "is-child", issuer=registered),
        unknown=openssl_cert(certs, "is-unknown"),
        spare=openssl_cert(certs, "is-spare"),
    )
    try:
        # registered while the server runs: the HTTPS port must learn the certificates on reload
        store = e.ss1.store
        await store.add_client(OTHER_CLIENT, is_auth="https-cert")
        await store.add_is_cert(CONSUMER, registered.cert.read_bytes())
        await store.add_is_cert(OTHER_CLIENT, e.other_clients.cert.read_bytes())
        await e.ss1.reload_serverconf()
        yield e
    finally:
        await e.fed.close()


async def set_mode(env: Env, mode: str) -> None:
    await env.ss1.store.update_client(CONSUMER, is_auth=mode)  # type: ignore[arg-type]
    await env.ss1.reload_serverconf()


def https_context(env: Env, cert: IsCert | None) -> ssl.SSLContext:
    """What the information system uses: it pins the server's internal certificate, presents ``cert``."""
    ctx = ssl.create_default_context(cafile=str(env.ss1.files.internal_cert))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    status: int
    headers: CIMultiDict[str]
    body: bytes


async def call(env: Env, *, https: bool, cert: IsCert | None = None, message_id: str | None = None) -> Reply:
    headers = {"X-Road-Client": str(CONSUMER), "Accept": "application/json"}
    if message_id is not None:
        headers["X-Road-Id"] = message_id
    base = env.ss1.client_https_url if https else env.ss1.client_url
    ssl_arg: ssl.SSLContext | bool = https_context(env, cert) if https else False
    async with aiohttp.ClientSession() as http, http.get(base + SERVICE_PATH, headers=headers, ssl=ssl_arg) as r:
        return Reply(status=r.status, headers=CIMultiDict(r.headers), body=await r.read())


async def records(ss: SecurityServer, message_id: str) -> list[LogRecord]:
    stored = await ss.messagelog.read(str(ss.server_id), start=0, limit=10_000)
    return [r for r in (s.decode() for s in stored) if r.message_id == message_id]


async def log_sizes(env: Env) -> tuple[int, int]:
    return (await env.ss1.messagelog.size(str(env.ss1.server_id)),
            await env.ss2.messagelog.size(str(env.ss2.server_id)))


async def check_accepted(env: Env, *, https: bool, cert: IsCert | None) -> None:
    message_id = f"isauth-{uuid.uuid4()}"
    reply = await call(env, https=https, cert=cert, message_id=message_id)
    assert reply.status == 200, reply.body
    assert reply.headers["X-Road-Id"] == message_id
    assert reply.headers["X-Road-Client"] == str(CONSUMER)
    assert json.loads(reply.body)["limit"] == 1
    for ss in (env.ss1, env.ss2):
        recs = await records(ss, message_id)
        assert [(r.kind, r.status, r.client) for r in recs] == [("request", None, CONSUMER),
                                                                 ("response", 200, CONSUMER)]
        assert recs[0].request_id == reply.headers["X-Road-Request-Id"]


async def check_refused(env: Env, *, https: bool, cert: IsCert | None, message: str) -> None:
    before = await log_sizes(env)
    reply = await call(env, https=https, cert=cert)
    assert reply.status == 500, reply.body
    assert reply.headers["X-Road-Error"] == "Server.ClientProxy.SslAuthenticationFailed"
    err = json.loads(reply.body)
    assert err["type"] == "Server.ClientProxy.SslAuthenticationFailed"
    assert err["message"] == message
    assert await log_sizes(env) == before  # nothing signed, logged or sent


# ------------------------------------------------------------------------------------------ none


@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
async def test_mode_none_accepts_plain_http_and_https(env: Env, https: bool) -> None:
    await set_mode(env, "none")
    await check_accepted(env, https=https, cert=None)


# ------------------------------------------------------------------------------------------ https


async def test_mode_https_refuses_plain_http(env: Env) -> None:
    await set_mode(env, "https")
    await check_refused(env, https=False, cert=None,
                        message=f"client SUBSYSTEM:{CONSUMER} must connect over HTTPS")


@pytest.mark.parametrize("with_cert", [False, True], ids=["no-client-cert", "registered-client-cert"])
async def test_mode_https_accepts_https(env: Env, with_cert: bool) -> None:
    await set_mode(env, "https")
    await check_accepted(env, https=True, cert=env.registered if with_cert else None)


# ------------------------------------------------------------------------------------------ https-cert


async def test_mode_https_cert_accepts_the_registered_certificate(env: Env) -> None:
    await set_mode(env, "https-cert")
    await check_accepted(env, https=True, cert=env.registered)


@pytest.mark.parametrize(
    ("case", "https", "message"),
    [
        ("plain-http", False, "client SUBSYSTEM:{c} must connect over HTTPS"),
        ("no-cert", True, "client SUBSYSTEM:{c} must present its registered TLS certificate"),
        ("other-clients-cert", True, "the TLS certificate presented is not registered for client SUBSYSTEM:{c}"),
        ("issued-by-registered", True,
         "the TLS certificate presented is not registered for client SUBSYSTEM:{c}"),
    ],
)
async def test_mode_https_cert_refuses(env: Env, case: str, https: bool, message: str) -> None:
    await set_mode(env, "https-cert")
    cert = {"plain-http": None, "no-cert": None, "other-clients-cert": env.other_clients,
            "issued-by-registered": env.issued_by_registered}[case]
    await check_refused(env, https=https, cert=cert, message=message.format(c=CONSUMER))


async def test_mode_https_cert_refuses_an_unknown_certificate_in_the_handshake(env: Env) -> None:
    """A certificate registered for no client does not chain to any trusted one: the TLS handshake fails,
    before any request byte is read."""
    await set_mode(env, "https-cert")
    before = await log_sizes(env)
    with pytest.raises(aiohttp.ClientError):
        await call(env, https=True, cert=env.unknown)
    assert await log_sizes(env) == before


async def test_a_removed_certificate_is_refused_after_reload(env: Env) -> None:
    await set_mode(env, "https-cert")
    fingerprint = await env.ss1.store.add_is_cert(CONSUMER, env.spare.cert.read_bytes())
    await env.ss1.reload_serverconf()
    try:
        await check_accepted(env, https=True, cert=env.spare)
    finally:
        await env.ss1.store.remove_is_cert(CONSUMER, fingerprint)
        await env.ss1.reload_serverconf()
    await check_refused(env, https=True, cert=env.spare,
                        message=f"the TLS certificate presented is not registered for client SUBSYSTEM:{CONSUMER}")
    await check_accepted(env, https=True, cert=env.registered)  # the others are unaffected
