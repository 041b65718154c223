"""Step 2 of the archive verification: the signed checkpoints (pure).

Each signed note must parse, name this log's origin, carry an RFC 3161 timestamp token over SHA-256 of the
note bytes by a TSA of the configuration, and be signed by a signing key of the member that owns the log (a
certificate in the archive or stapled in its records, with a key ID that the note names), whose certificate
chains to a trusted CA, names that member and has a good OCSP status at the timestamp.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.x509 import ocsp as x509_ocsp

from gateway.errors import GatewayError, TrustError
from gateway.globalconf import peertrust
from gateway.identifiers import MemberId
from gateway.messagelog import checkpoint as cp
from gateway.messagelog.archive import CheckpointData
from gateway.messagelog.origins import parse_origin
from gateway.messagelog.verify.report import Finding
from gateway.messagelog.verify.trustset import TrustSet
from gateway.trust import timestamp
from gateway.trust.ocsp import CLOCK_SKEW


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedCheckpoint:
    number: int  # 1-based, in archive order
    size: int
    root_hash: bytes
    gen_time: datetime


def _check_signer(
    cert_der: bytes, responses: Sequence[bytes], member: MemberId, t: datetime, trust: TrustSet
) -> None:
    """The checkpoint signer's certificate at ``t``: trusted, for ``member``, valid, and not revoked.

    An OCSP response fresh at ``t`` is best; a later ``good`` one also shows the key was not revoked at ``t``.

    Raises:
        TrustError: no response makes the certificate valid at ``t``.
    """
    _, conf = trust.at(t)
    errors: list[str] = []
    for der in responses:
        try:
            single = x509_ocsp.load_der_ocsp_response(der)
            this_update = single.this_update_utc
        except ValueError:
            continue
        when = t if this_update <= t + CLOCK_SKEW else this_update
        try:
            cert = peertrust.check_signing_cert(cert_der, der, conf, member=member, now=when)
        except TrustError as e:
            errors.append(e.message)
            continue
        if cert.not_valid_before_utc <= t <= cert.not_valid_after_utc:
            return
        errors.append(f"certificate is not valid at {t.isoformat()}")
    if not errors:
        errors.append("the archive holds no OCSP response for it")
    raise TrustError("; ".join(dict.fromkeys(errors)))


def verify_checkpoints(
    checkpoints: Sequence[CheckpointData], origin: str, trust: TrustSet,
    certs: Iterable[bytes], pairs: Iterable[tuple[bytes, bytes]], ocsp_responses: Iterable[bytes],
    *, checkpoint_origin: str | None = None, owner: MemberId | None = None,
) -> tuple[list[VerifiedCheckpoint], list[Finding]]:
    """Step 2: each checkpoint's origin, timestamp, signature and signer.

    ``origin`` is a message-log origin; another log (the audit log, :mod:`gateway.admin.auditverify`) passes
    its checkpoint origin line and the member that owns it instead.
    """
    findings: list[Finding] = []
    verified: list[VerifiedCheckpoint] = []
    if checkpoint_origin is not None and owner is not None:
        expected_origin, member = checkpoint_origin, owner
    else:
        expected_origin = cp.checkpoint_origin(origin)
        try:
            member = parse_origin(origin).server.owner  # a worker's or node's origin names its server first
        except GatewayError as e:
            return [], [Finding(where="archive", problem="origin",
                                message=f"origin {origin!r} is not a log origin of a security server: {e.message}")]
    by_cert: dict[bytes, list[bytes]] = {}
    for c in certs:
        by_cert.setdefault(c, [])
    for c, o in pairs:
        by_cert.setdefault(c, []).append(o)
    for o in ocsp_responses:
        for c in by_cert:
            by_cert[c].append(o)
    loaded: list[tuple[bytes, x509.Certificate]] = []
    for c in by_cert:
        try:
            loaded.append((c, x509.load_der_x509_certificate(c)))
        except ValueError:
            continue
    for n, entry in enumerate(checkpoints, 1):
        where = f"checkpoint {n}"
        # (2a) a checkpoint of this log
        try:
            note = cp.parse_note(entry.note)
            head = cp.parse_checkpoint(note.text)
        except (TrustError, UnicodeDecodeError) as e:
            findings.append(Finding(where=where, problem="malformed", message=getattr(e, "message", str(e))))
            continue
        where = f"checkpoint {n} (size {head.size})"
        if head.origin != expected_origin:
            findings.append(Finding(where=where, problem="origin",
                                    message=f"origin line {head.origin!r} is not {expected_origin!r}"))
            continue
        # (2b) its timestamp: when it existed, said by a TSA of the configuration
        gen_time: datetime | None = None
        if entry.timestamp is None:
            findings.append(Finding(where=where, problem="timestamp",
                                    message="has no RFC 3161 timestamp token (missing or stripped)"))
        else:
            digest = hashlib.sha256(entry.note).digest()
            errors: list[str] = []
            for conf in reversed(trust.confs):
                for tsa in conf.timestamping_authorities:
                    try:
                        gen_time = timestamp.verify_token(entry.timestamp, digest, tsa.certificate).gen_time
                        break
                    except TrustError as e:
                        errors.append(e.message)
                if gen_time is not None:
                    break
            if gen_time is None:
                findings.append(Finding(
                    where=where, problem="timestamp",
                    message="the timestamp token does not verify with any TSA of the global configuration: "
                            + "; ".join(dict.fromkeys(errors)),
                ))
        # (2c) signed by a key of the member that owns the log
        ids = {s.key_id for s in note.signatures if s.key_name == head.origin}
        signer_der: bytes | None = None
        sig_errors: list[str] = []
        for der, cert in loaded:
            try:
                if cp.key_id(head.origin, cert) not in ids:
                    continue
                cp.verify_checkpoint(entry.note, cert, origin=expected_origin)
            except (TrustError, GatewayError) as e:
                sig_errors.append(e.message)
                continue
            signer_der = der
            break
        if signer_der is None:
            found = ", ".join(sorted(i.hex() for i in ids)) or "none"
            findings.append(Finding(
                where=where, problem="checkpoint-signature",
                message=f"not signed by any signing key of the log in the archive (signature key IDs for "
                        f"{head.origin}: {found})" + (f": {'; '.join(sig_errors)}" if sig_errors else ""),
            ))
            continue
        if gen_time is None:
            continue
        # (2d) the signer's certificate: trusted, the owner's, valid and not revoked at the timestamp
        try:
            _check_signer(signer_der, by_cert[signer_der], member, gen_time, trust)
        except TrustError as e:
            findings.append(Finding(where=where, problem="checkpoint-signer",
                                    message=f"signing certificate is not valid for {member}: {e.message}"))
            continue
        verified.append(VerifiedCheckpoint(number=n, size=head.size, root_hash=head.root_hash, gen_time=gen_time))
    return verified, findings


__all__ = ["VerifiedCheckpoint", "verify_checkpoints"]
