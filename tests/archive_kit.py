"""Properly signed synthetic message logs and archives, for the archive tests and ``bench/logverify.py``.

A :class:`LogWorld` is a development CA (signing certificates for two members, their OCSP responses, a TSA),
a global configuration that trusts that CA and TSA, signed under an anchor, and the signers. It makes records
the way the proxies do (:mod:`gateway.protocol.signatures` and :class:`~gateway.messagelog.record.LogRecord`), signed
checkpoints with real timestamp tokens, and archives with :class:`~gateway.messagelog.archive.ArchiveWriter`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from globalconf_sim import GlobalConfSimulator
from pkihelpers import IssuedCert, ThrowawayPki, make_pki

from gateway.globalconf.anchor import Anchor
from gateway.globalconf.model import cert_to_pem
from gateway.identifiers import MemberId, ServiceId, SubsystemId
from gateway.messagelog import checkpoint as cp
from gateway.messagelog.archive import ArchiveWriter
from gateway.messagelog.merkle import MerkleTree, leaf_hash
from gateway.messagelog.record import LogRecord, base_template, blob_name, blob_refs, rebuild_base
from gateway.protocol import signatures
from gateway.trust import timestamp

CONSUMER = MemberId.parse("DEV/GOV/1001")
PROVIDER = MemberId.parse("DEV/GOV/1002")
CLIENT = SubsystemId.parse("DEV/GOV/1001/consumer")
SERVICE = ServiceId.parse("DEV/GOV/1002/registry/persons")
ORIGIN = "DEV/GOV/1001/ss1"
_DER = Encoding.DER


@dataclass
class LogWorld:
    pki: ThrowawayPki
    sim: GlobalConfSimulator
    envelope: bytes
    anchor: Anchor
    consumer: IssuedCert
    provider: IssuedCert
    consumer_ocsp: bytes
    provider_ocsp: bytes
    now: datetime

    @property
    def consumer_signer(self) -> signatures.KeySigner:
        return signatures.KeySigner(key=self.consumer.key, cert=self.consumer.cert)

    @property
    def provider_signer(self) -> signatures.KeySigner:
        return signatures.KeySigner(key=self.provider.key, cert=self.provider.cert)

    @property
    def blobs(self) -> dict[str, bytes]:
        """The blobs that the world's records name (both parties' certificates and OCSP responses), by name."""
        ders = (self.consumer.cert.public_bytes(_DER), self.provider.cert.public_bytes(_DER), self.consumer_ocsp,
                self.provider_ocsp)
        return {blob_name(d): d for d in ders}


def make_world(directory: Path, *, now: datetime | None = None) -> LogWorld:
    now = now or datetime.now(UTC).replace(microsecond=0)
    pki = make_pki(directory / "pki", now=now - timedelta(days=1))
    sim = GlobalConfSimulator(now=now - timedelta(minutes=1), validity=timedelta(days=1))
    sim.content["certificate_authorities"] = [
        {"name": "Test CA", "certificate": cert_to_pem(pki.ca_cert), "ocsp_urls": ["http://127.0.0.1:8888"]},
    ]
    sim.content["timestamping_authorities"] = [
        {"name": "Test TSA", "url": "http://127.0.0.1:8889", "certificate": cert_to_pem(pki.tsa_cert)},
    ]
    envelope = sim.publish()
    consumer = pki.issue_sign(CONSUMER, now=now - timedelta(days=1))
    provider = pki.issue_sign(PROVIDER, now=now - timedelta(days=1))
    return LogWorld(
        pki=pki, sim=sim, envelope=envelope, anchor=sim.anchor(), consumer=consumer, provider=provider,
        consumer_ocsp=pki.ocsp_response(consumer, now=now - timedelta(minutes=5)),
        provider_ocsp=pki.ocsp_response(provider, now=now - timedelta(minutes=5)),
        now=now,
    )


def exchange_records(
    world: LogWorld, *, created: datetime, origin: str = ORIGIN, side: str = "client", body: bytes = b'{"id":1}',
    message_id: str | None = None, request_id: str | None = None, user_id: str | None = "EE12345678901",
) -> tuple[LogRecord, LogRecord]:
    """The request and response records of one exchange, as one side's proxy logs them."""
    ts = int(created.timestamp())
    message_id = message_id or f"DEV-{uuid.uuid4()}"
    request_id = request_id or str(uuid.uuid4())
    req_digest = signatures.content_digest_header(hashlib.sha256(b"").digest())
    headers = {
        "x-road-client": str(CLIENT), "x-road-service": str(SERVICE), "x-road-id": message_id,
        "x-road-request-id": request_id, signatures.H_CONTENT_DIGEST: req_digest,
    }
    if user_id is not None:
        headers["x-road-userid"] = user_id
    req = signatures.sign_request(method="GET", path="/persons/1", query="full=true", headers=headers,
                               signer=world.consumer_signer, created=ts, ocsp=world.consumer_ocsp)
    resp_digest = signatures.content_digest_header(hashlib.sha256(body).digest())
    resp_headers = {
        "x-road-client": str(CLIENT), "x-road-service": str(SERVICE), "x-road-id": message_id,
        "x-road-request-id": request_id, "x-road-request-hash": "sha-256=:AAAA:",
        signatures.H_CONTENT_DIGEST: resp_digest,
    }
    resp = signatures.sign_response(status=200, headers=resp_headers, request_signature=req.signature,
                                 signer=world.provider_signer, created=ts, ocsp=world.provider_ocsp)
    common = {
        "origin": origin, "side": side, "message_id": message_id, "request_id": request_id, "client": CLIENT,
        "service": SERVICE, "user_id": user_id, "created": datetime.fromtimestamp(ts, UTC), "method": "GET",
        "path": "/persons/1?full=true",
    }
    request = LogRecord(
        kind="request", status=None, signature_base=req.signature_base,
        signature_input=req.headers[signatures.H_SIGNATURE_INPUT], signature=req.headers[signatures.H_SIGNATURE],
        signing_cert=world.consumer.cert.public_bytes(_DER), ocsp_response=world.consumer_ocsp,
        body_digest=req_digest, body=b"", **common,  # type: ignore[arg-type]
    )
    response = LogRecord(
        kind="response", status=200, signature_base=resp.signature_base,
        signature_input=resp.headers[signatures.H_SIGNATURE_INPUT], signature=resp.headers[signatures.H_SIGNATURE],
        signing_cert=world.provider.cert.public_bytes(_DER), ocsp_response=world.provider_ocsp,
        body_digest=resp_digest, body=body, **common,  # type: ignore[arg-type]
    )
    return request, response


def make_log(world: LogWorld, exchanges: int, *, origin: str = ORIGIN, side: str = "client",
             start: datetime | None = None, per_second: int = 50) -> list[bytes]:
    """``2 * exchanges`` encoded records: request, response, request, ..."""
    start = start or world.now - timedelta(minutes=2)
    out: list[bytes] = []
    for i in range(exchanges):
        req, resp = exchange_records(world, created=start + timedelta(seconds=i // per_second), origin=origin,
                                     side=side)
        out += [req.encode(), resp.encode()]
    return out


def signed_checkpoint(world: LogWorld, leaves: Sequence[bytes], size: int, *, origin: str = ORIGIN,
                      signer: signatures.KeySigner | None = None, when: datetime | None = None) -> tuple[bytes, bytes]:
    """A checkpoint of the first ``size`` leaf hashes, signed by the origin owner, and its timestamp token."""
    tree = MerkleTree()
    tree.extend(leaves[:size])
    head = cp.Checkpoint(origin=cp.checkpoint_origin(origin), size=size, root_hash=tree.root())
    note = cp.sign_checkpoint(head, signer or world.consumer_signer)
    digest = hashlib.sha256(note).digest()
    resp = world.pki.timestamp_response(digest, now=when or world.now)
    token = timestamp.check_response(resp, data_hash=digest, tsa_cert=world.pki.tsa_cert).token_der
    return note, token


def write_archive(
    world: LogWorld, path: Path, records: Sequence[bytes], *, checkpoint_sizes: Sequence[int] | None = None,
    origin: str = ORIGIN, start: int = 0, all_records: Sequence[bytes] | None = None,
    blobs: dict[str, bytes] | None = None, cosign: Callable[[int, bytes], bytes | None] | None = None,
) -> Path:
    """An archive of ``records`` (seq ``start`` onwards); ``all_records`` is the whole log when ``start > 0``;
    the records' blobs from ``blobs`` (default: the world's); ``cosign(size, note)`` gives a checkpoint's
    cosignature lines."""
    log = list(all_records if all_records is not None else records)
    leaves = [leaf_hash(r) for r in log]
    prefix = MerkleTree()
    prefix.extend(leaves[:start])
    end = start + len(records)
    writer = ArchiveWriter(path, origin=origin, start=start, prefix=prefix.frontier or [],
                           exported_at=world.now, selection={"start": start, "end": end})
    writer.add_records(zip(records, leaves[start:end], strict=True))
    for size in checkpoint_sizes if checkpoint_sizes is not None else (end,):
        note, token = signed_checkpoint(world, leaves, size, origin=origin)
        writer.add_checkpoint(note, token, None if cosign is None else cosign(size, note))
    writer.add_globalconf(world.envelope)
    blobs = world.blobs if blobs is None else blobs
    for record in records:  # the blobs the records name, as gateway log export adds them
        cert, ocsp = blob_refs(record)
        if cert in blobs:
            writer.add_certificate(blobs[cert])
        if ocsp in blobs:
            writer.add_ocsp_response(blobs[ocsp])
    writer.add_certificate(world.consumer.cert.public_bytes(_DER))  # the checkpoints' signer
    writer.close()
    return path


# ---- the signature base of a record's JSON object (its template and blobs: docs/messagelog.md section 2) ------


def base_sources(obj: dict[str, Any], blobs: dict[str, bytes]) -> tuple[str | None, ...]:
    """The values of the template sources (record.BASE_SOURCES) of a record's JSON object."""
    def b64(name: str) -> str | None:
        der = blobs.get(obj[name])
        return None if der is None else base64.b64encode(der).decode()

    _, sep, params = obj["signature_input"].partition("=")
    return (obj["body_digest"], obj["client"], obj["service"], obj["message_id"], obj["request_id"], obj["user_id"],
            obj["issue"], b64("signing_cert"), b64("ocsp_response"), params if sep else None)


def base_text(obj: dict[str, Any], blobs: dict[str, bytes]) -> str:
    """The signature base that a record's JSON object stands for."""
    return rebuild_base(obj["signature_base"], base_sources(obj, blobs))


def set_base(obj: dict[str, Any], text: str, blobs: dict[str, bytes]) -> None:
    """Store ``text`` as the signature base of a record's JSON object (its template, as the encoder makes it)."""
    obj["signature_base"] = base_template(text, base_sources(obj, blobs))



# ---- tampering with archives (the tests' adversary) ---------------------------------------------------------


def rewrite(src: Path, dst: Path, edits: dict[str, Callable[[bytes], bytes | None]]) -> Path:
    """Copy an archive, passing the named members through ``edits`` (an edit returning None drops the member)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            edit = edits.get(info.filename)
            if edit is not None:
                new = edit(data)
                if new is None:
                    continue
                data = new
            zout.writestr(info.filename, data)
    return dst


def lines_edit(fn: Callable[[list[bytes]], list[bytes]]) -> Callable[[bytes], bytes]:
    """An edit of a records member, line by line."""
    return lambda data: b"".join(line + b"\n" for line in fn(data.split(b"\n")[:-1]))


def strip_timestamp(number: int) -> dict[str, Callable[[bytes], bytes | None]]:
    """Edits that remove checkpoint ``number``'s token and its mention in the manifest."""
    from gateway.trust.canonical import canonical_bytes

    def manifest(data: bytes) -> bytes:
        m = json.loads(data)
        m["checkpoints"][number - 1]["timestamp"] = None
        return canonical_bytes(m)

    return {f"checkpoints/{number:06d}.tst": lambda _: None, "manifest.json": manifest}


def resign_note(note: bytes, signer: signatures.KeySigner) -> bytes:
    """The same checkpoint, signed by another key under the same key name."""
    head = cp.parse_checkpoint(cp.parse_note(note).text)
    return cp.sign_checkpoint(head, signer)


def stranger_signer() -> signatures.KeySigner:
    """A signer whose key nobody trusts."""
    from globalconf_sim import make_key_pair

    key, cert = make_key_pair("stranger", now=datetime.now(UTC))
    return signatures.KeySigner(key=key, cert=cert)
