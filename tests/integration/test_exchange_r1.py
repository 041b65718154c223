"""The client-facing protocol (X-Road REST r1) end to end: an information system calls ss1 over plain HTTP,
ss1 signs and sends over mutual TLS to ss2, ss2 calls the service and everything comes back signed.

Real sockets, TLS, certificates and databases (the servers' databases on SQLite and on PostgreSQL). A tiny
aiohttp echo service on ss2 records exactly what a service receives. Every test checks the status, the
X-Road headers or error type, and both message logs.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.dev.demo import Federation, MemberSpec, ServerSpec, start_federation
from gateway.identifiers import MemberId, ServiceId, SubsystemId
from gateway.messagelog.record import LogRecord
from gateway.server.runtime import SecurityServer
from gateway.serverconf.access import AccessRule
from gateway.trust import certprofile

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PG_DSN = os.environ.get("GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MAX_BODY = 64 * 2**10  # bytes; the federation's max_body_bytes, small so that the limit is cheap to hit

A = MemberId(instance="DEV", member_class="GOV", member_code="1001")
B = MemberId(instance="DEV", member_class="GOV", member_code="1002")
CONSUMER = A.subsystem("consumer")
REGISTRY = B.subsystem("registry")
ECHO = REGISTRY.service("echo")
ECHO_PATH = f"/r1/{ECHO}"
GZIPPED = gzip.compress(b'{"compressed": true}', mtime=0)
UUID4_ID = re.compile(r"DEV-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


# ------------------------------------------------------------------------------------------ echo service


@dataclass(frozen=True, slots=True, kw_only=True)
class Seen:
    """One request as the service received it."""

    method: str
    target: str  # raw path and query
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class Echo:
    """A service that records what it receives and answers with it, so tests see both directions."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)

    def by_id(self, message_id: str) -> list[Seen]:
        return [s for s in self.seen if s.header("X-Road-Id") == [message_id]]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen = Seen(
            method=request.method, target=request.raw_path, body=body,
            headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.raw_headers],
        )
        self.seen.append(seen)
        if request.path.endswith("/redirect"):
            return web.Response(status=302, headers={"Location": f"{self.url}/followed"})
        if request.path.endswith("/gzip"):
            return web.Response(body=GZIPPED, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        # large bodies are summarised, so that the answer stays within the servers' body limit
        text = body.decode("utf-8", "replace") if len(body) <= 1024 else f"<{len(body)} bytes>"
        payload = {"method": seen.method, "target": seen.target, "body": text}
        return web.Response(
            body=json.dumps(payload).encode(), content_type="application/json",
            # a service may not set the security server's own headers: both are dropped on the way back
            headers={"X-Echo-Custom": "from the service", "X-Road-Request-Id": "forged by the service",
                     "X-Road-Error": "Forged.ByTheService"},
        )


async def start_echo() -> tuple[Echo, web.AppRunner]:
    echo = Echo()
    app = web.Application(handler_args={"auto_decompress": False})  # record bodies exactly as received
    app.router.add_route("*", "/{tail:.*}", echo.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    echo.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    return echo, runner


# ------------------------------------------------------------------------------------------ the federation


@dataclass
class Env:
    fed: Federation
    echo: Echo
    http: aiohttp.ClientSession
    backend: str

    @property
    def ss1(self) -> SecurityServer:
        return self.fed.server("ss1")

    @property
    def ss2(self) -> SecurityServer:
        return self.fed.server("ss2")


async def _pg_database() -> str:
    base = PG_DSN.rpartition("/")[0]
    name = f"gw_test_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"postgresql+asyncpg://{base.split('://', 1)[1]}/{name}"


async def _drop_pg_database(url: str) -> None:
    name = url.rpartition("/")[2]
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    """The demo federation, servers' databases on ``request.param``, plus the echo service on ss2."""
    backend: str = request.param
    dbs: dict[str, str] = {}
    if backend == "postgresql":
        dbs = {"ss1": await _pg_database(), "ss2": await _pg_database()}
    echo, echo_runner = await start_echo()
    fed = await start_federation(
        tmp_path_factory.mktemp(f"r1-{backend}"), database_urls=dbs, server_overrides={"max_body_bytes": MAX_BODY},
    )
    try:
        ss2 = fed.server("ss2")
        await ss2.store.add_service(ECHO, url=f"{echo.url}/base", timeout_seconds=10)
        await ss2.store.grant(AccessRule(subject=CONSUMER, service=ECHO))
        await ss2.reload_serverconf()
        async with aiohttp.ClientSession(auto_decompress=False) as http:
            yield Env(fed=fed, echo=echo, http=http, backend=backend)
    finally:
        await fed.close()
        await echo_runner.cleanup()
        for url in dbs.values():
            await _drop_pg_database(url)


# ------------------------------------------------------------------------------------------ helpers


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    names: tuple[str, ...]  # header names exactly as sent
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    env: Env, method: str, target: str, headers: list[tuple[str, str]] | Mapping[str, str] | None = None,
    data: Any = None, *, server: SecurityServer | None = None,
) -> Reply:
    """Send exactly ``target`` (already percent-encoded) to the client URL of ``server`` (ss1)."""
    base = (server or env.ss1).client_url
    async with env.http.request(
        method, URL(base + target, encoded=True), headers=CIMultiDict(headers or {}), data=data,
        allow_redirects=False, skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
    ) as resp:
        names = tuple(n.decode("latin-1") for n, _ in resp.raw_headers)
        return Reply(status=resp.status, headers=resp.headers, names=names, body=await resp.read())


async def log_records(ss: SecurityServer, message_id: str | None = None) -> list[LogRecord]:
    """Every record of ``ss``'s message log (of ``message_id`` only, if given), in order."""
    origin = str(ss.server_id)
    out: list[LogRecord] = []
    start = 0
    while True:
        batch = await ss.messagelog.read(origin, start=start, limit=1000)
        out.extend(r.decode() for r in batch)
        if len(batch) < 1000:
            break
        start = batch[-1].seq + 1
    return out if message_id is None else [r for r in out if r.message_id == message_id]


async def log_sizes(env: Env) -> tuple[int, int]:
    return (
        await env.ss1.messagelog.size(str(env.ss1.server_id)),
        await env.ss2.messagelog.size(str(env.ss2.server_id)),
    )


def verify_logged_signature(record: LogRecord, signer: MemberId) -> None:
    """Check a logged signature independently: the certificate names ``signer`` and the ECDSA signature
    verifies over the logged signature base, whose last line is the logged ``Signature-Input``."""
    cert = x509.load_der_x509_certificate(record.signing_cert)
    assert certprofile.sign_identity_of(cert) == signer
    label, _, params = record.signature_input.partition("=")
    assert label == "xroad"
    assert record.signature_base.endswith(b'\n"@signature-params": ' + params.encode())
    label, _, value = record.signature.partition("=")
    assert label == "xroad" and value.startswith(":") and value.endswith(":")
    raw = base64.b64decode(value[1:-1])
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(der, record.signature_base, ec.ECDSA(hashes.SHA256()))


def sign_cert_der(ss: SecurityServer) -> bytes:
    assert ss.context is not None
    return ss.context.sign_cert_der


async def check_exchange_logged(
    env: Env, reply: Reply, *, client: SubsystemId = CONSUMER, service: ServiceId = ECHO,
    request_body: bytes = b"", user_id: str | None = None, issue: str | None = None,
) -> None:
    """Both logs hold exactly one request and one response of this exchange, consistent with the reply."""
    message_id = reply.headers["X-Road-Id"]
    request_id = reply.headers["X-Road-Request-Id"]
    provider, consumer = service.subsystem.member, client.member
    for ss, side in ((env.ss1, "client"), (env.ss2, "server")):
        records = await log_records(ss, message_id)
        assert [r.kind for r in records] == ["request", "response"], (ss.server_id, records)
        request, response = records
        for r in records:
            assert (r.side, r.origin, r.request_id, r.client, r.service) == (
                side, str(ss.server_id), request_id, client, service,
            )
            assert (r.user_id, r.issue) == (user_id, issue)
        assert request.status is None and response.status == reply.status
        assert request.body == request_body
        assert response.body == reply.body
        # the request is signed by the consumer's member, the response by the provider's
        assert request.signing_cert == sign_cert_der(env.ss1)
        assert response.signing_cert == sign_cert_der(env.ss2)
        verify_logged_signature(request, consumer)
        verify_logged_signature(response, provider)
        assert f'"x-road-request-hash": {reply.headers["X-Road-Request-Hash"]}'.encode() in response.signature_base
        assert f'"x-road-id": {message_id}'.encode() in request.signature_base


def check_xroad_headers(reply: Reply, *, client: SubsystemId = CONSUMER, service: ServiceId = ECHO) -> None:
    # spelled as in PR-REST, for systems that compare header names case-sensitively
    for name in ("X-Road-Id", "X-Road-Client", "X-Road-Service", "X-Road-Request-Id", "X-Road-Request-Hash"):
        assert name in reply.names, reply.names
    assert reply.headers.getall("X-Road-Client") == [str(client)]
    assert reply.headers.getall("X-Road-Service") == [str(service)]
    assert len(reply.headers.getall("X-Road-Id")) == 1
    assert str(uuid.UUID(reply.headers["X-Road-Request-Id"])) == reply.headers["X-Road-Request-Id"]
    assert len(base64.b64decode(reply.headers["X-Road-Request-Hash"], validate=True)) == 64  # SHA-512
    assert "X-Road-Error" not in reply.headers
    for name in ("Signature", "Signature-Input", "Content-Digest", "X-Road-Signing-Cert", "X-Road-Signing-OCSP"):
        assert name not in reply.headers


def client_headers(**extra: str) -> list[tuple[str, str]]:
    return [("X-Road-Client", str(CONSUMER)), *extra.items()]


def fresh_id() -> str:
    return f"test-{uuid.uuid4()}"


# ------------------------------------------------------------------------------------------ happy paths


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
async def test_every_method_round_trip(env: Env, method: str) -> None:
    message_id = fresh_id()
    body = f"{method} body \u00e4\u00f6 {env.backend}".encode() if method in ("POST", "PUT", "PATCH") else b""
    headers = client_headers(**{"X-Road-Id": message_id, "Content-Type": "text/plain; charset=utf-8"})

    reply = await call(env, method, f"{ECHO_PATH}/v1/items/7?x=1", headers, data=body or None)

    assert reply.status == 200, reply.body
    check_xroad_headers(reply)
    assert reply.headers["X-Road-Id"] == message_id
    (seen,) = env.echo.by_id(message_id)
    assert (seen.method, seen.target, seen.body) == (method, "/base/v1/items/7?x=1", body)
    if method == "HEAD":
        assert reply.body == b""
    else:
        assert json.loads(reply.body) == {"method": method, "target": "/base/v1/items/7?x=1",
                                          "body": body.decode()}
    await check_exchange_logged(env, reply, request_body=body)


async def test_message_id_is_generated_when_absent(env: Env) -> None:
    reply = await call(env, "GET", f"{ECHO_PATH}/generated", client_headers())

    assert reply.status == 200
    check_xroad_headers(reply)
    message_id = reply.headers["X-Road-Id"]
    assert UUID4_ID.fullmatch(message_id), message_id
    (seen,) = env.echo.by_id(message_id)  # the service gets the generated id too
    assert seen.header("X-Road-Request-Id") == [reply.headers["X-Road-Request-Id"]]
    await check_exchange_logged(env, reply)


async def test_message_id_is_echoed_and_request_ids_differ_on_a_retry(env: Env) -> None:
    message_id = fresh_id()
    first = await call(env, "GET", f"{ECHO_PATH}/retry", client_headers(**{"X-Road-Id": message_id}))
    second = await call(env, "GET", f"{ECHO_PATH}/retry", client_headers(**{"X-Road-Id": message_id}))

    assert (first.status, second.status) == (200, 200)
    assert first.headers["X-Road-Id"] == second.headers["X-Road-Id"] == message_id
    # a client may reuse X-Road-Id on a retry; the signed request id (the replay key) is fresh each time
    assert first.headers["X-Road-Request-Id"] != second.headers["X-Road-Request-Id"]
    for ss in (env.ss1, env.ss2):
        records = await log_records(ss, message_id)
        assert [(r.kind, r.request_id) for r in records] == [
            ("request", first.headers["X-Road-Request-Id"]), ("response", first.headers["X-Road-Request-Id"]),
            ("request", second.headers["X-Road-Request-Id"]), ("response", second.headers["X-Road-Request-Id"]),
        ]
    assert len(env.echo.by_id(message_id)) == 2


async def test_last_x_road_client_wins(env: Env) -> None:
    message_id = fresh_id()
    headers = [("X-Road-Client", str(REGISTRY)), ("X-Road-Id", message_id), ("X-Road-Client", str(CONSUMER))]

    reply = await call(env, "GET", f"{ECHO_PATH}/last-wins", headers)

    assert reply.status == 200, reply.body
    check_xroad_headers(reply, client=CONSUMER)
    (seen,) = env.echo.by_id(message_id)
    assert seen.header("X-Road-Client") == [str(CONSUMER)]
    await check_exchange_logged(env, reply)


async def test_last_x_road_client_wins_also_when_it_is_not_ours(env: Env) -> None:
    before = await log_sizes(env)
    headers = [("X-Road-Client", str(CONSUMER)), ("X-Road-Client", str(REGISTRY))]

    reply = await call(env, "GET", f"{ECHO_PATH}/last-wins", headers)

    assert reply.status == 500
    assert reply.headers["X-Road-Error"] == "Server.ClientProxy.UnknownMember"
    assert reply.json()["message"] == f"client SUBSYSTEM:{REGISTRY} is not a client of this security server"
    assert await log_sizes(env) == before


async def test_user_id_and_issue_are_signed_logged_and_passed_on(env: Env) -> None:
    message_id = fresh_id()
    headers = client_headers(**{"X-Road-Id": message_id, "X-Road-UserId": "EE12345678901",
                                "X-Road-Issue": "ticket 42 / review"})

    reply = await call(env, "POST", f"{ECHO_PATH}/v1/audit", headers, data=b'{"q": 1}')

    assert reply.status == 200
    check_xroad_headers(reply)
    (seen,) = env.echo.by_id(message_id)
    assert seen.header("X-Road-UserId") == ["EE12345678901"]
    assert seen.header("X-Road-Issue") == ["ticket 42 / review"]
    await check_exchange_logged(env, reply, request_body=b'{"q": 1}', user_id="EE12345678901",
                                issue="ticket 42 / review")
    for ss in (env.ss1, env.ss2):
        request = (await log_records(ss, message_id))[0]
        assert b'"x-road-userid": EE12345678901\n' in request.signature_base
        assert b'"x-road-issue": ticket 42 / review\n' in request.signature_base


async def test_pinning_the_provider_server_works(env: Env) -> None:
    message_id = fresh_id()
    headers = client_headers(**{"X-Road-Id": message_id, "X-Road-Security-Server": "DEV/GOV/1002/ss2"})

    reply = await call(env, "GET", f"{ECHO_PATH}/pinned", headers)

    assert reply.status == 200
    check_xroad_headers(reply)
    assert len(env.echo.by_id(message_id)) == 1
    await check_exchange_logged(env, reply)


async def test_end_to_end_headers_pass_and_hop_by_hop_ones_do_not(env: Env) -> None:
    message_id = fresh_id()
    headers = [
        ("X-Road-Client", str(CONSUMER)), ("X-Road-Id", message_id),
        # end to end: reach the service
        ("Content-Type", "application/json"), ("Accept", "application/json"),
        ("Authorization", "Bearer abc.def"), ("X-Custom", "one"), ("X-Custom", "two"),
        # hop by hop: stop at ss1
        ("Connection", "keep-alive, X-Hop-Private"), ("X-Hop-Private", "secret"), ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"), ("Trailer", "X-Checksum"), ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("User-Agent", "information-system/1.0"),
        # only security servers set these: dropped from the client
        ("X-Road-Request-Id", "forged"), ("X-Road-Request-Hash", "forged"), ("X-Road-Service", "forged"),
        ("Signature", "xroad=:AAAA:"), ("X-Road-Signing-Cert", "forged"),
    ]

    reply = await call(env, "POST", f"{ECHO_PATH}/v1/headers", headers, data=b"{}")

    assert reply.status == 200, reply.body
    check_xroad_headers(reply)
    (seen,) = env.echo.by_id(message_id)
    assert seen.header("Content-Type") == ["application/json"]
    assert seen.header("Accept") == ["application/json"]
    assert seen.header("Authorization") == ["Bearer abc.def"]
    assert seen.header("X-Custom") == ["one", "two"]
    assert seen.header("X-Road-Client") == [str(CONSUMER)]
    assert seen.header("X-Road-Service") == [str(ECHO)]
    assert seen.header("X-Road-Request-Id") == [reply.headers["X-Road-Request-Id"]]
    names = {n.lower() for n, _ in seen.headers}
    for name in ("x-hop-private", "keep-alive", "te", "trailer", "proxy-authorization", "user-agent",
                 "x-road-request-hash", "signature", "signature-input", "content-digest", "x-road-signing-cert",
                 "x-road-signing-ocsp"):
        assert name not in names, name
    assert seen.header("Connection") in ([], ["keep-alive"])  # at most the service hop's own
    # the service's headers come back; it may not set the security server's own
    assert reply.headers.getall("X-Echo-Custom") == ["from the service"]
    assert reply.headers.getall("X-Road-Request-Id") != ["forged by the service"]
    await check_exchange_logged(env, reply, request_body=b"{}")


async def test_redirect_is_passed_back_not_followed(env: Env) -> None:
    message_id = fresh_id()

    reply = await call(env, "GET", f"{ECHO_PATH}/v1/redirect", client_headers(**{"X-Road-Id": message_id}))

    assert reply.status == 302
    check_xroad_headers(reply)
    assert reply.headers["Location"] == f"{env.echo.url}/followed"
    assert [s.target for s in env.echo.by_id(message_id)] == ["/base/v1/redirect"]
    assert not [s for s in env.echo.seen if s.target == "/followed"]
    await check_exchange_logged(env, reply)


@pytest.mark.parametrize(
    ("rest", "forwarded"),
    [
        ("", "/base"),
        ("/", "/base/"),
        ("?a=1&b=2&a=3", "/base?a=1&b=2&a=3"),
        ("/v1/q?s=%20x%2Fy&empty=&flag", "/base/v1/q?s=%20x%2Fy&empty=&flag"),
        ("/v1/q?x=%C3%A4&y=a+b&z=%25", "/base/v1/q?x=%C3%A4&y=a+b&z=%25"),
        ("/v1/a%20b/c;p=1?x=[1]", "/base/v1/a%20b/c;p=1?x=[1]"),
        # the service gets the path the access rules saw (docs/protocol.md 1.2): escapes of unreserved
        # characters decoded, dot segments resolved (test_exchange_trust.py shows why)
        ("/v1/%7Euser/./x", "/base/v1/~user/x"),
    ],
)
async def test_path_and_query_reach_the_service_unchanged(env: Env, rest: str, forwarded: str) -> None:
    message_id = fresh_id()

    reply = await call(env, "GET", ECHO_PATH + rest, client_headers(**{"X-Road-Id": message_id}))

    assert reply.status == 200, reply.body
    check_xroad_headers(reply)
    (seen,) = env.echo.by_id(message_id)
    assert seen.target == forwarded
    await check_exchange_logged(env, reply)
    for ss in (env.ss1, env.ss2):
        assert [r.path for r in await log_records(ss, message_id)] == [ECHO_PATH + rest] * 2


async def test_compressed_bodies_pass_byte_for_byte_both_ways(env: Env) -> None:
    """Content-Encoding is end to end: neither server decodes a body, so the service gets the gzip bytes the
    client sent, and the client the gzip bytes the service answered."""
    message_id = fresh_id()
    body = gzip.compress(b'{"query": "compressed request"}', mtime=0)
    headers = client_headers(**{"X-Road-Id": message_id, "Content-Encoding": "gzip",
                                "Content-Type": "application/json", "Accept-Encoding": "gzip"})

    reply = await call(env, "POST", f"{ECHO_PATH}/v1/gzip", headers, data=body)

    assert reply.status == 200, reply.body
    check_xroad_headers(reply)
    (seen,) = env.echo.by_id(message_id)
    assert seen.body == body
    assert seen.header("Content-Encoding") == ["gzip"]
    assert seen.header("Accept-Encoding") == ["gzip"]
    assert reply.headers["Content-Encoding"] == "gzip"
    assert reply.body == GZIPPED
    await check_exchange_logged(env, reply, request_body=body)


async def test_body_of_exactly_the_limit_passes(env: Env) -> None:
    message_id = fresh_id()
    body = bytes(range(256)) * (MAX_BODY // 256)

    reply = await call(env, "PUT", f"{ECHO_PATH}/big", client_headers(**{"X-Road-Id": message_id}), data=body)

    assert reply.status == 200
    (seen,) = env.echo.by_id(message_id)
    assert seen.body == body
    assert json.loads(reply.body)["body"] == f"<{MAX_BODY} bytes>"
    await check_exchange_logged(env, reply, request_body=body)


async def test_unknown_service_on_the_provider_is_refused_there_and_logged_on_both_sides(env: Env) -> None:
    message_id = fresh_id()
    seen_before = len(env.echo.seen)
    target = f"/r1/{REGISTRY.service('nosuch')}/v1/x"

    reply = await call(env, "GET", target, client_headers(**{"X-Road-Id": message_id}))

    assert reply.status == 500
    assert reply.headers["X-Road-Error"] == "Server.ServerProxy.UnknownService"
    assert "X-Road-Error" in reply.names
    assert reply.headers["Content-Type"] == "application/json;charset=utf-8"
    err = reply.json()
    assert set(err) == {"type", "message", "detail"}
    assert err["type"] == "Server.ServerProxy.UnknownService"
    assert err["message"] == f"service {REGISTRY.service('nosuch')} is not provided by this security server"
    assert reply.headers.getall("X-Road-Service") == [str(REGISTRY.service("nosuch"))]
    assert len(env.echo.seen) == seen_before
    # the refusal, its X-Road-Error included, is signed by the provider and logged on both sides
    await check_exchange_logged(env, reply, service=REGISTRY.service("nosuch"))
    for ss in (env.ss1, env.ss2):
        response = (await log_records(ss, message_id))[1]
        assert b'\n"x-road-error": Server.ServerProxy.UnknownService\n' in response.signature_base


# ------------------------------------------------------------------------------------------ client errors

HOSTILE_CLIENTS = [
    ("", "client identifier '' must be INSTANCE/CLASS/MEMBER or INSTANCE/CLASS/MEMBER/SUBSYSTEM"),
    ("DEV/GOV", "client identifier 'DEV/GOV' must be INSTANCE/CLASS/MEMBER or INSTANCE/CLASS/MEMBER/SUBSYSTEM"),
    ("DEV/GOV/1001/consumer/extra", "must be INSTANCE/CLASS/MEMBER or INSTANCE/CLASS/MEMBER/SUBSYSTEM"),
    ("DEV/GOV/1001/..", "subsystem_code may not be '..'"),
    ("DEV/GOV/%2e%2e/consumer", "member_code may not be '..'"),
    ("DEV/GOV/10%2F01/consumer", "member_code '10/01' contains a forbidden character '/'"),
    ("DEV/GOV/10%252F01/consumer", "member_code '10%2F01' contains a forbidden character '%'"),
    ("DEV/GOV/1001%/consumer", "member_code '1001%' contains a forbidden character '%'"),
    ("DEV/GOV/1001;x/consumer", "member_code '1001;x' contains a forbidden character ';'"),
    ("DEV/GOV/1001\\x/consumer", r"member_code '1001\\x' contains a forbidden character '\\'"),
    ("DEV//1001/consumer", "member_class is empty"),
    ("DEV/GOV/1001/%00", r"subsystem_code '\x00' contains a forbidden control character U+0000"),
    ("DEV/GOV/" + "x" * 300, "member_code is 300 characters long; at most 255 are allowed"),
    ("../../etc/passwd", "instance may not be '..'"),
    ("<script>/GOV/1001", "instance '<script>' contains a forbidden character '<'"),
]

ERROR_CASES: list[tuple[str, str, list[tuple[str, str]], int, str, str]] = [
    # (id, target, headers, status, type, message fragment)
    ("missing-client", f"{ECHO_PATH}/x", [], 400, "Client.BadRequest", "X-Road-Client header is missing"),
    *[
        (f"client-{i}", f"{ECHO_PATH}/x", [("X-Road-Client", value)], 400, "Client.InvalidClientIdentifier",
         message)
        for i, (value, message) in enumerate(HOSTILE_CLIENTS)
    ],
    ("short-path", f"/r1/{REGISTRY}", client_headers(), 400, "Client.BadRequest",
     "does not match /r1/{INSTANCE}/{CLASS}/{MEMBER}/{SUBSYSTEM}/{SERVICE}[/path]"),
    ("encoded-slash-in-service", f"/r1/{REGISTRY}/BAR%2FSERVICE", client_headers(), 400, "Client.BadRequest",
     "invalid service identifier in the request path"),
    ("double-encoded-service", "/r1/DEV/GOV/1002/reg%252Fistry/echo", client_headers(), 400,
     "Client.BadRequest", "contains a forbidden character '%'"),
    ("dot-dot-service", "/r1/DEV/GOV/1002/%2E%2E/echo", client_headers(), 400, "Client.BadRequest",
     "may not be '..'"),
    ("bad-escape", f"{ECHO_PATH}/a%zz", client_headers(), 400, "Client.BadRequest",
     "request path contains a malformed percent-escape"),
    ("r2", f"/r2/{ECHO}/x", client_headers(), 400, "Client.BadRequest",
     "unsupported protocol version 'r2'; this security server supports r1"),
    ("r0", f"/r0/{ECHO}", client_headers(), 400, "Client.BadRequest", "unsupported protocol version 'r0'"),
    ("not-rest", "/api/v1/persons", client_headers(), 400, "Client.BadRequest",
     "GET /api/v1/persons is not an X-Road REST request"),
    ("upper-case-r1", f"/R1/{ECHO}", client_headers(), 400, "Client.BadRequest", "is not an X-Road REST request"),
    ("root", "/", client_headers(), 400, "Client.BadRequest", "is not an X-Road REST request"),
    ("client-not-ours", f"{ECHO_PATH}/x", [("X-Road-Client", str(REGISTRY))], 500,
     "Server.ClientProxy.UnknownMember", f"client SUBSYSTEM:{REGISTRY} is not a client of this security server"),
    ("member-client-not-ours", f"{ECHO_PATH}/x", [("X-Road-Client", str(A))], 500,
     "Server.ClientProxy.UnknownMember", f"client MEMBER:{A} is not a client of this security server"),
    ("other-instance-client", f"{ECHO_PATH}/x", [("X-Road-Client", "OTHER/GOV/1001/consumer")], 500,
     "Server.ClientProxy.UnknownMember", "is not a client of this security server"),
    ("unknown-member", "/r1/DEV/GOV/9999/registry/echo", client_headers(), 500,
     "Server.ClientProxy.UnknownMember",
     "member of service DEV/GOV/9999/registry/echo is not registered in the global configuration"),
    ("unknown-subsystem", "/r1/DEV/GOV/1002/nosuch/echo", client_headers(), 500,
     "Server.ClientProxy.UnknownMember",
     "subsystem of service DEV/GOV/1002/nosuch/echo is not registered in the global configuration"),
    ("unknown-instance", "/r1/OTHER/GOV/1002/registry/echo", client_headers(), 500,
     "Server.ClientProxy.UnknownMember", "is not registered in the global configuration"),
    ("pinned-elsewhere", f"{ECHO_PATH}/x", client_headers(**{"X-Road-Security-Server": "DEV/GOV/1001/ss1"}), 500,
     "Server.ClientProxy.InvalidSecurityServer",
     f"security server DEV/GOV/1001/ss1 does not host SUBSYSTEM:{REGISTRY}"),
    ("pinned-unknown", f"{ECHO_PATH}/x", client_headers(**{"X-Road-Security-Server": "DEV/GOV/1002/ss9"}), 500,
     "Server.ClientProxy.InvalidSecurityServer", "security server DEV/GOV/1002/ss9 does not host"),
    ("pinned-malformed", f"{ECHO_PATH}/x", client_headers(**{"X-Road-Security-Server": "DEV/GOV"}), 400,
     "Client.BadRequest", "X-Road-Security-Server header is invalid"),
    ("long-message-id", f"{ECHO_PATH}/x", client_headers(**{"X-Road-Id": "i" * 256}), 400, "Client.BadRequest",
     "X-Road-Id header is 256 characters long; at most 255 are allowed"),
]


def _error_id(case: tuple[str, str, list[tuple[str, str]], int, str, str]) -> str:
    return case[0]


async def check_refused(env: Env, before: tuple[int, int], seen_before: int, reply: Reply) -> None:
    """Nothing was logged on either side, and nothing reached the service."""
    assert await log_sizes(env) == before
    assert len(env.echo.seen) == seen_before


@pytest.mark.parametrize("case", ERROR_CASES, ids=_error_id)
async def test_client_errors_as_json(
    env: Env, case: tuple[str, str, list[tuple[str, str]], int, str, str],
) -> None:
    _id, target, headers, status, xroad_type, message = case
    before, seen_before = await log_sizes(env), len(env.echo.seen)

    reply = await call(env, "GET", target, [*headers, ("Accept", "application/json")])

    assert reply.status == status, reply.body
    assert reply.headers["X-Road-Error"] == xroad_type
    assert "X-Road-Error" in reply.names
    assert reply.headers["Content-Type"] == "application/json;charset=utf-8"
    err = reply.json()
    assert set(err) == {"type", "message", "detail"}
    assert err["type"] == xroad_type
    assert message in err["message"]
    uuid.UUID(err["detail"])
    await check_refused(env, before, seen_before, reply)


@pytest.mark.parametrize("case", [c for c in ERROR_CASES if c[0] in (
    "missing-client", "client-5", "r2", "not-rest", "client-not-ours", "unknown-member", "pinned-elsewhere",
)], ids=_error_id)
async def test_client_errors_as_xml_when_only_xml_is_accepted(
    env: Env, case: tuple[str, str, list[tuple[str, str]], int, str, str],
) -> None:
    _id, target, headers, status, xroad_type, message = case
    before, seen_before = await log_sizes(env), len(env.echo.seen)

    reply = await call(env, "GET", target, [*headers, ("Accept", "text/xml")])

    assert reply.status == status
    assert reply.headers["X-Road-Error"] == xroad_type
    assert reply.headers["Content-Type"] == "text/xml;charset=utf-8"
    text = reply.body.decode()
    match = re.fullmatch(
        r'<\?xml version="1.0" encoding="UTF-8"\?><error><type>(.*)</type><message>(.*)</message>'
        r"<detail>([0-9a-f-]{36})</detail></error>", text, re.S,
    )
    assert match, text
    assert match[1] == xroad_type
    assert message.replace("<", "&lt;").replace(">", "&gt;") in match[2]
    await check_refused(env, before, seen_before, reply)


async def test_unsupported_method_is_refused(env: Env) -> None:
    before, seen_before = await log_sizes(env), len(env.echo.seen)

    reply = await call(env, "PROPFIND", f"{ECHO_PATH}/x", client_headers())

    assert reply.status == 400
    assert reply.headers["X-Road-Error"] == "Client.InvalidHttpMethod"
    assert reply.json()["message"].startswith("HTTP method 'PROPFIND' is not supported")
    await check_refused(env, before, seen_before, reply)


async def _chunks(total: int, size: int = 8192) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b"x" * n


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_oversized_body_is_refused_before_anything_is_logged_or_forwarded(env: Env, framing: str) -> None:
    before, seen_before = await log_sizes(env), len(env.echo.seen)
    data: Any = b"x" * (MAX_BODY + 1) if framing == "content-length" else _chunks(MAX_BODY + 1)

    reply = await call(env, "POST", f"{ECHO_PATH}/upload", client_headers(), data=data)

    assert reply.status == 413
    assert reply.headers["X-Road-Error"] == "Client.BadRequest"
    expected = (
        f"request body of {MAX_BODY + 1} bytes is larger than the maximum of {MAX_BODY} bytes"
        if framing == "content-length" else f"request body is larger than the maximum of {MAX_BODY} bytes"
    )
    assert reply.json()["message"] == expected
    await check_refused(env, before, seen_before, reply)


# ------------------------------------------------------------------------------------------ PR-REST example


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def spec_env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    """A federation with the identifiers of the PR-REST specification's examples."""
    m1 = MemberId(instance="INSTANCE", member_class="CLASS1", member_code="MEMBER1")
    m2 = MemberId(instance="INSTANCE", member_class="CLASS2", member_code="MEMBER2")
    layout = (
        [MemberSpec(id=m1, name="Member One", subsystems=("SUBSYSTEM1",)),
         MemberSpec(id=m2, name="Member Two", subsystems=("SUBSYSTEM2",))],
        [ServerSpec(id=m1.server("ss1"), clients=(m1.subsystem("SUBSYSTEM1"),)),
         ServerSpec(id=m2.server("ss2"), clients=(m2.subsystem("SUBSYSTEM2"),),
                    services={m2.subsystem("SUBSYSTEM2").service("BARSERVICE"): "bar"})],
    )
    echo, echo_runner = await start_echo()
    fed = await start_federation(
        tmp_path_factory.mktemp("r1-spec"), instance="INSTANCE", layout=layout, with_adapters=False,
        adapter_urls={"bar": echo.url},
    )
    try:
        async with aiohttp.ClientSession() as http:
            yield Env(fed=fed, echo=echo, http=http, backend="sqlite")
    finally:
        await fed.close()
        await echo_runner.cleanup()


async def test_pr_rest_example_request_shape(spec_env: Env) -> None:
    client = SubsystemId.parse("INSTANCE/CLASS1/MEMBER1/SUBSYSTEM1")
    service = ServiceId.parse("INSTANCE/CLASS2/MEMBER2/SUBSYSTEM2/BARSERVICE")
    headers = [("X-Road-Client", str(client)), ("Accept", "application/json")]

    reply = await call(spec_env, "GET", "/r1/INSTANCE/CLASS2/MEMBER2/SUBSYSTEM2/BARSERVICE/v1/bar/zyggy?quu=1",
                       headers)

    assert reply.status == 200, reply.body
    check_xroad_headers(reply, client=client, service=service)
    assert re.fullmatch(r"INSTANCE-[0-9a-f-]{36}", reply.headers["X-Road-Id"])
    (seen,) = spec_env.echo.by_id(reply.headers["X-Road-Id"])
    assert (seen.method, seen.target) == ("GET", "/v1/bar/zyggy?quu=1")
    assert seen.header("X-Road-Client") == [str(client)]
    assert seen.header("X-Road-Service") == [str(service)]
    await check_exchange_logged(spec_env, reply, client=client, service=service)


async def test_concurrent_requests_each_logged_once(env: Env) -> None:
    ids = [fresh_id() for _ in range(20)]

    replies = await asyncio.gather(*[
        call(env, "POST", f"{ECHO_PATH}/v1/many/{i}", client_headers(**{"X-Road-Id": mid}), data=mid.encode())
        for i, mid in enumerate(ids)
    ])

    assert [r.status for r in replies] == [200] * 20
    for i, (mid, reply) in enumerate(zip(ids, replies, strict=True)):
        assert reply.headers["X-Road-Id"] == mid
        assert json.loads(reply.body)["target"] == f"/base/v1/many/{i}"
        await check_exchange_logged(env, reply, request_body=mid.encode())
