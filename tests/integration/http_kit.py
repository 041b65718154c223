"""Helpers for the HTTP layer's tests: real certificates, a raw HTTP/1.1 peer on loopback, a response reader."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pkihelpers import IssuedCert, make_pki

from gateway.proxy import tls
from gateway.proxy.http import HttpServer, Request, Response, ServerLimits


@dataclass(frozen=True, slots=True)
class Pki:
    """A CA and two authentication certificates it issued, as the two ends of the server-to-server hop use."""

    server: IssuedCert
    client: IssuedCert
    stranger: IssuedCert  # issued by another CA
    ca_cert: x509.Certificate

    def server_context(self) -> ssl.SSLContext:
        return tls.peer_server_context(str(self.server.cert_path), str(self.server.key_path), [self.ca_cert])

    def client_context(self, *, cert: IssuedCert | None = None) -> ssl.SSLContext:
        who = cert if cert is not None else self.client
        return tls.peer_client_context(str(who.cert_path), str(who.key_path), [self.ca_cert])

    @staticmethod
    def der(cert: IssuedCert) -> bytes:
        return cert.cert.public_bytes(serialization.Encoding.DER)


def make_http_pki(directory: Path) -> Pki:
    pki = make_pki(directory / "ca")
    other = make_pki(directory / "other", name="Other CA")
    return Pki(
        server=pki.issue_auth("DEV/GOV/1002/ss2"), client=pki.issue_auth("DEV/GOV/1001/ss1"),
        stranger=other.issue_auth("DEV/GOV/1001/ss1"), ca_cert=pki.ca_cert,
    )


@asynccontextmanager
async def serving(
    handler: Callable[[Request], Awaitable[Response]], *, limits: ServerLimits | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[HttpServer]:
    server = HttpServer(handler, limits=limits)
    await server.start("127.0.0.1", 0, ssl=ssl_context)
    try:
        yield server
    finally:
        await server.close(timeout=2)


@dataclass(slots=True)
class Raw:
    """A parsed response as a raw peer reads it."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> Raw:
    """One response: status line, headers, a body by Content-Length (or to EOF without one)."""
    line = await reader.readline()
    if not line:
        raise EOFError("connection closed before a response")
    _version, status, reason = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    headers = []
    while (h := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = h.decode("latin-1").rstrip("\r\n").partition(":")
        headers.append((name, value.strip()))
    raw = Raw(int(status), reason, headers, b"")
    length = raw.header("Content-Length")
    if head or raw.status in (100, 204, 304):
        return raw
    raw.body = await reader.readexactly(int(length)) if length is not None else await reader.read()
    return raw


@dataclass
class RawPeer:
    """A raw HTTP server on loopback for the client's tests: ``answer(head, reader, writer)`` is called per
    request with its header block; connections and requests are counted."""

    answer: Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                self.requests.append(head)
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":", 1)[1]))
                if not await self.answer(head, reader, writer):
                    break
        finally:
            writer.close()
            self.closed.set()


@asynccontextmanager
async def raw_peer(
    answer: Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]],
    *, ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[RawPeer]:
    peer = RawPeer(answer)
    server = await asyncio.start_server(peer._serve, "127.0.0.1", 0, ssl=ssl_context)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        server.close()
        await server.wait_closed()


def canned(response: bytes, *, keep: bool = True) -> Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter],
                                                              Awaitable[bool]]:
    """An answer that writes ``response`` as is; the connection stays open when ``keep``."""

    async def answer(_head: bytes, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(response)
        await writer.drain()
        return keep

    return answer
