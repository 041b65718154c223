"""The evidence of one ``findUsage`` item, built and verified offline (pure).

docs/transparency.md section 5. An item's ``evidence`` object holds everything its verification needs besides
the federation's anchor:

- ``record``: the usage record's canonical encoding, base64: its leaf hash is recomputed from these bytes;
- ``blobs``: the certificates and OCSP responses the record and the checkpoint's signer need, base64 by their
  hex SHA-256;
- ``subject`` and ``salt`` (hex): the commitment ``SHA-256("gateway-usage-subject\\n" || salt || subject)`` must
  be one of the record's ``usage.subjects``;
- ``proof``: the c2sp.org/tlog-proof text: header, ``index N``, the RFC 9162 inclusion proof, a blank line and the
  signed checkpoint (the first timestamped one that covers the record: it shows when the record was logged);
- ``timestamp``: the checkpoint's RFC 3161 token, base64;
- ``globalConf``: signed global configurations (base64) that name the CA and the TSA; each must verify against
  the anchor.

:func:`verify_usage_item` checks it all and says where it fails; a :class:`UsageVerifier` checks many items,
verifying what they share (configurations, checkpoints) once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from gateway.errors import GatewayError, TrustError
from gateway.globalconf.anchor import Anchor
from gateway.identifiers import member_of
from gateway.messagelog import checkpoint as cp
from gateway.messagelog import merkle
from gateway.messagelog.archive import CheckpointData
from gateway.messagelog.record import LogRecord, decode, format_created
from gateway.messagelog.verify.checkpoints import VerifiedCheckpoint, verify_checkpoints
from gateway.messagelog.verify.report import Finding
from gateway.messagelog.verify.trustset import TrustSet, load_trust
from gateway.transparency import records as ur

PROOF_HEADER = "c2sp.org/tlog-proof@v1"
_V = TypeVar("_V")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def proof_text(index: int, hashes: Sequence[bytes], note: bytes) -> str:
    """The c2sp.org/tlog-proof text of leaf ``index``'s inclusion in the checkpoint ``note``."""
    lines = [PROOF_HEADER, f"index {index}", *(_b64(h) for h in hashes), ""]
    return "\n".join(lines) + "\n" + note.decode("utf-8")


@dataclass(frozen=True, slots=True)
class ParsedProof:
    index: int
    hashes: tuple[bytes, ...]
    note: bytes


def parse_proof(text: str) -> ParsedProof:
    """Raises: TrustError: not a c2sp.org/tlog-proof text."""
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise TrustError("proof: no blank line between the proof and the checkpoint")
    lines = head.split("\n")
    if lines[0] != PROOF_HEADER:
        raise TrustError(f"proof: the first line is not {PROOF_HEADER}")
    rest = lines[1:]
    if rest and rest[0].startswith("extra "):
        rest = rest[1:]
    if not rest or not rest[0].startswith("index ") or not rest[0][6:].isdigit():
        raise TrustError("proof: no 'index N' line")
    index = int(rest[0][6:])
    hashes = []
    for n, line in enumerate(rest[1:], 1):
        try:
            h = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError) as e:
            raise TrustError(f"proof: hash line {n} is not base64") from e
        if len(h) != merkle.HASH_SIZE:
            raise TrustError(f"proof: hash line {n} is not {merkle.HASH_SIZE} bytes")
        hashes.append(h)
    return ParsedProof(index=index, hashes=tuple(hashes), note=note.encode("utf-8"))


def build_evidence(
    *,
    origin: str,
    seq: int,
    encoded: bytes,
    blobs: Mapping[str, bytes],
    subject: str,
    salt: bytes,
    proof: Sequence[bytes] | None,
    note: bytes | None,
    timestamp: bytes | None,
    envelopes: Sequence[bytes],
) -> dict[str, Any]:
    """An item's ``evidence`` object; ``proof`` and ``note`` are ``None`` while no timestamped checkpoint covers
    the record yet (then ``proof`` is ``null``: not proven yet)."""
    return {
        "version": 1,
        "origin": origin,
        "index": seq,
        "record": _b64(encoded),
        "blobs": {name: _b64(data) for name, data in sorted(blobs.items())},
        "subject": subject,
        "salt": salt.hex(),
        "proof": None if proof is None or note is None else proof_text(seq, proof, note),
        "timestamp": None if timestamp is None else _b64(timestamp),
        "globalConf": [_b64(e) for e in envelopes],
    }


def action_of(record: LogRecord) -> str:
    """The item's ``action``: the service called, then the method and path (without the query)."""
    return f"{record.service} {record.method} {record.path or '/'}"


def item_fields(record: LogRecord, names: Mapping[str, str]) -> dict[str, Any]:
    """The fields of a ``findUsage`` item that come from its usage record (``names``: member names by
    member id text)."""
    ext = record.extensions
    client = record.client
    member = str(member_of(client))

    def text(key: str) -> str | None:
        v = ext.get(key)
        return v if isinstance(v, str) else None

    until = text(ur.EXT_EMBARGO)
    return {
        "logtime": rfc3339(record.created),
        "action": action_of(record),
        "receiverCode": client.member_code,
        "receiverName": names.get(member, ""),
        "receiverSystem": getattr(client, "subsystem_code", ""),
        "role": "access" if record.side == "client" else "disclosure",
        "messageId": record.message_id,
        "requestHash": text(ur.EXT_REQUEST_HASH) or "",
        "status": record.status,
        "purpose": text(ur.EXT_PURPOSE),
        "purposeText": text(ur.EXT_PURPOSE_TEXT),
        "legalBasis": text(ur.EXT_LEGAL_BASIS),
        "embargoUntil": until,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageVerdict:
    """The outcome for one item: ``proven`` only if every check passed; ``problems`` say where it fails."""

    proven: bool
    problems: tuple[str, ...] = ()
    logged_by: datetime | None = None  # the checkpoint's timestamp: the record existed by then
    notes: tuple[str, ...] = field(default=())


def _need(obj: Mapping[str, Any], name: str, tp: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(name)
    if not isinstance(value, tp) or isinstance(value, bool):
        raise TrustError(f"{where}: field {name} is missing or not of the right type")
    return value


def _unb64(value: str, where: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise TrustError(f"{where} is not base64") from e


CACHE_ENTRIES = 256  # verified configurations, checkpoints and blob kinds a verifier keeps (then starts afresh)


class UsageVerifier:
    """Verifies ``findUsage`` items against one anchor, checking what items share only once.

    The items of one answer or evidence file mostly share a few checkpoints and the same global configurations:
    the configurations' signatures and chains, the checkpoint's signature, its RFC 3161 token and its signer's
    certificate and OCSP response are verified once per distinct input (``load_trust`` per set of
    configurations; ``verify_checkpoints`` per origin, note, token, configurations and set of certificates and
    OCSP responses, all by SHA-256 of their bytes), and each item's own record, commitment, fields and inclusion
    proof every time. Both checks are pure functions of those bytes (no clock), so a remembered outcome is the
    one a fresh check would give, refusals included. At most :data:`CACHE_ENTRIES` outcomes of each kind are
    kept; a verifier may serve several threads (the portal's), which at worst check one thing twice.
    """

    def __init__(self, anchor: Anchor) -> None:
        self.anchor = anchor
        self._trust: dict[bytes, tuple[TrustSet | None, list[Finding]]] = {}
        self._checkpoints: dict[bytes, tuple[list[VerifiedCheckpoint], list[Finding]]] = {}
        self._is_cert: dict[bytes, bool] = {}
        self.checks = 0  # configuration sets and checkpoints verified (not remembered): for tests and benches

    def verify(self, item: Mapping[str, Any]) -> UsageVerdict:
        """Verify one ``findUsage`` item (its ``evidence`` and the fields shown beside it)."""
        try:
            return self._verify(item)
        except TrustError as e:
            return UsageVerdict(proven=False, problems=(e.message,))

    def _load_trust(self, envelopes: Sequence[bytes]) -> tuple[TrustSet | None, list[Finding]]:
        key = _digest(b"trust", *envelopes)
        found = self._trust.get(key)
        if found is None:
            found = load_trust(self.anchor, envelopes)
            self.checks += 1
            _remember(self._trust, key, found)
        return found

    def _verify_checkpoint(
        self, origin: str, note: bytes, stamp: bytes | None, envelopes: Sequence[bytes], trust: TrustSet,
        certs: Sequence[bytes], ocsps: Sequence[bytes],
    ) -> tuple[list[VerifiedCheckpoint], list[Finding]]:
        key = _digest(b"checkpoint", origin.encode(), note, b"" if stamp is None else b"1" + stamp,
                      _digest(b"trust", *envelopes), *sorted(_digest(b"cert", c) for c in certs),
                      *sorted(_digest(b"ocsp", o) for o in ocsps))
        found = self._checkpoints.get(key)
        if found is None:
            found = verify_checkpoints([CheckpointData(note=note, timestamp=stamp)], origin, trust, certs, [], ocsps)
            self.checks += 1
            _remember(self._checkpoints, key, found)
        return found

    def _cert(self, der: bytes) -> bool:
        key = hashlib.sha256(der).digest()
        found = self._is_cert.get(key)
        if found is None:
            found = _is_cert(der)
            _remember(self._is_cert, key, found)
        return found

    def _verify(self, item: Mapping[str, Any]) -> UsageVerdict:
        ev = item.get("evidence")
        if not isinstance(ev, Mapping):
            raise TrustError("evidence: missing")
        origin = _need(ev, "origin", str, "evidence")
        index = _need(ev, "index", int, "evidence")
        encoded = _unb64(_need(ev, "record", str, "evidence"), "evidence.record")
        raw_blobs = _need(ev, "blobs", dict, "evidence")
        blobs = {str(k): _unb64(v, f"evidence.blobs.{k}") for k, v in raw_blobs.items() if isinstance(v, str)}
        subject = _need(ev, "subject", str, "evidence")
        try:
            salt = bytes.fromhex(_need(ev, "salt", str, "evidence"))
        except ValueError as e:
            raise TrustError("evidence.salt is not hex") from e
        # (1) the record: a usage record of this origin, in its one encoding
        try:
            record = decode(encoded, blobs)
        except TrustError as e:
            raise TrustError(f"evidence.record: {e.message}") from e
        if record.kind != "usage" or record.origin != origin:
            raise TrustError("evidence.record: not a usage record of the evidence's origin")
        # (2) the subject is committed in it
        commitments = record.extensions.get(ur.EXT_SUBJECTS, ())
        if ur.commitment(salt, subject) not in (commitments if isinstance(commitments, tuple) else (commitments,)):
            raise TrustError("evidence.salt: the subject's commitment with this salt is not in the record")
        # (3) the item says what the record says
        problems = []
        for name, value in item_fields(record, {}).items():
            if name == "receiverName":
                continue
            if item.get(name) != value:
                problems.append(
                    f"item field {name} is {str(item.get(name))[:80]!r}, the record says {str(value)[:80]!r}"
                )
        try:
            # (4) the inclusion proof against the checkpoint
            text = ev.get("proof")
            if not isinstance(text, str):
                problems.append(
                    "evidence.proof: none yet (no timestamped checkpoint covered the record when it was read)"
                )
                return UsageVerdict(proven=False, problems=tuple(problems))
            parsed = parse_proof(text)
            if parsed.index != index:
                raise TrustError(f"evidence.proof: index {parsed.index} is not the evidence's index {index}")
            try:
                head = cp.parse_checkpoint(cp.parse_note(parsed.note).text)
            except TrustError as e:
                raise TrustError(f"evidence.proof: checkpoint: {e.message}") from e
            try:
                merkle.verify_inclusion(merkle.leaf_hash(encoded), index, head.size, parsed.hashes, head.root_hash)
            except TrustError as e:
                raise TrustError(
                    f"evidence.proof: the record is not leaf {index} of the checkpoint's tree: {e.message}"
                ) from e
            # (5) the checkpoint: signed by the log owner's key, timestamped by a TSA of a configuration of the anchor
            envelopes = [_unb64(e, "evidence.globalConf") for e in _need(ev, "globalConf", list, "evidence")]
            trust, findings = self._load_trust(envelopes)
            if trust is None:
                raise TrustError("evidence.globalConf: " + "; ".join(f.message for f in findings))
            token = ev.get("timestamp")
            stamp = None if not isinstance(token, str) else _unb64(token, "evidence.timestamp")
            certs = [d for d in blobs.values() if self._cert(d)]
            ocsps = [d for d in blobs.values() if not self._cert(d)]
            try:
                verified, cp_findings = self._verify_checkpoint(
                    origin, parsed.note, stamp, envelopes, trust, certs, ocsps
                )
            except GatewayError as e:
                raise TrustError(f"evidence checkpoint: {e.message}") from e
            if cp_findings:
                problems.extend(f"evidence checkpoint: {f.message}" for f in cp_findings)
                return UsageVerdict(proven=False, problems=tuple(problems))
            logged_by = verified[0].gen_time
            notes = []
            until = record.extensions.get(ur.EXT_EMBARGO)
            if isinstance(until, str):
                if logged_by >= datetime.fromisoformat(until.replace("Z", "+00:00")):
                    problems.append(
                        f"embargoed record logged only by {format_created(logged_by)}, "
                        f"not before its embargo ended ({until})"
                    )
                else:
                    notes.append(f"embargoed until {until}; logged by {format_created(logged_by)}")
            return UsageVerdict(proven=not problems, problems=tuple(problems), logged_by=logged_by, notes=tuple(notes))
        except TrustError as e:  # the fields' problems so far, and where the proof fails
            return UsageVerdict(proven=False, problems=(*problems, e.message))


def verify_usage_item(item: Mapping[str, Any], anchor: Anchor) -> UsageVerdict:
    """Verify one ``findUsage`` item (its ``evidence`` and the fields shown beside it) against ``anchor``, from
    scratch (to check many, use one :class:`UsageVerifier`)."""
    return UsageVerifier(anchor).verify(item)


def _digest(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


def _remember(cache: dict[bytes, _V], key: bytes, value: _V) -> None:
    if len(cache) >= CACHE_ENTRIES:
        cache.clear()
    cache[key] = value


def _is_cert(der: bytes) -> bool:
    from cryptography import x509

    try:
        x509.load_der_x509_certificate(der)
    except ValueError:
        return False
    return True


def verify_file(data: bytes, anchor: Anchor) -> tuple[str | None, list[tuple[int, UsageVerdict]]]:
    """Each entry of a portal's evidence file ``{"subject", "generated", "entries": [item...]}``.

    Raises:
        TrustError: the file is not such JSON.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise TrustError(f"the evidence file is not JSON: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise TrustError("the evidence file has no entries list")
    subject = doc.get("subject") if isinstance(doc.get("subject"), str) else None
    verifier = UsageVerifier(anchor)  # the file's items share checkpoints: each verified once
    out = []
    for n, entry in enumerate(doc["entries"], 1):
        if not isinstance(entry, dict):
            out.append((n, UsageVerdict(proven=False, problems=("not an object",))))
            continue
        verdict = verifier.verify(entry)
        ev = entry.get("evidence")
        if subject is not None and isinstance(ev, dict) and ev.get("subject") != subject:
            verdict = UsageVerdict(
                proven=False, problems=(*verdict.problems, "evidence.subject is not the file's subject")
            )
        out.append((n, verdict))
    return subject, out


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = [
    "CACHE_ENTRIES",
    "UsageVerdict",
    "UsageVerifier",
    "build_evidence",
    "item_fields",
    "parse_proof",
    "proof_text",
    "verify_file",
    "verify_usage_item",
]
