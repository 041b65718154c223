"""The provider's calls to services (gateway.proxy.services.ServicePools) against real loopback services.

The service is the lean layer's own server (plain, or TLS with a real certificate for 127.0.0.1) or a raw
asyncio server writing canned bytes: one pool per origin and its kept-alive connection, the target and
``Host`` built from the base URL, bodies and content coding untouched, https verified against the system's
trust store (``SSL_CERT_FILE``) and the URL's host, redirects passed back, the whole-response timeout, the
stale-connection retry only for idempotent methods, idle pools dropped, everything closed at the end.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from http_kit import canned, raw_peer, serving
from pkihelpers import make_cert
from waiting import wait_for_condition

from gateway.identifiers import SecurityServerId
from gateway.proxy.http import ConnectFailed, ConnectionLost, Request, Response, ResponseTooLarge
from gateway.proxy.services import BaseUrl, Origin, ServicePools, split_base_url
from gateway.server.keyfiles import KeyFiles, ensure_internal_tls
from gateway.trust import keys

pytestmark = pytest.mark.integration

Seen = list[tuple[str, str, list[tuple[bytes, bytes]], bytes]]


@asynccontextmanager
async def echo_service(*, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[tuple[int, Seen]]:
    """A service that records each request (method, target, header pairs, body) and answers its body back with
    the request's Content-Encoding."""
    seen: Seen = []

    async def handler(request: Request) -> Response:
        body = await request.body()
        seen.append((request.method, request.raw_path, request.raw_headers, body))
        coding = request.header("Content-Encoding")
        headers = [("Content-Type", "application/octet-stream")] + ([("Content-Encoding", coding)] if coding else [])
        return Response(status=200, headers=headers, body=body)

    async with serving(handler, ssl_context=ssl_context) as server:
        yield server.port, seen


def tls_files(directory: Path) -> KeyFiles:
    """A real self-signed server certificate for localhost and 127.0.0.1 (the client-facing port's kind)."""
    files = KeyFiles(dir=directory)
    directory.mkdir(parents=True, exist_ok=True)
    ensure_internal_tls(files, SecurityServerId.parse("DEV/GOV/1002/ss2"), now=datetime.now(UTC))
    return files


def server_context(files: KeyFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(files.internal_cert), str(files.internal_key))
    return ctx


async def test_one_kept_alive_pool_per_origin_target_and_host_from_the_base_url_bodies_untouched() -> None:
    pools = ServicePools(max_body_bytes=1 << 20)
    gz = gzip.compress(b"hello " * 100)
    async with echo_service() as (port, seen):
        base = f"http://127.0.0.1:{port}"
        first = await pools.request(f"{base}/api/", "POST", "/persons/1?x=%2F", [("Content-Encoding", "gzip")], gz,
                                    timeout_seconds=5)
        second = await pools.request(f"{base}/other", "GET", "", [], b"", timeout_seconds=5)
        third = await pools.request(base, "GET", "", [], b"", timeout_seconds=5)
        assert pools.origins == [Origin("http", "127.0.0.1", port)]
        assert pools.pool(Origin("http", "127.0.0.1", port)).open_connections == 1  # one connection, reused
    assert (first.status, first.body, first.header("content-encoding")) == (200, gz, "gzip")  # not decoded
    assert [(m, t) for m, t, _, _ in seen] == [("POST", "/api/persons/1?x=%2F"), ("GET", "/other"), ("GET", "/")]
    assert seen[0][3] == gz
    names = {n.lower() for n, _ in seen[0][2]}
    assert names == {b"content-encoding", b"host", b"content-length"}  # nothing added: no User-Agent, Accept...
    assert dict(seen[1][2])[b"Host"] == f"127.0.0.1:{port}".encode()
    assert (second.status, third.status) == (200, 200)
    await pools.close()


@pytest.mark.parametrize(("url", "origin", "prefix", "host"), [
    ("http://127.0.0.1:8080", Origin("http", "127.0.0.1", 8080), "", "127.0.0.1:8080"),
    ("http://svc.example/", Origin("http", "svc.example", 80), "", "svc.example"),
    ("https://Svc.Example:443/api/v1/", Origin("https", "svc.example", 443), "/api/v1", "svc.example"),
    ("https://svc.example:8443/a//", Origin("https", "svc.example", 8443), "/a", "svc.example:8443"),
    ("http://[::1]:81/x", Origin("http", "::1", 81), "/x", "[::1]:81"),
    ("http://[::1]/x?k=v", Origin("http", "::1", 80), "/x?k=v", "[::1]"),
])
def test_base_url_origin_target_prefix_and_host_header(url: str, origin: Origin, prefix: str, host: str) -> None:
    assert split_base_url(url) == BaseUrl(origin, prefix, host)


async def test_https_service_verified_against_the_system_trust_store_and_the_urls_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = tls_files(tmp_path / "service")
    other = tls_files(tmp_path / "other")
    async with echo_service(ssl_context=server_context(files)) as (port, seen):
        # trusted: the service's certificate is in the trust store the environment names
        monkeypatch.setenv("SSL_CERT_FILE", str(files.internal_cert))
        trusting = ServicePools(max_body_bytes=1024)
        resp = await trusting.request(f"https://127.0.0.1:{port}", "PUT", "/doc", [], b"body", timeout_seconds=5)
        assert (resp.status, resp.body) == (200, b"body")
        resp = await trusting.request(f"https://localhost:{port}", "GET", "/doc", [], b"", timeout_seconds=5)
        assert resp.status == 200
        await trusting.close()
        # not trusted: another certificate is the trust store
        monkeypatch.setenv("SSL_CERT_FILE", str(other.internal_cert))
        refusing = ServicePools(max_body_bytes=1024)
        with pytest.raises(ConnectFailed, match=rf"TLS certificate of 127\.0\.0\.1:{port} refused") as caught:
            await refusing.request(f"https://127.0.0.1:{port}", "GET", "/doc", [], b"", timeout_seconds=5)
        assert caught.value.certificate_error is not None
        await refusing.close()
    assert [(m, t) for m, t, _, _ in seen] == [("PUT", "/doc"), ("GET", "/doc")]


async def test_https_service_whose_certificate_does_not_name_the_host_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = keys.generate_private_key()
    cert = make_cert(key, "service", extensions=[(x509.SubjectAlternativeName([x509.DNSName("svc.example")]), False)])
    cert_path, key_path = tmp_path / "svc.pem", tmp_path / "svc.key"
    keys.write_public_file(cert_path, keys.cert_pem(cert).encode())
    keys.write_private_key(key_path, key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert_path), str(key_path))
    async with echo_service(ssl_context=ctx) as (port, seen):
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))  # trusted, but for another name than 127.0.0.1
        pools = ServicePools(max_body_bytes=1024)
        with pytest.raises(ConnectFailed, match="refused") as caught:
            await pools.request(f"https://127.0.0.1:{port}", "GET", "/", [], b"", timeout_seconds=5)
        assert "mismatch" in (caught.value.certificate_error or "")
        await pools.close()
    assert seen == []


async def test_a_redirect_is_passed_back_never_followed() -> None:
    redirect = b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
    async with raw_peer(canned(redirect)) as peer:
        pools = ServicePools(max_body_bytes=1024)
        resp = await pools.request(f"http://127.0.0.1:{peer.port}", "GET", "/here", [], b"", timeout_seconds=5)
        await pools.close()
    assert (resp.status, resp.header("location")) == (302, "/elsewhere")
    assert len(peer.requests) == 1


async def test_the_timeout_covers_the_whole_response_and_a_too_large_body_is_refused() -> None:
    released = asyncio.Event()

    async def dribble(_head: bytes, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")  # then nothing more
        await writer.drain()
        await released.wait()
        return False

    async with raw_peer(dribble) as peer:
        pools = ServicePools(max_body_bytes=1024)
        with pytest.raises(TimeoutError):
            await pools.request(f"http://127.0.0.1:{peer.port}", "GET", "/", [], b"", timeout_seconds=0.2)
        released.set()
        await pools.close()
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 2048\r\n\r\n" + b"x" * 2048
    async with raw_peer(canned(big)) as peer:
        pools = ServicePools(max_body_bytes=1024)
        with pytest.raises(ResponseTooLarge, match="larger than the maximum of 1024 bytes"):
            await pools.request(f"http://127.0.0.1:{peer.port}", "GET", "/", [], b"", timeout_seconds=5)
        await pools.close()


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("DELETE", True), ("POST", False), ("PATCH", False)])
async def test_a_stale_kept_alive_connection_is_retried_only_for_idempotent_methods(method: str, retried: bool) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    answered: set[int] = set()

    async def once_per_connection(_head: bytes, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if id(writer) in answered:
            return False  # the next request on this connection: closed without an answer, as an idle timer would
        answered.add(id(writer))
        writer.write(ok)
        await writer.drain()
        return True

    async with raw_peer(once_per_connection) as peer:
        pools = ServicePools(max_body_bytes=1024)
        base = f"http://127.0.0.1:{peer.port}"
        assert (await pools.request(base, method, "/one", [], b"a", timeout_seconds=5)).body == b"ok"
        if retried:
            assert (await pools.request(base, method, "/two", [], b"b", timeout_seconds=5)).body == b"ok"
            assert peer.connections == 2
        else:
            with pytest.raises(ConnectionLost):
                await pools.request(base, method, "/two", [], b"b", timeout_seconds=5)
            assert peer.connections == 1
        await pools.close()


async def test_idle_pools_are_dropped_and_close_ends_everything() -> None:
    async with echo_service() as (port_a, _), echo_service() as (port_b, _):
        pools = ServicePools(max_body_bytes=1024, idle_seconds=0.2)
        a = Origin("http", "127.0.0.1", port_a)
        await pools.request(f"http://127.0.0.1:{port_a}", "GET", "/", [], b"", timeout_seconds=5)
        pool_a = pools.pool(a)
        await wait_for_condition(lambda: pool_a.open_connections == 0, timeout=10,
                                 what="the idle connection to the first service closed")
        await pools.request(f"http://127.0.0.1:{port_b}", "GET", "/", [], b"", timeout_seconds=5)
        assert pools.origins == [Origin("http", "127.0.0.1", port_b)]  # the first one's pool is gone
        assert pool_a.closed
        pool_b = pools.pool(Origin("http", "127.0.0.1", port_b))
        await pools.close()
        assert pool_b.closed and pool_b.open_connections == 0 and pools.origins == []
        with pytest.raises(ConnectFailed, match="the service connections are closed"):
            await pools.request(f"http://127.0.0.1:{port_b}", "GET", "/", [], b"", timeout_seconds=5)
