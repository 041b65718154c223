"""HTTP layer micro-benchmark: what the data-path ports and the peer client would cost on each HTTP stack.

    .venv/bin/python bench/http_layer.py [--duration 3] [--rounds 3] [--concurrency 32] [--only NAME,...]

Everything runs on 127.0.0.1, each server and each load in its own process, all on uvloop. The request looks
like one between two security servers (a POST with 14 headers, 2.9 KB of them, the stapled certificate and
OCSP response among them, and a 300-byte body); the answer is 1 KiB with 10 headers of the same kind. The
handler of every server variant does what a proxy does with the HTTP layer: reads the raw method, target and
header pairs (decoded as ``gateway.proxy.common.header_pairs`` does), the whole body, and answers.

Server side (a lean HTTP/1.1 load generator with ``--concurrency`` kept-alive connections; the server's CPU
per request is read from /proc):

- ``aiohttp-app``: ``web.Application`` with a router and an error middleware, as the proxies use it today;
- ``aiohttp-lowlevel``: ``web.Server`` with the handler alone (no router, no middleware);
- ``httptools-min``: a minimal asyncio Protocol over ``httptools.HttpRequestParser`` (one task per request);
- ``gateway-http``: :mod:`gateway.proxy.http`'s server, when it exists in this tree;

each plain and behind mutual TLS (TLS 1.3, a client certificate required, as on the server-to-server port).

Client side (the client process sends to the ``httptools-min`` server over mutual TLS; the client's CPU per
request is its own process time):

- ``aiohttp-session``: ``aiohttp.ClientSession`` used as ``gateway/proxy/peers.py`` does today;
- ``aiohttp-lean``: the same session, a prebuilt URL, ``resp.read()``, no per-request options;
- ``httptools-pool``: a minimal pool of kept-alive connections with ``httptools.HttpResponseParser``;
- ``gateway-http``: :mod:`gateway.proxy.http`'s client pool, when it exists in this tree.

Variants alternate within each round (A B C A B C ...) so that drift on a shared machine hits them alike; compare
figures only within one run. It asserts nothing; it is never part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httptools  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from gateway.cli.run import run  # noqa: E402

try:
    from gateway.proxy import http as gw_http
except ImportError:  # the layer is not in this tree
    gw_http = None  # type: ignore[assignment]  # the variants that need it are skipped

TARGET = "/r1/DEV/GOV/1002/registry/bench/items?page=2"
B64 = "MIIB" + "A" * 940  # a base64 DER certificate's length
REQUEST_HEADERS = [
    ("Host", "127.0.0.1"), ("Content-Type", "application/json"), ("Accept", "application/json"),
    ("X-Road-Client", "DEV/GOV/1001/consumer"), ("X-Road-Service", "DEV/GOV/1002/registry/bench"),
    ("X-Road-Id", "4f0b3a52-8d5e-4a8e-bb43-55d4b4a9d2c1"),
    ("X-Road-Request-Id", "0c7d8f4e-2a55-4a8b-9f1e-1c1f3f6d8a90"),
    ("X-Road-UserId", "EE12345678901"),
    ("Content-Digest", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"),
    ("Signature-Input", 'sig1=("@method" "@path" "@query" "content-digest" "x-road-client" "x-road-id" '
                        '"x-road-request-id" "x-road-service" "x-road-signing-cert" "x-road-signing-ocsp")'
                        ';created=1700000000;keyid="9f2c";alg="ecdsa-p256-sha256"'),
    ("Signature", "sig1=:" + "M" * 86 + "==:"),
    ("X-Road-Signing-Cert", B64), ("X-Road-Signing-Ocsp", B64[:800]),
]
REQUEST_BODY = b'{"query": "' + b"q" * 280 + b'"}'
RESPONSE_HEADERS = [
    ("Content-Type", "application/json"), ("X-Road-Client", "DEV/GOV/1001/consumer"),
    ("X-Road-Service", "DEV/GOV/1002/registry/bench"), ("X-Road-Id", "4f0b3a52-8d5e-4a8e-bb43-55d4b4a9d2c1"),
    ("X-Road-Request-Id", "0c7d8f4e-2a55-4a8b-9f1e-1c1f3f6d8a90"),
    ("X-Road-Request-Hash", "sha-512=:" + "h" * 86 + "==:"),
    ("Content-Digest", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"),
    ("Signature-Input", 'sig1=("@status" "content-digest";req);created=1700000000;keyid="9f2c"'),
    ("Signature", "sig1=:" + "M" * 86 + "==:"),
    ("X-Road-Signing-Cert", B64),
]
RESPONSE_BODY = b'{"items": "' + b"x" * (1024 - 14) + b'"}'

SERVER_VARIANTS = ["aiohttp-app", "aiohttp-lowlevel", "httptools-min", "gateway-http"]
CLIENT_VARIANTS = ["aiohttp-session", "aiohttp-lean", "httptools-pool", "gateway-http"]


def header_pairs(raw: Any) -> list[tuple[str, str]]:
    return [(n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for n, v in raw]


# ---- PKI: a CA, a server and a client certificate, P-256, TLS 1.3 ------------------------------------------


def make_pki(directory: Path) -> None:
    now = datetime.now(UTC)

    def cert(name: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[Any, x509.Certificate] | None,
             ca: bool) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ikey, iname = (key, subject) if issuer is None else (issuer[0], issuer[1].subject)
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(iname).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
             .not_valid_after(now + timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        return b.sign(ikey, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("bench CA", ca_key, None, True)
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        c = cert(name, key, (ca_key, ca), False)
        (directory / f"{name}.pem").write_bytes(c.public_bytes(serialization.Encoding.PEM))
        (directory / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def server_context(pki: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(pki / "server.pem", pki / "server.key")
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(pki / "ca.pem")
    return ctx


def client_context(pki: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_cert_chain(pki / "client.pem", pki / "client.key")
    ctx.load_verify_locations(pki / "ca.pem")
    return ctx


# ---- servers (child: --serve VARIANT) ------------------------------------------------------------------------


class MinimalProtocol(asyncio.Protocol):
    """The least an asyncio + httptools server does per request: parse, one task per request, one write."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        asyncio.get_running_loop().create_task(self.handle(
            self.parser.get_method(), self.url, self.headers, b"".join(self.body), self.parser.should_keep_alive()))

    async def handle(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
                     keep_alive: bool) -> None:
        header_pairs(headers)
        url.decode("ascii", "surrogateescape")
        lines = [b"HTTP/1.1 200 OK"]
        lines += [f"{n}: {v}".encode() for n, v in RESPONSE_HEADERS]
        lines.append(b"Content-Length: %d" % len(RESPONSE_BODY))
        if not keep_alive:
            lines.append(b"Connection: close")
        assert self.transport is not None
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + RESPONSE_BODY)
        if not keep_alive:
            self.transport.close()


async def serve(variant: str, tls: bool, pki: Path, port_file: Path) -> None:
    from aiohttp import web

    ctx = server_context(pki) if tls else None
    loop = asyncio.get_running_loop()
    server: Any
    if variant == "aiohttp-app":
        @web.middleware
        async def errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
            try:
                return await handler(request)
            except ValueError:
                return web.Response(status=400)

        async def app_handler(request: web.Request) -> web.StreamResponse:
            request.raw_path  # noqa: B018
            header_pairs(request.raw_headers)
            chunks = [c async for c in request.content.iter_chunked(64 * 1024)]
            b"".join(chunks)
            out = web.Response(status=200, body=RESPONSE_BODY)
            for n, v in RESPONSE_HEADERS:
                out.headers.add(n, v)
            return out

        app = web.Application(middlewares=[errors], handler_args={"auto_decompress": False})
        app.router.add_route("*", "/r{version:[0-9]+}/{tail:.*}", app_handler)
        app.router.add_route("*", "/{tail:.*}", app_handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx, backlog=1024)
        await site.start()
        port = runner.addresses[0][1]
    elif variant == "aiohttp-lowlevel":
        async def low_handler(request: web.BaseRequest) -> web.StreamResponse:
            request.raw_path  # noqa: B018
            header_pairs(request.raw_headers)
            await request.read()
            return web.Response(status=200, body=RESPONSE_BODY, headers=RESPONSE_HEADERS)

        low = web.Server(low_handler, auto_decompress=False, access_log=None)
        server = await loop.create_server(low, "127.0.0.1", 0, ssl=ctx, backlog=1024)
        port = server.sockets[0].getsockname()[1]
    elif variant == "httptools-min":
        server = await loop.create_server(MinimalProtocol, "127.0.0.1", 0, ssl=ctx, backlog=1024)
        port = server.sockets[0].getsockname()[1]
    elif variant == "gateway-http":
        async def gw_handler(request: gw_http.Request) -> gw_http.Response:
            request.raw_path  # noqa: B018
            header_pairs(request.raw_headers)
            await request.body()
            return gw_http.Response(status=200, headers=list(RESPONSE_HEADERS), body=RESPONSE_BODY)

        srv = gw_http.HttpServer(gw_handler, limits=gw_http.ServerLimits(max_body_bytes=10 * 2**20))
        await srv.start("127.0.0.1", 0, ssl=ctx, backlog=1024)
        port = srv.port
    else:
        raise SystemExit(f"unknown server variant {variant}")
    port_file.write_text(str(port))
    await asyncio.Event().wait()


# ---- the lean load generator for the server side (child: --load) --------------------------------------------


def raw_request() -> bytes:
    lines = [f"POST {TARGET} HTTP/1.1", *(f"{n}: {v}" for n, v in REQUEST_HEADERS),
             f"Content-Length: {len(REQUEST_BODY)}", "", ""]
    return "\r\n".join(lines).encode() + REQUEST_BODY


async def lean_load(port: int, tls: bool, pki: Path, concurrency: int, duration: float) -> dict[str, float]:
    ctx = client_context(pki) if tls else None
    request = raw_request()
    count = 0
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal count
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        while time.perf_counter() < deadline:
            writer.write(request)
            status = (await reader.readline()).split(b" ", 2)[1]
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if status != b"200":
                raise RuntimeError(status)
            count += 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"requests": count, "seconds": time.perf_counter() - t0}


# ---- client variants (child: --client VARIANT) ---------------------------------------------------------------


class MinimalPool:
    """Kept-alive connections with a response parser: the least a pooled httptools client does."""

    class Conn(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.transport: asyncio.Transport | None = None
            self.waiter: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] | None = None
            self.headers: list[tuple[bytes, bytes]] = []
            self.body: list[bytes] = []

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            assert self.waiter is not None
            self.waiter.set_result((self.parser.get_status_code(), self.headers, b"".join(self.body)))

        def connection_lost(self, exc: Exception | None) -> None:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ConnectionError("closed"))

    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        self.port, self.ctx = port, ctx
        self.idle: list[MinimalPool.Conn] = []

    async def request(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
                      ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        loop = asyncio.get_running_loop()
        if self.idle:
            conn = self.idle.pop()
        else:
            _, conn = await loop.create_connection(MinimalPool.Conn, "127.0.0.1", self.port, ssl=self.ctx)
            # read the peer certificate as a peer check would (a TLS transport always has an ssl_object)
            conn.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)  # type: ignore[union-attr]
        lines = [f"{method} {target} HTTP/1.1", *(f"{n}: {v}" for n, v in headers),
                 f"Content-Length: {len(body)}", "", ""]
        conn.headers, conn.body = [], []
        conn.waiter = loop.create_future()
        assert conn.transport is not None
        conn.transport.write("\r\n".join(lines).encode() + body)
        result = await conn.waiter
        self.idle.append(conn)
        return result


async def client_load(variant: str, port: int, pki: Path, concurrency: int, duration: float) -> dict[str, float]:
    import aiohttp
    from yarl import URL

    ctx = client_context(pki)
    count = 0
    deadline = time.perf_counter() + duration
    send: Callable[[], Awaitable[int]]
    closers: list[Callable[[], Awaitable[None]]] = []
    headers = [(n, v) for n, v in REQUEST_HEADERS if n != "Host"]
    skip = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
    if variant in ("aiohttp-session", "aiohttp-lean"):
        connector = aiohttp.TCPConnector(ssl=ctx, limit=100, keepalive_timeout=60, enable_cleanup_closed=False)
        session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        closers.append(session.close)
        if variant == "aiohttp-session":
            async def send() -> int:
                url = URL(f"https://127.0.0.1:{port}{TARGET}", encoded=True)
                resp = await session.request("POST", url, headers=headers, data=REQUEST_BODY,
                                             allow_redirects=False, skip_auto_headers=skip)
                try:
                    header_pairs(resp.raw_headers)
                    b"".join([c async for c in resp.content.iter_chunked(64 * 1024)])
                    return resp.status
                finally:
                    resp.release()
        else:
            url = URL(f"https://127.0.0.1:{port}{TARGET}", encoded=True)

            async def send() -> int:
                async with session.request("POST", url, headers=headers, data=REQUEST_BODY,
                                           allow_redirects=False, skip_auto_headers=skip) as resp:
                    header_pairs(resp.raw_headers)
                    await resp.read()
                    return resp.status
    elif variant == "httptools-pool":
        pool = MinimalPool(port, ctx)

        async def send() -> int:
            status, raw, _body = await pool.request("POST", TARGET, [("Host", "127.0.0.1"), *headers], REQUEST_BODY)
            header_pairs(raw)
            return status
    elif variant == "gateway-http":
        async def accept(_der: bytes | None) -> None:
            return None

        gw_pool = gw_http.ClientPool(("127.0.0.1", port), ssl=ctx, check_peer=accept,
                                     limits=gw_http.ClientLimits(max_body_bytes=10 * 2**20))
        closers.append(gw_pool.close)
        gw_headers = [("Host", "127.0.0.1"), *headers]

        async def send() -> int:
            resp = await gw_pool.request("POST", TARGET, gw_headers, REQUEST_BODY)
            header_pairs(resp.raw_headers)
            return resp.status
    else:
        raise SystemExit(f"unknown client variant {variant}")

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            if await send() != 200:
                raise RuntimeError("not 200")
            count += 1

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result = {"requests": count, "seconds": time.perf_counter() - t0, "cpu": time.process_time() - cpu0}
    for close in closers:
        await close()
    return result


# ---- orchestration -------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(variant: str, tls: bool, pki: Path, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = work / f"port-{variant}-{tls}-{time.monotonic_ns()}"
    cmd = [sys.executable, __file__, "--serve", variant, "--pki", str(pki), "--port-file", str(port_file)]
    if tls:
        cmd.append("--tls")
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server {variant} did not start")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def child(args: list[str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True).stdout
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="gateway-http-bench-"))
    make_pki(work)
    only = set(args.only.split(",")) if args.only else None
    def wanted(v: str) -> bool:
        return (only is None or v in only) and (gw_http is not None or v != "gateway-http")

    servers = [v for v in SERVER_VARIANTS if wanted(v)]
    clients = [v for v in CLIENT_VARIANTS if wanted(v)]
    common = ["--pki", str(work), "--concurrency", str(args.concurrency), "--duration", str(args.duration)]
    rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
    print(f"{os.cpu_count()} CPUs; {args.concurrency} connections; {args.duration:g} s per figure; "
          f"request {len(raw_request())} bytes, response body {len(RESPONSE_BODY)} bytes", flush=True)
    for round_no in range(1, args.rounds + 1):
        for tls in (False, True):
            for variant in servers:
                proc, port = start_server(variant, tls, work, work)
                try:
                    child(["--load", "--port", str(port), *(["--tls"] if tls else []), *common, "--duration", "0.5"])
                    before = cpu_seconds(proc.pid)
                    r = child(["--load", "--port", str(port), *(["--tls"] if tls else []), *common])
                    cpu = cpu_seconds(proc.pid) - before
                finally:
                    stop(proc)
                key = ("server " + ("mTLS" if tls else "plain"), variant)
                rows.setdefault(key, []).append((r["requests"] / r["seconds"], 1e6 * cpu / max(1, r["requests"])))
                print(f"round {round_no} {key[0]:13} {variant:18} {rows[key][-1][0]:8.0f} req/s "
                      f"{rows[key][-1][1]:7.1f} µs CPU/request (server)", flush=True)
        if clients:
            proc, port = start_server("httptools-min", True, work, work)
            try:
                for variant in clients:
                    child(["--client", variant, "--port", str(port), *common, "--duration", "0.5"])
                    r = child(["--client", variant, "--port", str(port), *common])
                    key = ("client mTLS", variant)
                    rows.setdefault(key, []).append((r["requests"] / r["seconds"],
                                                     1e6 * r["cpu"] / max(1, r["requests"])))
                    print(f"round {round_no} {key[0]:13} {variant:18} {rows[key][-1][0]:8.0f} req/s "
                          f"{rows[key][-1][1]:7.1f} µs CPU/request (client)", flush=True)
            finally:
                stop(proc)
    print()
    print(f"{'':14} {'variant':18} {'req/s (each round)':>28} {'µs CPU per request (each round)':>34} {'median':>7}")
    for (side, variant), figures in rows.items():
        rps = " ".join(f"{x:8.0f}" for x, _ in figures)
        cpu = " ".join(f"{c:8.1f}" for _, c in figures)
        print(f"{side:14} {variant:18} {rps:>28} {cpu:>34} {statistics.median(c for _, c in figures):7.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per figure")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32, help="connections (server side), in-flight requests "
                        "(client side)")
    parser.add_argument("--only", help="comma-separated variant names")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--tls", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pki", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.serve:
        run(serve(a.serve, a.tls, Path(a.pki), Path(a.port_file)))
    elif a.load:
        print(json.dumps(run(lean_load(a.port, a.tls, Path(a.pki), a.concurrency, a.duration))))
    elif a.client:
        print(json.dumps(run(client_load(a.client, a.port, Path(a.pki), a.concurrency, a.duration))))
    else:
        main(a)
