"""A bare two-hop HTTP/1.1 relay with mutual TLS between its hops: the benchmark's floor for a Python proxy.

    .venv/bin/python bench/relay.py --listen 127.0.0.1:0 --upstream 127.0.0.1:8000 \\
        [--tls-dir DIR --server-tls] [--tls-dir DIR --upstream-tls]

One process is one hop: it accepts HTTP/1.1 (plain, or TLS with a client certificate required when
``--server-tls``) and relays every request to ``--upstream`` over kept-alive connections (plain, or TLS with
this side's client certificate when ``--upstream-tls``). ``bench/exchange.py`` runs two of them, the first
with ``--upstream-tls`` and the second with ``--server-tls``: plain HTTP from the load generator to the first
hop and from the second hop to the service, mutual TLS 1.3 between the hops, as between two security servers.

What a hop does, and nothing else: an asyncio ``Protocol`` on uvloop (when installed) parses the request with
``httptools`` (llhttp), rebuilds it (the request line, the headers without hop-by-hop ones, the body with a
``Content-Length``), sends it on an idle upstream connection (a new one when none is idle), parses the
response the same way, rebuilds it and writes it back. Requests on one downstream connection are answered
in order, one at a time. A reused upstream connection that ends before the first byte of its response is
retried once on another connection; any other upstream failure is a 502. No routing, no limits, no logging:
it is the cost of two parsed and rebuilt HTTP/1.1 hops with TLS, against which the security servers are
compared. It prints ``listening HOST:PORT`` on stdout once it accepts connections, and stops on SIGINT or
SIGTERM.

``write_mtls_files`` makes the certificates the hops use (and that ``bench/nginx.py`` uses for its chain): a
throw-away ECDSA P-256 CA, a server certificate for ``localhost`` and ``127.0.0.1``, a client certificate.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import signal
import ssl
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httptools
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# RFC 9110 section 7.6.1: headers that concern one connection only, never forwarded; Content-Length is
# dropped too because every message is rebuilt with the length of the body it carries.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"content-length",
})
NO_BODY_STATUS = frozenset({204, 304})
SERVER_NAME = "localhost"  # the name the upstream side checks in the server certificate

# ---- certificates -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MtlsFiles:
    """PEM files for mutual TLS between two hops: one CA, the server's and the client's key and certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def in_dir(cls, directory: Path) -> MtlsFiles:
        return cls(ca=directory / "ca.pem", server_cert=directory / "server.pem", server_key=directory / "server.key",
                   client_cert=directory / "client.pem", client_key=directory / "client.key")


def write_mtls_files(directory: Path) -> MtlsFiles:
    """A fresh CA, a server certificate (``localhost``, ``127.0.0.1``) and a client certificate, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    files = MtlsFiles.in_dir(directory)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench relay CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, eku: x509.ObjectIdentifier, cert_path: Path, key_path: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        )
        if eku == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]), critical=False)
        cert_path.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)

    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    leaf("bench relay server", ExtendedKeyUsageOID.SERVER_AUTH, files.server_cert, files.server_key)
    leaf("bench relay client", ExtendedKeyUsageOID.CLIENT_AUTH, files.client_cert, files.client_key)
    return files


def server_context(files: MtlsFiles) -> ssl.SSLContext:
    """TLS 1.3 only, a client certificate from the CA required (as between security servers)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(files.server_cert, files.server_key)
    ctx.load_verify_locations(files.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(files: MtlsFiles) -> ssl.SSLContext:
    """TLS 1.3 only, the server's certificate checked against the CA and ``localhost``, our client certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(files.ca)
    ctx.load_cert_chain(files.client_cert, files.client_key)
    return ctx


# ---- messages -----------------------------------------------------------------------------------------------


def _forwarded(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """``name: value`` lines of the headers that go on to the next hop (not hop-by-hop, nor named in Connection)."""
    drop = HOP_BY_HOP
    for name, value in headers:
        if name.lower() == b"connection":
            drop = drop | {t.strip().lower() for t in value.split(b",")}
    return [name + b": " + value for name, value in headers if name.lower() not in drop]


def build_request(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", *_forwarded(headers)]
    if body or method not in (b"GET", b"HEAD"):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def build_response(status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes, *,
                   close: bool) -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (status, reason), *_forwarded(headers)]
    if status not in NO_BODY_STATUS:
        lines.append(b"Content-Length: %d" % len(body))
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def error_response(status: int, reason: bytes, text: str, *, close: bool) -> bytes:
    return build_response(status, reason, [(b"Content-Type", b"text/plain; charset=utf-8")],
                          text.encode() + b"\n", close=close)


# ---- the upstream side: a pool of kept-alive connections ---------------------------------------------------

# (status, reason, headers, body) of a complete response, or the exception that ended the attempt
ResponseCallback = Callable[[tuple[int, bytes, list[tuple[bytes, bytes]], bytes] | BaseException], None]


class _UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: tuple[bytes, bool, ResponseCallback] | None = None  # the request in flight
        self.retriable = False
        self.received = False
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(e)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        self.transport = None
        if self.pending is not None:
            request, head, callback = self.pending
            self.pending = None
            if self.retriable and not self.received:  # the peer closed an idle connection as we reused it
                self.pool.request(request, head, callback, retry=False)
            else:
                callback(exc or ConnectionError("upstream closed the connection before the response ended"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.reason, self.headers, self.body = b"", [], []

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.pending is not None and self.pending[1] and self.parser.get_status_code() >= 200:
            # a response to HEAD has no body, which the parser cannot know: finish here, never reuse
            self._complete(reusable=False)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.pending is not None and self.parser.get_status_code() >= 200:  # 1xx: the final answer follows
            self._complete(reusable=self.parser.should_keep_alive())

    # ours
    def send(self, request: bytes, head: bool, callback: ResponseCallback, *, retriable: bool) -> None:
        """Write ``request``; ``retriable``: a reused connection, whose end before any response byte is retried."""
        assert self.transport is not None
        self.pending, self.retriable, self.received = (request, head, callback), retriable, False
        self.transport.write(request)

    def _complete(self, *, reusable: bool) -> None:
        assert self.pending is not None and self.transport is not None
        callback = self.pending[2]
        self.pending = None
        response = (self.parser.get_status_code(), self.reason, self.headers, b"".join(self.body))
        if reusable:
            self.pool.release(self)
        else:
            self.transport.close()
        callback(response)

    def _fail(self, exc: BaseException) -> None:
        if self.pending is not None:
            callback = self.pending[2]
            self.pending = None
            callback(exc)
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """Kept-alive connections to one upstream address; the most recently released idle one is reused."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        self.host, self.port, self.ssl_context = host, port, ssl_context
        self.idle: list[_UpstreamConnection] = []
        self.opened = 0  # connections made, for the tests and the curious

    def request(self, request: bytes, head: bool, callback: ResponseCallback, *, retry: bool = True) -> None:
        """Send ``request``; ``callback`` gets the response or the error."""
        if self.idle:
            self.idle.pop().send(request, head, callback, retriable=retry)
            return
        asyncio.get_running_loop().create_task(self._connect_and_send(request, head, callback))

    async def _connect_and_send(self, request: bytes, head: bool, callback: ResponseCallback) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                lambda: _UpstreamConnection(self), self.host, self.port, ssl=self.ssl_context,
                server_hostname=SERVER_NAME if self.ssl_context is not None else None,
            )
        except (OSError, ssl.SSLError) as e:
            callback(e)
            return
        self.opened += 1
        conn.send(request, head, callback, retriable=False)

    def release(self, conn: _UpstreamConnection) -> None:
        self.idle.append(conn)

    def forget(self, conn: _UpstreamConnection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    def close(self) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()


# ---- the downstream side ------------------------------------------------------------------------------------


class _DownstreamConnection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[tuple[bytes, bool, bool]] = deque()  # (request, HEAD, keep alive) not yet sent on
        self.busy = False  # a request of this connection is upstream
        self.keep_alive = True
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(501, b"Not Implemented", "upgrades and CONNECT are not relayed")
        except httptools.HttpParserError as e:
            self._refuse(400, b"Bad Request", f"malformed request: {e}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.queue.clear()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.target, self.headers, self.body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        request = build_request(method, self.target, self.headers, b"".join(self.body))
        self.queue.append((request, method == b"HEAD", self.parser.should_keep_alive()))
        if not self.busy:
            self._next()

    # ours
    def _next(self) -> None:
        if not self.queue or self.transport is None:
            return
        request, head, keep_alive = self.queue.popleft()
        self.busy, self.keep_alive = True, keep_alive
        self.pool.request(request, head, self._respond)

    def _respond(self, result: tuple[int, bytes, list[tuple[bytes, bytes]], bytes] | BaseException) -> None:
        self.busy = False
        if self.transport is None:
            return
        close = not self.keep_alive
        if isinstance(result, BaseException):
            data = error_response(502, b"Bad Gateway", f"upstream failed: {result!r}", close=close)
        else:
            data = build_response(*result, close=close)
        self.transport.write(data)
        if close:
            self.transport.close()
        else:
            self._next()

    def _refuse(self, status: int, reason: bytes, text: str) -> None:
        if self.transport is not None:
            self.transport.write(error_response(status, reason, text, close=True))
            self.transport.close()


async def start_hop(
    *, host: str, port: int, upstream_host: str, upstream_port: int,
    server_ssl: ssl.SSLContext | None, upstream_ssl: ssl.SSLContext | None,
) -> tuple[asyncio.Server, UpstreamPool]:
    """Listen on ``host:port`` (0: a free port) and relay to the upstream; the server and its upstream pool."""
    pool = UpstreamPool(upstream_host, upstream_port, upstream_ssl)
    server = await asyncio.get_running_loop().create_server(
        lambda: _DownstreamConnection(pool), host, port, ssl=server_ssl, backlog=1024,
    )
    return server, pool


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (a port 0-65535)")
    return host, int(port)


async def _serve(args: argparse.Namespace) -> None:
    if (args.server_tls or args.upstream_tls) and args.tls_dir is None:
        raise SystemExit("relay: --server-tls and --upstream-tls need --tls-dir (made by write_mtls_files)")
    files = MtlsFiles.in_dir(args.tls_dir) if args.tls_dir is not None else None
    server, pool = await start_hop(
        host=args.listen[0], port=args.listen[1], upstream_host=args.upstream[0], upstream_port=args.upstream[1],
        server_ssl=server_context(files) if files is not None and args.server_tls else None,
        upstream_ssl=client_context(files) if files is not None and args.upstream_tls else None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening {host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        pool.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=_address, required=True, help="HOST:PORT to accept on (port 0: free)")
    parser.add_argument("--upstream", type=_address, required=True, help="HOST:PORT to relay to")
    parser.add_argument("--tls-dir", type=Path, help="directory of write_mtls_files' PEM files")
    parser.add_argument("--server-tls", action="store_true", help="accept TLS only, with a client certificate")
    parser.add_argument("--upstream-tls", action="store_true", help="TLS with our client certificate upstream")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        print("relay: uvloop is not installed (pip install -e '.[bench]'); using asyncio's event loop",
              file=sys.stderr)
        asyncio.run(_serve(args))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(args))


if __name__ == "__main__":
    main()
