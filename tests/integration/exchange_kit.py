"""Shared pieces of the exchange tests on trust, failures and routing (real sockets, TLS and databases).

- :class:`ShiftClock`: the federation's injected clock, which a test may move forward.
- :class:`Probe`: a tiny HTTP service that records every request it gets (so a test can assert that nothing
  reached the service) and can be made to hang until released.
- :func:`craft_request` / :func:`send_to_server_port`: act as a peer security server: sign a request with a
  member's real signing key and send it over mutual TLS with a real authentication certificate, so that a test
  can tamper with any byte after signing.
- :func:`records`: a server's message-log records, decoded, optionally only one request id's.
- :func:`ocsp_refreshed`: wait for the background OCSP refreshes a moved clock made due.
- :class:`FailingLog`, :class:`GatedLog`, :func:`swapped_log`: in-memory message logs (the store's own test
  double, with its real writer) whose commits fail, or wait for the test, for records of given kinds; and a
  server that uses one for a while.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.dev.demo import Federation, start_federation
from gateway.dev.pki.ca import DevCA
from gateway.dev.pki.ocsp_responder import respond as ocsp_respond
from gateway.identifiers import ServiceId, SubsystemId
from gateway.messagelog.record import LogRecord
from gateway.messagelog.store import MemoryMessageLogStore, MessageLogStore, PendingRecord
from gateway.protocol import rest, signatures
from gateway.proxy import tls
from gateway.server.keyfiles import KeyFiles
from gateway.server.runtime import SecurityServer
from gateway.serverconf.access import AccessRule
from gateway.trust import keys
from gateway.trust.ocsp import build_request as build_ocsp_request

CONSUMER = "DEV/GOV/1001/consumer"
PROBE = "DEV/GOV/1002/registry/probe"  # the probe service on ss2 of a probed_federation


class ShiftClock:
    """``datetime.now(UTC)`` plus an offset that a test moves forward (the federation's ``clock=``)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: CIMultiDict[str]
    body: bytes


@dataclass
class Probe:
    """A recording HTTP service on 127.0.0.1 that answers with what it got, as JSON; ``/slow...`` hangs until
    :attr:`release` is set, ``/big/<n>/...`` answers ``n`` bytes."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    hanging: asyncio.Event = field(default_factory=asyncio.Event)  # set while a /slow request waits for release
    runner: web.AppRunner | None = None
    max_body: int = 2**20  # bytes of a request body it reads (aiohttp's client_max_size); beyond: 413

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.raw_path, CIMultiDict(request.headers), body))
        if request.path.startswith("/slow"):
            self.hanging.set()
            await self.release.wait()
        if request.path.startswith("/big/"):  # /big/<bytes>/...: a body of that many bytes
            return web.Response(body=b"x" * int(request.path.split("/")[2]))
        if request.path.startswith("/xroad-headers"):  # a service that sets X-Road-* headers of its own
            return web.json_response({"ok": True}, headers={
                "X-Road-UserId": "set-by-service", "X-Road-Custom": "1", "X-Road-Request-Hash": "forged",
            })
        return web.json_response({"method": request.method, "path": request.raw_path, "body": body.decode()})

    async def start(self) -> Probe:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()


def signer_of(server: SecurityServer) -> signatures.KeySigner:
    """The member signing key of a running server, read from its key files."""
    files = KeyFiles(dir=Path(server.settings.server.state_dir))
    return signatures.KeySigner(key=keys.read_private_key(files.sign_key), cert=keys.read_certificate(files.sign_cert))


def auth_ssl(server: SecurityServer, ca: DevCA) -> ssl.SSLContext:
    """A client TLS context presenting ``server``'s real authentication certificate."""
    files = KeyFiles(dir=Path(server.settings.server.state_dir))
    return tls.peer_client_context(str(files.auth_cert), str(files.auth_key), [ca.ca_cert])


def ocsp_for(ca: DevCA, cert: x509.Certificate, *, now: datetime) -> bytes:
    """What the CA's OCSP responder answers for ``cert`` at ``now`` (DER)."""
    ca.refresh()
    return ocsp_respond(build_ocsp_request(cert, ca.ca_cert), ca.ocsp_state(3600), now)


@dataclass
class Crafted:
    """A signed request as a client-side security server sends it; mutate ``headers``/``body`` to tamper."""

    method: str
    path: str
    query: str | None
    headers: dict[str, str]
    body: bytes
    request_id: str
    signed: signatures.SignedMessage

    @property
    def target(self) -> str:
        return self.path + ("" if self.query is None else "?" + self.query)


def craft_request(
    *, signer: signatures.KeySigner, ocsp: bytes, service: str, service_path: str = "/", query: str | None = None,
    method: str = "GET", client: str = CONSUMER, body: bytes = b"", created: int | None = None,
    user_id: str | None = None, request_id: str | None = None, message_id: str | None = None,
) -> Crafted:
    """Sign a request to ``service`` exactly as the client proxy does (docs/protocol.md section 2.2)."""
    path = f"/r1/{service}{service_path}"
    request_id = request_id or str(uuid.uuid4())
    xroad = {
        rest.H_CLIENT: client, rest.H_SERVICE: service, rest.H_ID: message_id or f"DEV-{uuid.uuid4()}",
        rest.H_REQUEST_ID: request_id,
    }
    if user_id is not None:
        xroad[rest.H_USER_ID] = user_id
    xroad[signatures.H_CONTENT_DIGEST] = signatures.content_digest_header(hashlib.sha256(body).digest())
    signed = signatures.sign_request(
        method=method, path=path, query=query, headers=xroad, signer=signer,
        created=created if created is not None else int(datetime.now(UTC).timestamp()), ocsp=ocsp,
    )
    return Crafted(method=method, path=path, query=query, headers={**xroad, **signed.headers}, body=body,
                   request_id=request_id, signed=signed)


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def assert_error(self, status: int, xroad_type: str, *, contains: str = "") -> None:
        """The X-Road error form: status, ``X-Road-Error`` header and JSON ``type`` (and message text)."""
        assert self.status == status, (self.status, self.body[:500])
        assert self.headers.get("X-Road-Error") == xroad_type, (self.headers.get("X-Road-Error"), self.body[:500])
        doc = self.json
        assert doc["type"] == xroad_type
        assert contains in doc["message"], doc["message"]
        assert doc["detail"]


async def send_to_server_port(
    address: str, ssl_context: ssl.SSLContext, crafted: Crafted, *, headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    """Send ``crafted`` (with ``headers``/``body`` overriding it) to a server proxy over mutual TLS."""
    sent_headers = dict(crafted.headers if headers is None else headers)
    data = crafted.body if body is None else body
    async with aiohttp.ClientSession(auto_decompress=False) as session, session.request(
        crafted.method, URL(f"https://{address}{crafted.target}", encoded=True), headers=sent_headers,
        data=data or None, ssl=ssl_context, skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
    ) as resp:
        return Answer(resp.status, resp.headers, await resp.read())


async def call(
    server: SecurityServer, service_and_path: str, *, method: str = "GET", client: str = CONSUMER,
    headers: dict[str, str] | None = None, data: bytes | None = None,
) -> Answer:
    """An information system's r1 call through ``server``'s client-facing port (path sent unmodified)."""
    async with aiohttp.ClientSession(auto_decompress=False) as session, session.request(
        method, URL(f"{server.client_url}/r1/{service_and_path}", encoded=True),
        headers={"X-Road-Client": client, **(headers or {})}, data=data,
    ) as resp:
        return Answer(resp.status, resp.headers, await resp.read())


async def records(server: SecurityServer, *, request_id: str | None = None,
                  message_id: str | None = None) -> list[LogRecord]:
    """``server``'s message-log records, oldest first; only those of one request or message id if given."""
    assert server.context is not None
    out = [s.decode() for s in await server.messagelog.read(server.context.origin, limit=10_000)]
    if request_id is not None:
        out = [r for r in out if r.request_id == request_id]
    if message_id is not None:
        out = [r for r in out if r.message_id == message_id]
    return out


class FailingLog(MemoryMessageLogStore):
    """An in-memory log whose commits fail (``OSError`` ENOSPC) for batches holding records of the given kinds:
    at once, or once ``after`` is set (the commit waits for it, then fails)."""

    def __init__(self, *fail_kinds: str, after: asyncio.Event | None = None) -> None:
        super().__init__()
        self.fail_kinds = set(fail_kinds)
        self.after = after

    async def _write_batch(self, batch: Sequence[PendingRecord]) -> list[int]:
        if any(p.record.kind in self.fail_kinds for p in batch):
            if self.after is not None:
                await self.after.wait()
            raise OSError(28, "No space left on device")
        return await super()._write_batch(batch)


class GatedLog(MemoryMessageLogStore):
    """An in-memory log whose commit of a batch holding a record of ``held_kind`` waits for :attr:`release`;
    :attr:`holding` is set once such a batch waits (nothing of it is committed until then)."""

    def __init__(self, held_kind: str) -> None:
        super().__init__()
        self.held_kind = held_kind
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def _write_batch(self, batch: Sequence[PendingRecord]) -> list[int]:
        if any(p.record.kind == self.held_kind for p in batch):
            self.holding.set()
            await self.release.wait()
        return await super()._write_batch(batch)


@contextlib.asynccontextmanager
async def swapped_log(server: SecurityServer, store: MessageLogStore) -> AsyncIterator[MessageLogStore]:
    """``server``'s proxies log to ``store`` inside the block (closed after it); to their own log again after."""
    assert server.context is not None
    own, server.context.messagelog = server.context.messagelog, store
    try:
        yield store
    finally:
        server.context.messagelog = own
        await store.close()


async def ocsp_refreshed(fed: Federation) -> None:
    """Every server's due OCSP refreshes done: they run in the background (gateway.proxy.ocspcache, rule 2), so
    a test that moved the clock past ``ocsp_refresh_seconds`` waits for them before it expects a new status."""
    for server in fed.servers.values():
        assert server.context is not None
        await server.context.ocsp_cache.refresh_due(wait=True)


def kinds(recs: Iterable[LogRecord]) -> list[tuple[str, int | None]]:
    return [(r.kind, r.status) for r in recs]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------------------------------------
# Certificates and servers made up by a test
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    cert: x509.Certificate
    key: keys.PrivateKey
    cert_path: Path
    key_path: Path

    @property
    def pem(self) -> str:
        return keys.cert_pem(self.cert)


def issue(ca: DevCA, directory: Path, kind: str, identity: str, *, now: datetime, days: int = 730) -> KeyPair:
    """A key and a certificate of ``kind`` (``auth``/``sign``) for ``identity``, issued by ``ca`` at ``now``."""
    from gateway.identifiers import MemberId, SecurityServerId
    from gateway.trust import certprofile

    ident = SecurityServerId.parse(identity) if kind == "auth" else MemberId.parse(identity)
    key = keys.generate_private_key()
    csr = certprofile.build_csr(key, ident, kind=kind, name="Test")  # type: ignore[arg-type]
    cert = ca.issue(csr, kind=kind, expected_identity=ident, now=now, validity_days=days)  # type: ignore[arg-type]
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{kind}-{cert.serial_number:x}"
    key_path, cert_path = directory / f"{stem}.key", directory / f"{stem}.pem"
    keys.write_private_key(key_path, key)
    keys.write_public_file(cert_path, keys.cert_pem(cert).encode())
    return KeyPair(cert=cert, key=key, cert_path=cert_path, key_path=key_path)


class FakeProvider:
    """A provider security server under the test's control: mutual TLS with any authentication certificate,
    answering each request as ``mode`` says (the last path segment): a correct signed answer, or one of many
    faulty ones. :attr:`seen` records every request that reached it.
    """

    def __init__(self, *, tls_cert: Path, tls_key: Path, ca: DevCA, signer: signatures.KeySigner) -> None:
        self.ssl = tls.peer_server_context(str(tls_cert), str(tls_key), [ca.ca_cert])
        self.ca = ca
        self.signer = signer
        self.seen: list[Seen] = []
        self.address = ""
        self.runner: web.AppRunner | None = None
        self.other_signer: signatures.KeySigner | None = None  # for mode "wrong-member"
        self.arrived = asyncio.Event()  # set by every request that reaches it

    async def start(self) -> FakeProvider:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl)
        await site.start()
        self.address = f"127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.raw_path, CIMultiDict(request.headers), body))
        self.arrived.set()
        mode = request.path.rsplit("/", 1)[-1]
        pairs = [(n.decode(), v.decode()) for n, v in request.raw_headers]
        fields = signatures.fields_from_pairs(pairs)
        raw_path, _, raw_query = request.raw_path.partition("?")
        header_part = rest.request_header_part(request.method, raw_path, raw_query if "?" in request.raw_path
                                               else None, pairs)
        request_hash = rest.request_hash(header_part, hashlib.sha512(body).digest() if body else None)
        request_signature = base64.b64decode(fields[signatures.H_SIGNATURE].split(":")[1])
        out_body = b'{"answer": "from the provider"}'
        xroad = {
            rest.H_CLIENT: fields[rest.H_CLIENT], rest.H_SERVICE: fields[rest.H_SERVICE],
            rest.H_ID: fields[rest.H_ID], rest.H_REQUEST_ID: fields[rest.H_REQUEST_ID],
            rest.H_REQUEST_HASH: request_hash,
            signatures.H_CONTENT_DIGEST: signatures.content_digest_header(hashlib.sha256(out_body).digest()),
        }
        if mode == "wrong-hash":
            xroad[rest.H_REQUEST_HASH] = b64(hashlib.sha512(b"another request").digest())
        elif mode == "wrong-id":
            xroad[rest.H_ID] = "DEV-not-the-request"
        elif mode == "wrong-request-id":
            xroad[rest.H_REQUEST_ID] = str(uuid.uuid4())
        headers = dict(xroad)
        if mode != "unsigned":
            signer = self.other_signer if mode == "wrong-member" and self.other_signer else self.signer
            now = datetime.now(UTC)
            created = int(now.timestamp()) - (3600 if mode == "old" else 0)
            signed = signatures.sign_response(
                status=200, headers=xroad,
                request_signature=b"\x01" * 64 if mode == "other-request" else request_signature,
                signer=signer, created=created, ocsp=ocsp_for(self.ca, signer.cert, now=now),
            )
            headers.update(signed.headers)
        if mode == "tampered-body":
            out_body = b'{"answer": "changed on the way"}'
        status = 201 if mode == "tampered-status" else 200
        return web.Response(status=status, body=out_body, headers={"Content-Type": "application/json", **headers})


@contextlib.asynccontextmanager
async def probed_federation(
    workdir: Path, *, adapters_at_probe: bool = False, probe_max_body: int = 2**20, **kw: Any
) -> AsyncIterator[tuple[Federation, Probe]]:
    """A recording :class:`Probe` and ``start_federation(workdir, **kw)`` whose ss2 offers the probe as
    :data:`PROBE`, granted to :data:`CONSUMER` and in use; both closed afterwards. ``adapters_at_probe``:
    no demo adapters, their services (persons, companies) lead to the probe instead. ``probe_max_body``: the
    probe's :attr:`Probe.max_body`."""
    probe = await Probe(max_body=probe_max_body).start()
    try:
        if adapters_at_probe:
            kw |= {"with_adapters": False, "adapter_urls": {"persons": probe.url, "companies": probe.url}}
        fed = await start_federation(workdir, **kw)
        try:
            ss2 = fed.server("ss2")
            await ss2.store.add_service(ServiceId.parse(PROBE), url=probe.url)
            await ss2.store.grant(AccessRule(subject=SubsystemId.parse(CONSUMER), service=ServiceId.parse(PROBE)))
            await ss2.reload_serverconf()
            yield fed, probe
        finally:
            await fed.close()
    finally:
        await probe.close()


@contextlib.asynccontextmanager
async def database_urls(backend: str, tmp: Path, names: Iterable[str]) -> AsyncIterator[dict[str, str]]:
    """``start_federation(database_urls=...)`` for ``backend``: SQLite files in ``tmp`` (the default), or a
    fresh PostgreSQL database per name (as ``tests/conftest.py`` makes them), dropped afterwards."""
    if backend == "sqlite":
        yield {name: f"sqlite+aiosqlite:///{tmp / (name + '.db')}" for name in names}
        return
    import asyncpg
    from conftest import PG_DSN

    host = PG_DSN.rpartition("/")[0].split("://", 1)[1]
    created = {name: f"gw_test_{uuid.uuid4().hex[:16]}" for name in names}
    conn = await asyncpg.connect(PG_DSN)
    try:
        for db in created.values():
            await conn.execute(f'CREATE DATABASE "{db}"')
    finally:
        await conn.close()
    try:
        yield {name: f"postgresql+asyncpg://{host}/{db}" for name, db in created.items()}
    finally:
        conn = await asyncpg.connect(PG_DSN)
        try:
            for db in created.values():
                await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        finally:
            await conn.close()
