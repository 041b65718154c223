"""Micro-benchmarks of the pure functions an exchange runs, per call, with realistic inputs.

    .venv/bin/python bench/micro.py [--number 2000] [--filter NAME]

A development CA (in memory) issues a P-256 signing certificate for each side and answers OCSP for it, so
the stapled certificate, the OCSP response and the signature bases have the sizes they have in production.
Each line is the median of several rounds of ``--number`` calls, in microseconds of CPU (thread time) per
call, so that other load on the machine disturbs the figures less. Per exchange, each
security server signs once, verifies once and builds and encodes two log records. It asserts nothing; it is
never part of the test run.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402

from gateway.dev.pki.ca import DevCA  # noqa: E402
from gateway.dev.pki.ocsp_responder import respond  # noqa: E402
from gateway.identifiers import MemberId, ServiceId, SubsystemId, parse_client  # noqa: E402
from gateway.messagelog.merkle import leaf_hash  # noqa: E402
from gateway.messagelog.record import LogRecord  # noqa: E402
from gateway.protocol import rest  # noqa: E402
from gateway.protocol import signatures as signing  # noqa: E402
from gateway.proxy.common import header_pairs  # noqa: E402
from gateway.trust.certprofile import build_csr  # noqa: E402
from gateway.trust.keys import generate_private_key  # noqa: E402
from gateway.trust.ocsp import build_request  # noqa: E402

NOW = datetime.now(UTC).replace(microsecond=0)
CREATED = int(NOW.timestamp())
CLIENT = SubsystemId.parse("DEV/GOV/1001/consumer")
SERVICE = ServiceId.parse("DEV/GOV/1002/registry/bench")
PATH = f"/r1/{SERVICE}/items"
BODY = b'{"items": [' + b", ".join(b'{"id": %d, "name": "record %04d", "pad": "xxxxxxxxxxxxxxxxxxxx"}' % (i, i)
                                     for i in range(18)) + b"]}"


def party(ca: DevCA, member: str) -> tuple[signing.KeySigner, bytes]:
    key = generate_private_key("ec-p256")
    ident = MemberId.parse(member)
    cert = ca.issue(build_csr(key, ident, kind="sign"), kind="sign", expected_identity=ident, now=NOW)
    ocsp = respond(build_request(cert, ca.ca_cert), ca.ocsp_state(), NOW)
    return signing.KeySigner(key=key, cert=cert), ocsp


def resolver(*certs: x509.Certificate) -> signing.CertResolver:
    by_id = {signing.cert_keyid(c): c for c in certs}

    def resolve(keyid: str, _cert_der: bytes, _ocsp_der: bytes, /) -> x509.Certificate:
        return by_id[keyid]

    return resolve


def main(args: argparse.Namespace) -> None:
    ca = DevCA.create(name="Bench CA", now=NOW)
    consumer, consumer_ocsp = party(ca, "DEV/GOV/1001")
    provider, provider_ocsp = party(ca, "DEV/GOV/1002")
    resolve = resolver(consumer.cert, provider.cert)
    digest = signing.content_digest_header(hashlib.sha256(BODY).digest())
    request_id = str(uuid.uuid4())
    xroad = {"x-road-client": str(CLIENT), "x-road-service": str(SERVICE), "x-road-id": "DEV-" + request_id,
             "x-road-request-id": request_id, signing.H_CONTENT_DIGEST: digest}
    raw_headers = tuple((n.encode(), v.encode()) for n, v in [
        ("Host", "127.0.0.1:8080"), ("User-Agent", "Python/3.11 aiohttp/3.14"), ("Accept", "application/json"),
        ("Accept-Encoding", "gzip, deflate"), ("X-Road-Client", str(CLIENT)),
    ])
    client_pairs = header_pairs(raw_headers)

    def sign_req() -> signing.SignedMessage:
        return signing.sign_request(method="GET", path=PATH, query=None, headers=xroad, signer=consumer,
                                    created=CREATED, ocsp=consumer_ocsp)

    signed_req = sign_req()
    req_fields = signing.fields_from_pairs(
        [*client_pairs[:4], *xroad.items(), *signed_req.headers.items()]
    )

    def verify_req() -> signing.VerifiedSignature:
        return signing.verify_request(method="GET", path=PATH, query=None, headers=req_fields, now=NOW,
                                      max_skew_seconds=60, resolve_cert=resolve)

    resp_xroad = dict(xroad, **{"x-road-request-hash": "abc"})

    def sign_resp() -> signing.SignedMessage:
        return signing.sign_response(status=200, headers=resp_xroad, request_signature=signed_req.signature,
                                     signer=provider, created=CREATED, ocsp=provider_ocsp)

    signed_resp = sign_resp()
    resp_fields = signing.fields_from_pairs([("Content-Type", "application/json"), *resp_xroad.items(),
                                             *signed_resp.headers.items()])

    def verify_resp() -> signing.VerifiedSignature:
        return signing.verify_response(status=200, headers=resp_fields, request_signature=signed_req.signature,
                                       now=NOW, max_skew_seconds=60, resolve_cert=resolve)

    consumer_der = consumer.cert.public_bytes(Encoding.DER)

    def record() -> LogRecord:
        return LogRecord(
            origin="DEV/GOV/1001/ss1", kind="request", side="client", message_id=xroad["x-road-id"],
            request_id=request_id, client=CLIENT, service=SERVICE, user_id=None, issue=None,
            created=datetime.fromtimestamp(CREATED, UTC), method="GET", path=PATH, status=None,
            signature_base=signed_req.signature_base,
            signature_input=signed_req.headers[signing.H_SIGNATURE_INPUT],
            signature=signed_req.headers[signing.H_SIGNATURE], signing_cert=consumer_der, ocsp_response=consumer_ocsp,
            body_digest=digest, body=BODY,
        )

    rec = record()

    def encode() -> bytes:
        data = rec.encode()
        leaf_hash(data)
        return data

    out_headers = [*rest.end_to_end_headers(client_pairs[:4]), *xroad.items()]

    cases: dict[str, Callable[[], object]] = {
        "sign_request": sign_req,
        "verify_request": verify_req,
        "sign_response": sign_resp,
        "verify_response": verify_resp,
        "LogRecord(...)": record,
        "LogRecord.encode + leaf_hash": encode,
        "header_pairs": lambda: header_pairs(raw_headers),
        "parse_target": lambda: rest.parse_target("GET", PATH, None),
        "parse_request_headers": lambda: rest.parse_request_headers(client_pairs, instance="DEV"),
        "end_to_end_headers": lambda: rest.end_to_end_headers(client_pairs),
        "request_header_part + hash": lambda: rest.request_hash(
            rest.request_header_part("GET", PATH, None, out_headers), None),
        "fields_from_pairs (request)": lambda: signing.fields_from_pairs(req_fields.items()),
        "verify_content_digest": lambda: signing.verify_content_digest(digest, hashlib.sha256(BODY).digest()),
        "str(ServiceId)": lambda: str(SERVICE),
        "ServiceId.subsystem": lambda: SERVICE.subsystem,
        "parse_client": lambda: parse_client(str(CLIENT)),
        "str(uuid.uuid4())": lambda: str(uuid.uuid4()),
        "rest.uuid4_text": rest.uuid4_text,
    }
    print(f"{'function':32} {'us/call':>9}")
    for name, fn in cases.items():
        if args.filter and args.filter.lower() not in name.lower():
            continue
        rounds = []
        for _ in range(5):
            t0 = time.thread_time()
            for _ in range(args.number):
                fn()
            rounds.append((time.thread_time() - t0) / args.number * 1e6)
        print(f"{name:32} {statistics.median(rounds):9.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=2000, help="calls per round")
    parser.add_argument("--filter", help="only cases whose name contains this")
    main(parser.parse_args())
