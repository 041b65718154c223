"""The CPU one exchange costs the two security servers' own code, in process, without sockets.

    .venv/bin/python bench/hotpath.py [--exchanges 3000] [--rounds 5]
    .venv/bin/python bench/hotpath.py --callgrind [--exchanges 200]      # instructions, with valgrind
    .venv/bin/python bench/hotpath.py --profile                           # cProfile, top functions

One exchange here is what the consumer's (ss1) and the provider's (ss2) proxies compute for one ``GET``
with a 1 KiB JSON answer, in the order they do it, with the functions they call (``gateway.protocol``,
``gateway.messagelog.record`` and the store's encoding, ``gateway.proxy.observe`` with real Prometheus
metrics, operational-monitoring records and the ``exchange`` log line through structlog as configured in
production, JSON to a file): ss1 parses the request, signs it, builds, encodes and hashes its record; ss2
verifies it, checks the replay cache and the digest, logs it, computes the request hash, signs the answer
and logs it; ss1 verifies the answer and logs it; each side ends the exchange (metrics, opmon record, log
line). Not in it: the HTTP layer, sockets, TLS, the event loop's scheduling, the message log's writer
thread and database, the service. The glue that the proxies write inline (a few dict and list
comprehensions) is repeated here; everything else is the proxies' own functions.

Without ``--callgrind`` it prints the CPU time (``time.process_time``) per exchange: the median of
``--rounds`` rounds of ``--exchanges`` exchanges. With ``--callgrind`` it runs itself twice under
``valgrind --tool=callgrind`` (``--exchanges`` and twice that many) and prints the instructions per
exchange, the difference of the two totals over the difference of exchanges, so that start-up and the
development PKI do not count: deterministic up to the ECDSA nonces, whatever else the machine does.
It asserts nothing and is never part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import cProfile
import hashlib
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402

from gateway.dev.pki.ca import DevCA  # noqa: E402
from gateway.dev.pki.ocsp_responder import respond  # noqa: E402
from gateway.identifiers import MemberId, ServiceId, member_of, parse_client  # noqa: E402
from gateway.logs import configure_logging  # noqa: E402
from gateway.messagelog.store.base import _encode  # noqa: E402
from gateway.opmon.writer import OpMonWriter  # noqa: E402
from gateway.ops.metrics import ServerMetrics  # noqa: E402
from gateway.protocol import rest  # noqa: E402
from gateway.protocol import signatures as signing  # noqa: E402
from gateway.protocol.replay import ReplayCache  # noqa: E402
from gateway.proxy import client_proxy, observe, server_proxy  # noqa: E402
from gateway.proxy.common import _both, header_pairs, split_target  # noqa: E402
from gateway.settings import LoggingSettings  # noqa: E402
from gateway.trust.certprofile import build_csr  # noqa: E402
from gateway.trust.keys import generate_private_key  # noqa: E402
from gateway.trust.ocsp import build_request  # noqa: E402

NOW = datetime.now(UTC).replace(microsecond=0)
SERVICE = ServiceId.parse("DEV/GOV/1002/registry/bench")
CLIENT_TEXT = "DEV/GOV/1001/consumer"
TARGET = f"/r1/{SERVICE}/items?limit=18"
PAYLOAD = b'{"items": [' + b", ".join(b'{"id": %d, "name": "record %04d", "pad": "xxxxxxxxxxxxxxxxxxxx"}' % (i, i)
                                        for i in range(18)) + b"]}"
CLIENT_HEADERS = tuple((n.encode(), v.encode()) for n, v in [
    ("Host", "127.0.0.1:8080"), ("User-Agent", "loadgen"), ("Accept", "application/json"),
    ("X-Road-Client", CLIENT_TEXT), ("X-Road-Id", "bench-message-1"),
])
SERVICE_HEADERS = ((b"Content-Type", b"application/json; charset=utf-8"), (b"Content-Length", b"%d" % len(PAYLOAD)),
                   (b"Date", b"Thu, 03 Dec 2026 09:00:00 GMT"), (b"Server", b"Python/3.11 aiohttp/3.14"))


def _party(ca: DevCA, member: str) -> tuple[signing.KeySigner, bytes]:
    key = generate_private_key("ec-p256")
    ident = MemberId.parse(member)
    cert = ca.issue(build_csr(key, ident, kind="sign"), kind="sign", expected_identity=ident, now=NOW)
    return signing.KeySigner(key=key, cert=cert), respond(build_request(cert, ca.ca_cert), ca.ocsp_state(), NOW)


class _Clock:
    """A clock that moves a microsecond per call, as the servers' clocks move."""

    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> datetime:
        self.t += timedelta(microseconds=1)
        return self.t


class _Conf:
    def subsystem_exists(self, _subsystem: object) -> bool:
        return True


class _NullStore:
    async def insert(self, _batch: object) -> None:
        return None


def _context(origin: str, signer: signing.KeySigner, ocsp: bytes, client: object) -> Any:
    """What :mod:`gateway.proxy.observe` and the record need of a :class:`~gateway.proxy.context.ProxyContext`."""
    metrics = ServerMetrics()
    ctx = SimpleNamespace(
        origin=origin, clock=_Clock(), metrics=metrics, exchange_log=True, body_logging=True,
        snapshot=SimpleNamespace(clients={client}), globalconf=SimpleNamespace(current=_Conf()),
        signer=signer, sign_cert_der=signer.cert.public_bytes(Encoding.DER), ocsp=ocsp,
    )
    ctx.opmon = OpMonWriter(_NullStore(), max_queue=10**9, max_batch=100, retention_days=7,  # type: ignore[arg-type]
                            clock=ctx.clock, on_drop=metrics.opmon_records_dropped)
    return ctx


class Bench:
    def __init__(self) -> None:
        ca = DevCA.create(name="Bench CA", now=NOW)
        consumer, consumer_ocsp = _party(ca, "DEV/GOV/1001")
        provider, provider_ocsp = _party(ca, "DEV/GOV/1002")
        by_id = {signing.cert_keyid(c): c for c in (consumer.cert, provider.cert)}

        def resolve(keyid: str, _cert_der: bytes, _ocsp_der: bytes, /) -> x509.Certificate:
            return by_id[keyid]

        self.resolve = resolve
        client = parse_client(CLIENT_TEXT)
        self.ss1 = _context("DEV/GOV/1001/ss1", consumer, consumer_ocsp, client)
        self.ss2 = _context("DEV/GOV/1002/ss2", provider, provider_ocsp, client)
        self.replay = ReplayCache(window_seconds=600, max_entries=10**7)

    async def exchange(self) -> None:
        ss1 = self.ss1
        # ---- ss1, client_proxy.handle_rest and _signed_exchange
        ex1 = observe.begin(ss1, "client", "GET")
        now = ss1.clock()
        raw_path, raw_query = split_target(TARGET)
        target = rest.parse_target("GET", raw_path, raw_query, max_uri_bytes=8192)
        pairs = header_pairs(CLIENT_HEADERS)
        h = rest.parse_request_headers(pairs, instance="DEV")
        structlog.contextvars.bind_contextvars(message_id=h.message_id, client=str(h.client),
                                               service=str(target.service))
        observe.identified(client=h.client, service=target.service, message_id=h.message_id)
        body_256, body_512 = _both(b"")
        request_id = rest.uuid4_text()
        observe.assigned(request_id)
        xroad = client_proxy._xroad_headers(h, target.service, request_id)
        out_headers = rest.end_to_end_headers(pairs, also_skip=client_proxy._DROP_FROM_CLIENT) + xroad
        header_part = rest.request_header_part(target.method, target.raw_path, target.raw_query, out_headers)
        expected_hash = rest.request_hash(header_part, body_512)
        digest = signing.content_digest_header(body_256)
        created = int(now.timestamp())
        covered = {name: value for name, value in xroad}
        covered[signing.H_CONTENT_DIGEST] = digest
        signed = await signing.sign_request_async(
            method=target.method, path=target.raw_path, query=target.raw_query, headers=covered,
            signer=ss1.signer, created=created, ocsp=ss1.ocsp)
        send_headers = [*out_headers, (signing.H_CONTENT_DIGEST, digest), *signed.headers.items()]
        record = client_proxy._record(
            ss1, kind="request", h=h, service=target.service, request_id=request_id, created=created,
            method=target.method, target=TARGET, status=None, base=signed.signature_base,
            sig_input=signed.headers[signing.H_SIGNATURE_INPUT], sig=signed.headers[signing.H_SIGNATURE],
            cert_der=ss1.sign_cert_der, ocsp_der=ss1.ocsp, digest=digest, body=b"", body_logging=True)
        _encode(record), record.blobs()
        observe.sent("DEV/GOV/1002/ss2")
        wire = [(n.encode(), v.encode()) for n, v in send_headers]  # what the peer client writes, and ss2 reads

        # ---- ss2, server_proxy._handle and _answer: another process there; here a task of its own, with a
        # context of its own (what ss1 bound for its log lines is not ss2's)
        wire2 = await asyncio.create_task(self._provider(wire), context=contextvars.Context())

        # ---- ss1, client_proxy._response
        observe.received()
        resp_pairs1 = header_pairs(wire2)
        f1 = signing.fields_from_pairs(resp_pairs1)
        verified1 = signing.verify_response(
            status=200, headers=f1, request_signature=signed.signature, now=ss1.clock(), max_skew_seconds=60,
            resolve_cert=self.resolve)
        signing.verify_content_digest(f1.get(signing.H_CONTENT_DIGEST), hashlib.sha256(PAYLOAD).digest())
        expected = {rest.H_ID: h.message_id, rest.H_REQUEST_ID: request_id, rest.H_CLIENT: str(h.client),
                    rest.H_SERVICE: str(target.service), rest.H_REQUEST_HASH: expected_hash}
        for name, value in expected.items():
            if f1.get(name) != value:
                raise AssertionError(f"bench: response header {name} is {f1.get(name)!r}, expected {value!r}")
        rec1 = client_proxy._record(
            ss1, kind="response", h=h, service=target.service, request_id=request_id, created=verified1.created,
            method=target.method, target=TARGET, status=200, base=verified1.signature_base,
            sig_input=f1[signing.H_SIGNATURE_INPUT], sig=f1[signing.H_SIGNATURE], cert_der=verified1.cert_der,
            ocsp_der=verified1.ocsp_der, digest=f1[signing.H_CONTENT_DIGEST], body=PAYLOAD, body_logging=True)
        _encode(rec1), rec1.blobs()
        names = client_proxy._RESPONSE_NAMES
        out1 = [(names.get(n.lower(), n), v)
                for n, v in rest.end_to_end_headers(resp_pairs1, also_skip=client_proxy._DROP_FROM_RESPONSE)]
        out1.extend((names[n], v) for n, v in expected.items())
        structlog.contextvars.unbind_contextvars("message_id", "client", "service")
        resp1 = server_proxy.http.Response(status=200, headers=out1, body=PAYLOAD)
        observe.exchange_done(ss1, ex1, resp1, labels=observe.client_labels(ss1, h.client, target.service),
                              request_bytes=0)

    async def _provider(self, wire: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        ss2 = self.ss2
        ex2 = observe.begin(ss2, "server", "GET")
        now2 = ss2.clock()
        observe.identified(peer_server="DEV/GOV/1001/ss1")
        raw_path2, raw_query2 = split_target(TARGET)
        target2 = rest.parse_target("GET", raw_path2, raw_query2, max_uri_bytes=8192)
        pairs2 = header_pairs(wire)
        fields = signing.fields_from_pairs(pairs2)
        client = server_proxy._parse_client(fields[rest.H_CLIENT])
        observe.identified(client=client, service=target2.service)
        verified = signing.verify_request(
            method=target2.method, path=target2.raw_path, query=target2.raw_query, headers=fields, now=now2,
            max_skew_seconds=60, resolve_cert=self.resolve)
        member_of(client)
        rid = fields[rest.H_REQUEST_ID]
        observe.assigned(rid)
        observe.identified(message_id=fields[rest.H_ID])
        self.replay.check_and_add(rid, verified.created, now2)
        b256, b512 = _both(b"")
        signing.verify_content_digest(fields.get(signing.H_CONTENT_DIGEST), b256)
        message_id = fields[rest.H_ID]
        user_id, issue = fields.get(rest.H_USER_ID), fields.get(rest.H_ISSUE)

        def record2(kind: Any, created: int, status: int | None, base: bytes, sig_input: str, sig: str,
                    cert_der: bytes, ocsp_der: bytes, digest: str, data: bytes | None) -> Any:
            return server_proxy.LogRecord(
                origin=ss2.origin, kind=kind, side="server", message_id=message_id, request_id=rid, client=client,
                service=target2.service, user_id=user_id, issue=issue,
                created=datetime.fromtimestamp(created, UTC), method=target2.method, path=TARGET, status=status,
                signature_base=base, signature_input=sig_input, signature=sig, signing_cert=cert_der,
                ocsp_response=ocsp_der, body_digest=digest, body=data)

        req_rec = record2("request", verified.created, None, verified.signature_base,
                          fields[signing.H_SIGNATURE_INPUT], fields[signing.H_SIGNATURE], verified.cert_der,
                          verified.ocsp_der, fields[signing.H_CONTENT_DIGEST], b"")
        _encode(req_rec), req_rec.blobs()
        request_hash = rest.request_hash(
            rest.request_header_part(target2.method, target2.raw_path, target2.raw_query, pairs2), b512)
        rest.normalise_path(target2.service_path) if target2.service_path else ""
        rest.end_to_end_headers(pairs2, also_skip=server_proxy._DROP_TO_SERVICE)
        observe.sent()
        resp_pairs = header_pairs(SERVICE_HEADERS)
        observe.received()
        rdigest = signing.content_digest_header(hashlib.sha256(PAYLOAD).digest())
        rx = {rest.H_CLIENT: str(client), rest.H_SERVICE: str(target2.service), rest.H_ID: message_id,
              rest.H_REQUEST_ID: rid, rest.H_REQUEST_HASH: request_hash, signing.H_CONTENT_DIGEST: rdigest}
        passed = rest.end_to_end_headers(resp_pairs, also_skip=server_proxy._DROP_FROM_SERVICE)
        for name, value in passed:
            lname = name.lower()
            if lname.startswith("x-road-"):
                rx[lname] = value
        created2 = int(ss2.clock().timestamp())
        rsigned = await signing.sign_response_async(
            status=200, headers=rx, request_signature=verified.signature, signer=ss2.signer, created=created2,
            ocsp=ss2.ocsp)
        resp_rec = record2("response", created2, 200, rsigned.signature_base,
                           rsigned.headers[signing.H_SIGNATURE_INPUT], rsigned.headers[signing.H_SIGNATURE],
                           ss2.sign_cert_der, ss2.ocsp, rdigest, PAYLOAD)
        _encode(resp_rec), resp_rec.blobs()
        out2 = [(n, v) for n, v in passed if not n.lower().startswith("x-road-")]
        out2.extend(rx.items())
        out2.extend(rsigned.headers.items())
        resp2 = server_proxy.http.Response(status=200, headers=out2, body=PAYLOAD)
        observe.exchange_done(ss2, ex2, resp2, labels=observe.server_labels(resp2.headers), request_bytes=0)
        wire2 = [(n.encode(), v.encode()) for n, v in out2]
        return wire2

    def drain(self) -> None:
        for ctx in (self.ss1, self.ss2):
            if ctx.opmon is not None:
                ctx.opmon._queue.clear()


async def _run(bench: Bench, n: int) -> None:
    for i in range(n):
        await bench.exchange()
        if i % 512 == 511:
            bench.drain()
    bench.drain()


def _setup_logging(path: str) -> None:
    configure_logging(LoggingSettings(format="json", level="info"))
    sys.stderr = open(path, "w", encoding="utf-8")


def measure(args: argparse.Namespace) -> None:
    bench = Bench()
    with tempfile.TemporaryDirectory() as tmp:
        real_stderr = sys.stderr
        _setup_logging(os.path.join(tmp, "log.json"))
        try:
            asyncio.run(_run(bench, 50))  # warm caches
            rounds = []
            for _ in range(args.rounds):
                t0 = time.process_time()
                asyncio.run(_run(bench, args.exchanges))
                rounds.append((time.process_time() - t0) / args.exchanges * 1e6)
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
                asyncio.run(_run(bench, args.exchanges))
                prof.disable()
        finally:
            sys.stderr.close()
            sys.stderr = real_stderr
    print(f"CPU per exchange (both servers), median of {args.rounds} x {args.exchanges}: "
          f"{statistics.median(rounds):.1f} us  (rounds: {' '.join(f'{r:.1f}' for r in rounds)})")
    if args.profile:
        pstats.Stats(prof).sort_stats("tottime").print_stats(35)


def _callgrind_total(n: int, tmp: str) -> int:
    out = os.path.join(tmp, f"cg.{n}")
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
         "--_child", str(n)], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"(?:summary|totals): (\d+)", line)
            if m:
                return int(m.group(1))
    raise SystemExit(f"no total in {out}")


def callgrind(args: argparse.Namespace) -> None:
    n = args.exchanges
    with tempfile.TemporaryDirectory() as tmp:
        small, big = _callgrind_total(n, tmp), _callgrind_total(2 * n, tmp)
    print(f"instructions per exchange (both servers), ({big} - {small}) / {n}: {(big - small) / n:,.0f}")


def child(n: int) -> None:
    bench = Bench()
    with tempfile.TemporaryDirectory() as tmp:
        _setup_logging(os.path.join(tmp, "log.json"))
        asyncio.run(_run(bench, 20 + n))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exchanges", type=int, default=None, help="exchanges per round (3000; 200 with --callgrind)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--callgrind", action="store_true", help="instructions per exchange, under valgrind")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one round")
    parser.add_argument("--_child", type=int, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a._child is not None:
        child(a._child)
    elif a.callgrind:
        a.exchanges = a.exchanges or 200
        callgrind(a)
    else:
        a.exchanges = a.exchanges or 3000
        measure(a)
