"""Offline verification of a message-log archive, trusting nothing but the anchor (pure).

DESIGN.md section 5, ``docs/auditing.md``. :func:`verify_archive` takes an archive's contents (any
:class:`ArchiveSource`: the ZIP reader of :mod:`gateway.messagelog.archive`, or memory) and the instance's
:class:`~gateway.globalconf.anchor.Anchor`, and returns a :class:`VerifyReport`: a list of precise
:class:`Finding` objects (which record, which checkpoint, what is wrong), empty when everything verifies.
It never stops at the first problem: an auditor wants to know every record that is wrong.

The steps, as numbered in the code:

1. Global configurations: every envelope in the archive must verify against the anchor (signature by an
   anchored key, known format, the anchor's instance; expiry is not checked, these are historical
   documents). They name the trusted CAs (with their OCSP policy) and TSAs. For a moment ``t`` the
   configuration in force (``issued_at <= t < expires_at``) is used; if the archive holds none for ``t``,
   the newest one is (as X-Road's ``asicverifier`` uses the current configuration).
2. Checkpoints: each signed note parses, names this log's origin, carries an RFC 3161 timestamp token over
   SHA-256 of the note bytes by a TSA of the configuration, and is signed by a signing key of the member that
   owns the log (a certificate in the archive or stapled in its records, with a key ID that the note names),
   whose certificate chains to a trusted CA, names that member and has a good OCSP status at the timestamp.
3. Records, chunk by chunk (in parallel with :class:`ProcessPoolRunner`), each independently:
   a. the bytes are a version-1 record in canonical form (``docs/messagelog.md`` section 2) of this origin;
   b. the RFC 9421 signature base holds exactly the record's identifiers, method, target, status, digest,
      certificate and OCSP response, and the signature verifies with the stapled certificate;
   c. the certificate chains to a CA trusted by the configuration in force at the message's ``created``
      time, names the member that must sign (the client's for a request, the provider's for a response),
      is valid then, and its stapled OCSP response is good and fresh as of then;
   d. the logged body, if kept, matches the signed ``Content-Digest``;
   e. its leaf hash ``SHA-256(0x00 || record)`` is computed.
   Each distinct certificate and OCSP response is checked once per configuration and validity window.
   :meth:`RecordChecker.check_lean` makes 3a-3d for records in the form the proxies write with plain string
   operations (no JSON round trip, no general RFC 9421 re-parse, ``Signature-Input`` parsed once per value);
   a record it does not accept goes to :meth:`RecordChecker.check`, the general check, which decides and
   explains. The lean check never accepts what the general one refuses (``tests/unit/test_archive_lean.py``).
4. Order and completeness: the records' leaf hashes are compared with ``leaves.bin`` (the leaf hashes as
   stored by the log). Once ``leaves.bin`` reproduces a verified checkpoint's root it is authenticated, so a
   difference names the record precisely: altered, missing, inserted, duplicated or out of place.
5. Tree: for each verified checkpoint of a size inside the archive's range, the records (after the
   compact-range prefix of the records before the range) must reproduce its root hash.
6. Binding: every response record must be bound (``"signature";req``) to the signature of the request
   record of the same ``request_id``, when that request is in the archive.
7. Coverage: every record must lie inside a verified checkpoint; records after the last one are unproven.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring
from typing import Any, Literal, NamedTuple, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509 import ocsp as x509_ocsp

from gateway import keys, signing, timestamp
from gateway.errors import GatewayError, TrustError
from gateway.globalconf.anchor import Anchor
from gateway.globalconf.model import GlobalConf, format_time
from gateway.globalconf.trust import TrustedGlobalConf
from gateway.identifiers import ClientId, MemberId, SecurityServerId, ServiceId, member_of, parse_client
from gateway.messagelog import checkpoint as cp
from gateway.messagelog.archive import CheckpointData, Chunk, ChunkSpan, Manifest
from gateway.messagelog.merkle import HASH_SIZE, MerkleTree
from gateway.messagelog.record import MAX_EXTENSIONS, MAX_ID_LENGTH, MAX_TEXT_LENGTH, decode
from gateway.ocsp import CLOCK_SKEW
from gateway.proxy import peertrust

Severity = Literal["error", "note"]

# The members of a version-1 record (docs/messagelog.md section 1); a unit test compares with record.py.
RECORD_FIELDS = frozenset({
    "body", "body_digest", "client", "created", "extensions", "issue", "kind", "message_id", "method",
    "ocsp_response", "origin", "path", "request_id", "service", "side", "signature", "signature_base",
    "signature_input", "signing_cert", "status", "user_id", "v",
})
_CREATED_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_EXT_KEY_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_CREATED_PARAM_RE = re.compile(r";created=(-?[0-9]+)")
_KEYID_RE = re.compile(r"[0-9a-f]{64}")
_REQ_IDENT = signing.REQUEST_SIGNATURE_COMPONENT
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One thing that does not verify (``severity="error"``) or that the auditor should know (``"note"``)."""

    where: str  # "record 17", "checkpoint 2 (size 120)", "global configuration globalconf/ab12...json", "archive"
    problem: str  # a short name: altered, missing, out-of-order, inserted, malformed, signature, certificate...
    message: str
    seq: int | None = None
    severity: Severity = "error"

    def line(self) -> str:
        tag = "FAIL" if self.severity == "error" else "note"
        return f"{tag} {self.where}: {self.problem}: {self.message}"


@dataclass(slots=True, kw_only=True)
class VerifyReport:
    """What :func:`verify_archive` found (mutable while it runs)."""

    origin: str
    start: int
    end: int
    records_read: int = 0
    records_valid: int = 0  # records that passed step 3 on their own
    checkpoints: int = 0
    checkpoints_verified: int = 0
    covered_until: int = 0  # records below this sequence number are inside a verified checkpoint
    configurations: tuple[int, ...] = ()  # versions of the verified global configurations
    certificates: int = 0  # distinct signing certificate + OCSP response pairs seen
    first_created: datetime | None = None
    last_created: datetime | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def summary(self) -> str:
        span = "" if self.first_created is None or self.last_created is None else (
            f", created {format_time(self.first_created)} .. {format_time(self.last_created)}")
        lines = [
            f"origin {self.origin}: records {self.start}..{self.end - 1} ({self.end - self.start}){span}",
            f"global configurations verified against the anchor: "
            f"{', '.join(f'version {v}' for v in self.configurations) or 'none'}",
            f"records: {self.records_read} read, {self.records_valid} with valid signature, certificate, OCSP "
            f"and body ({self.certificates} distinct certificate/OCSP pairs)",
            f"checkpoints: {self.checkpoints_verified} of {self.checkpoints} verified (signature and timestamp)",
            f"tree: records below {self.covered_until} are covered by a verified checkpoint",
        ]
        lines += [f.line() for f in self.findings]
        n = len(self.errors)
        lines.append("RESULT: OK, everything verifies" if n == 0 else f"RESULT: FAILED, {n} problem(s)")
        return "\n".join(lines)


class ArchiveSource(Protocol):
    """What the verifier reads: :class:`gateway.messagelog.archive.LogArchive` or an in-memory double."""

    @property
    def manifest(self) -> Manifest: ...
    @property
    def leaves(self) -> bytes: ...
    @property
    def checkpoints(self) -> Sequence[CheckpointData]: ...
    @property
    def globalconfs(self) -> Sequence[bytes]: ...
    @property
    def certificates(self) -> Sequence[bytes]: ...
    @property
    def ocsp_responses(self) -> Sequence[bytes]: ...

    def read_chunk(self, chunk: Chunk) -> bytes: ...


# --------------------------------------------------------------------------------------------------------
# Step 1: the trusted configurations
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustSet:
    """The global configurations that verify against the anchor, oldest version first."""

    confs: tuple[GlobalConf, ...]

    def at(self, t: datetime) -> tuple[int, GlobalConf]:
        """The index and configuration in force at ``t``, or the newest one."""
        best = len(self.confs) - 1
        for i in range(len(self.confs) - 1, -1, -1):
            c = self.confs[i]
            if c.issued_at <= t < c.expires_at:
                return i, c
        return best, self.confs[best]


def load_trust(anchor: Anchor, envelopes: Sequence[bytes], names: Sequence[str] | None = None,
               ) -> tuple[TrustSet | None, list[Finding]]:
    """Step 1: the configurations of the archive that verify against ``anchor``; findings for the others."""
    findings: list[Finding] = []
    confs: dict[int, GlobalConf] = {}
    for i, data in enumerate(envelopes):
        where = f"global configuration {names[i] if names else i + 1}"
        try:
            # rules 1-3 only; `now` merely sets cached_expired, which a historical document may well be
            trusted = TrustedGlobalConf(anchor, data, now=_EPOCH)
        except GatewayError as e:
            findings.append(Finding(where=where, problem="configuration", message=e.message))
            continue
        conf = trusted.current
        assert conf is not None
        confs[conf.version] = conf
    if not confs:
        findings.append(Finding(
            where="archive", problem="configuration",
            message="no global configuration in the archive verifies against the anchor, so no CA or TSA "
                    "can be trusted",
        ))
        return None, findings
    return TrustSet(tuple(confs[v] for v in sorted(confs))), findings


# --------------------------------------------------------------------------------------------------------
# Step 3: records
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordFinding:
    line: int  # 0-based line in its chunk
    problem: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkResult:
    """What a worker returns for one records member."""

    first: int
    lines: int
    leaves: bytes  # 32 bytes per line, in line order
    valid: int
    findings: tuple[RecordFinding, ...]
    requests: tuple[tuple[int, str, bytes], ...]  # (line, request_id, signature) of request records
    responses: tuple[tuple[int, str, bytes], ...]  # (line, request_id, bound request signature)
    pairs: frozenset[tuple[bytes, bytes]]  # distinct (signing certificate, OCSP response), DER
    first_created: datetime | None
    last_created: datetime | None


class _RecordProblem(Exception):
    def __init__(self, problem: str, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message


def _b64(name: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise _RecordProblem("malformed", f"field {name} is not a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error as e:
        raise _RecordProblem("malformed", f"field {name} is not valid base64") from e
    if base64.b64encode(raw).decode("ascii") != value:
        raise _RecordProblem("malformed", f"field {name} is not canonical padded base64")
    return raw


def _b64_canonical(value: str) -> bytes | None:
    """``value`` decoded if it is canonical padded base64 (what :func:`_b64` accepts), else ``None``;
    binascii's strict mode rather than ``b64decode(validate=True)``, whose regular expression is slow."""
    try:
        raw = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: not ASCII
        return None
    return raw if binascii.b2a_base64(raw, newline=False) == value.encode("ascii") else None


# The members of a record in canonical order, each with what precedes its value in the canonical form.
_FIELD_ORDER = tuple(sorted(RECORD_FIELDS))
_MARKERS = tuple(("{" if i == 0 else ",") + f'"{k}":' for i, k in enumerate(_FIELD_ORDER))


def split_record(text: str) -> list[str] | None:
    """The JSON text of each member's value, in key order, if ``text`` is an object with exactly the members
    of a version-1 record in canonical order and form; ``None`` otherwise.

    Each value ends where the next member's ``,"name":`` begins: a valid JSON string cannot contain that
    (its quote would have to be escaped), so the first occurrence is the boundary once each value is shown
    to be a valid literal, which the caller does (:func:`_json_str`, :func:`_b64_canonical`...).
    """
    pos = 0
    out: list[str] = []
    n = len(_MARKERS)
    for i, marker in enumerate(_MARKERS):
        if not text.startswith(marker, pos):
            return None
        pos += len(marker)
        end = text.find(_MARKERS[i + 1], pos) if i + 1 < n else len(text) - 1
        if end < pos:
            return None
        out.append(text[pos:end])
        pos = end
    return out if text[-1:] == "}" else None


def _quoted(literal: str) -> bool:
    return len(literal) >= 2 and literal[0] == '"' and literal[-1] == '"'


def _json_str(literal: str) -> str | None:
    """The string that ``literal`` is the canonical JSON form of (escapes only where RFC 8785 puts them,
    as ``json.dumps(ensure_ascii=False)`` does), or ``None``."""
    if not _quoted(literal):
        return None
    content = literal[1:-1]
    if "\\" not in content:
        return content if '"' not in content and content.isprintable() else None
    try:
        value = json.loads(literal)
    except (ValueError, RecursionError):
        return None
    return value if type(value) is str and encode_basestring(value) == literal else None


def _json_strs(*literals: str) -> list[str] | None:
    out: list[str] = []
    for literal in literals:
        value = _json_str(literal)
        if value is None:
            return None
        out.append(value)
    return out


def _canonical_extensions(literal: str) -> bool:
    """Whether ``literal`` is the canonical JSON of a valid extensions object."""
    try:
        ext = json.loads(literal)
    except (ValueError, RecursionError):
        return False
    if type(ext) is not dict or len(ext) > MAX_EXTENSIONS or not all(
        _EXT_KEY_RE.fullmatch(k) and (type(x) is str or (type(x) is list and all(type(i) is str for i in x)))
        for k, x in ext.items()
    ):
        return False
    return json.dumps(ext, sort_keys=True, separators=(",", ":"), ensure_ascii=False) == literal


def _text(obj: Mapping[str, Any], name: str, limit: int = MAX_TEXT_LENGTH, *, optional: bool = False) -> Any:
    v = obj[name]
    if v is None and optional:
        return None
    if not isinstance(v, str) or len(v) > limit:
        raise _RecordProblem("malformed", f"field {name} is not a string of at most {limit} characters")
    return v


def _base_lines(base: bytes) -> tuple[dict[str, str], bytes | None]:
    """The header components and the bound request signature of a signature base (RFC 9421 2.5)."""
    try:
        text = base.decode("ascii")
    except UnicodeDecodeError as e:
        raise _RecordProblem("signature", "signature base is not ASCII") from e
    headers: dict[str, str] = {}
    req_sig = None
    for line in text.split("\n"):
        ident, sep, value = line.partition('": ')
        if not sep or not ident.startswith('"'):
            raise _RecordProblem("signature", f"signature base line {line[:60]!r} is not 'identifier: value'")
        ident += '"'
        if ident == _REQ_IDENT:
            if not (value.startswith(":") and value.endswith(":")):
                raise _RecordProblem("signature", "the bound request signature is not a byte sequence")
            try:
                req_sig = base64.b64decode(value[1:-1], validate=True)
            except binascii.Error as e:
                raise _RecordProblem("signature", "the bound request signature is not base64") from e
        elif not ident.startswith('"@') and ident.count('"') == 2:
            headers[ident[1:-1]] = value
    return headers, req_sig


# --------------------------------------------------------------------------------------------------------
# Step 3, lean: the same checks specialised for logged records, without a general RFC 9421 re-parse
# --------------------------------------------------------------------------------------------------------

_PARAMS_LINE = '"@signature-params": '
_LEAN_PARAMS = frozenset({"created", "keyid", "alg", "tag", "expires"})
_NO_CPARAMS: frozenset[tuple[str, Any]] = frozenset()
_REQ_IDENTITY = ("signature", frozenset({("req", True), ("key", signing.LABEL)}))
_SIGNATURE_RE = re.compile(r"xroad=:([A-Za-z0-9+/]+={0,2}):")
_DERIVED: dict[str, tuple[str, ...]] = {"request": signing.REQUEST_DERIVED, "response": ("@status",)}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "request": signing.REQUEST_REQUIRED_HEADERS, "response": signing.RESPONSE_REQUIRED_HEADERS,
}
_STAPLED = (signing.H_SIGNING_CERT, signing.H_SIGNING_OCSP)
_CACHE_MAX = 4096  # entries per lean-path cache; cleared when full
# ECDSA over SHA-256 computed by hashlib: the same check, without a digest context per call in the binding
_ECDSA_PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))


@dataclass(frozen=True, slots=True)
class LeanInput:
    """A ``Signature-Input`` value that passed the profile checks of :func:`gateway.signing.verify_request`
    (or ``verify_response``) that depend on it alone: parsed once per distinct value and kind."""

    components: tuple[tuple[str, str, str], ...]  # (identifier + ": ", name, "d"erived/"h"eader/"r"equest sig)
    params_line: str  # the last line of the signature base
    created: int
    keyid: str
    alg: str
    expires: int | None


def lean_input(raw: str, kind: str) -> LeanInput | None:
    """The profile checks of ``Signature-Input`` for a ``kind`` record; ``None`` when any fails (or the value
    is of a form our signer never produces): the full check then says what is wrong."""
    try:
        inputs = signing.parse_dictionary(raw)
    except signing.SFError:
        return None
    if signing.LABEL not in inputs:
        return None
    inner, params = inputs[signing.LABEL]
    if not isinstance(inner, list):
        return None
    derived = _DERIVED[kind]
    comps: list[tuple[str, str, str]] = []
    seen: set[tuple[str, frozenset[tuple[str, Any]]]] = set()
    for name, cparams in inner:
        if type(name) is not str or name != name.lower():
            return None
        identity = (name, frozenset(cparams.items()))
        if identity in seen:
            return None
        seen.add(identity)
        if kind == "response" and identity == _REQ_IDENTITY:
            cat = "r"
        elif cparams or name in (signing.H_SIGNATURE_INPUT, signing.H_SIGNATURE):
            return None
        elif name[:1] == "@":
            if name not in derived:
                return None
            cat = "d"
        else:
            cat = "h"
        try:
            comps.append((signing.serialize_item(name, cparams) + ": ", name, cat))
        except signing.SFError:
            return None
    must = {(n, _NO_CPARAMS) for n in (*derived, *_REQUIRED[kind], *_STAPLED)}
    if kind == "response":
        must.add(_REQ_IDENTITY)
    if not must <= seen or not set(params) <= _LEAN_PARAMS:
        return None
    created, keyid, alg, tag, expires = (params.get(k) for k in ("created", "keyid", "alg", "tag", "expires"))
    if (type(created) is not int or type(keyid) is not str or not _KEYID_RE.fullmatch(keyid)
            or type(alg) is not str or alg not in signing.ALGORITHMS or tag != signing.TAG
            or not (expires is None or type(expires) is int)):
        return None
    # the verifier's own reading of created (the first ";created=" of the field) must agree
    m = _CREATED_PARAM_RE.search(raw)
    if m is None or int(m.group(1)) != created:
        return None
    try:
        params_text = "(" + " ".join(c[0][:-2] for c in comps) + ")" + signing.serialize_params(params)
    except signing.SFError:
        return None
    return LeanInput(components=tuple(comps), params_line=_PARAMS_LINE + params_text, created=created,
                     keyid=keyid, alg=alg, expires=expires if isinstance(expires, int) else None)


class Checked(NamedTuple):
    """What step 3 establishes for a record that verifies (a named tuple: one is built per record)."""

    kind: str
    request_id: str
    created: datetime
    signature: bytes  # the record's own signature value
    bound: bytes | None  # a response's bound request signature
    pair: tuple[bytes, bytes]  # (signing certificate, OCSP response), DER


_KeyInfo = tuple[keys.PublicKey, str, ec.EllipticCurvePublicKey | None]  # key, algorithm, the key if P-256


class RecordChecker:
    """Step 3 for the records of one origin; keeps caches of identifiers and certificate verdicts."""

    def __init__(self, trust: TrustSet, origin: str) -> None:
        self.trust = trust
        self.origin = origin
        self._clients: dict[str, ClientId] = {}
        self._services: dict[str, ServiceId] = {}
        self._b64: dict[str, bytes] = {}
        self._signers: dict[tuple[str, str], tuple[MemberId, str]] = {}
        # (cert DER, OCSP DER, member, configuration index) -> (certificate, valid from, valid until)
        self._certs: dict[tuple[bytes, bytes, MemberId, int], tuple[x509.Certificate, datetime, datetime]] = {}
        # lean path: parsed Signature-Input per (value, kind); created per text; keyid per certificate text;
        # public key and algorithm per certificate object (held in the entry, so its id is not reused)
        self._inputs: dict[tuple[str, str], tuple[str, LeanInput] | None] = {}
        self._created: dict[str, tuple[datetime, int]] = {}
        self._keyids: dict[str, str] = {}
        self._keys: dict[int, tuple[x509.Certificate, _KeyInfo]] = {}
        self._origin_json = encode_basestring(origin)

    # -- helpers with caches

    def _client(self, text: str) -> ClientId:
        hit = self._clients.get(text)
        if hit is None:
            try:
                hit = parse_client(text, encoded=False)
            except GatewayError as e:
                raise _RecordProblem("malformed", f"field client: {e.message}") from e
            self._clients[text] = hit
        return hit

    def _service(self, text: str) -> ServiceId:
        hit = self._services.get(text)
        if hit is None:
            try:
                hit = ServiceId.parse(text, encoded=False)
            except GatewayError as e:
                raise _RecordProblem("malformed", f"field service: {e.message}") from e
            self._services[text] = hit
        return hit

    def _signer(self, kind: str, key: str, client: ClientId, service: ServiceId) -> tuple[MemberId, str]:
        """Who must sign: the client's member for a request, the provider's for a response."""
        hit = self._signers.get((kind, key))
        if hit is None:
            hit = (member_of(client), signing.SERVER_PROXY) if kind == "request" else (
                service.member, signing.CLIENT_PROXY)
            self._signers[(kind, key)] = hit
        return hit

    def _cached_b64(self, name: str, value: object) -> bytes:
        if isinstance(value, str):
            hit = self._b64.get(value)
            if hit is not None:
                return hit
        raw = _b64(name, value)
        if len(self._b64) > 4096:
            self._b64.clear()
        self._b64[value] = raw  # type: ignore[index]
        return raw

    def check_cert(self, cert_der: bytes, ocsp_der: bytes, member: MemberId, t: datetime, side: str
                   ) -> x509.Certificate:
        """Step 3c: ``peertrust.check_signing_cert`` as of ``t`` under the configuration in force then.

        A verdict holds for every moment at which the same checks pass on their time conditions (certificate
        validity, OCSP ``thisUpdate`` within skew and freshness, ``nextUpdate`` not passed), so it is reused.

        Raises:
            TrustError: untrusted, expired, wrong member, revoked, bad or stale OCSP response.
        """
        index, conf = self.trust.at(t)
        key = (cert_der, ocsp_der, member, index)
        hit = self._certs.get(key)
        if hit is not None and hit[1] <= t <= hit[2]:
            return hit[0]
        cert = peertrust.check_signing_cert(cert_der, ocsp_der, conf, member=member, now=t, side=side)
        single = x509_ocsp.load_der_ocsp_response(ocsp_der)
        this_update = single.this_update_utc
        lo = max(this_update - CLOCK_SKEW, cert.not_valid_before_utc)
        hi = min(this_update + timedelta(seconds=conf.ocsp_freshness_seconds), cert.not_valid_after_utc)
        if single.next_update_utc is not None:
            hi = min(hi, single.next_update_utc + CLOCK_SKEW)
        self._certs[key] = (cert, lo, hi)
        return cert

    def _lean_input(self, literal: str, kind: str) -> tuple[str, LeanInput] | None:
        """The ``signature_input`` value whose canonical JSON text is ``literal``, and its parse."""
        key = (literal, kind)
        try:
            return self._inputs[key]
        except KeyError:
            pass
        if len(self._inputs) >= _CACHE_MAX:
            self._inputs.clear()
        raw = _json_str(literal)
        parsed = None if raw is None or len(raw) > MAX_TEXT_LENGTH else lean_input(raw, kind)
        value = self._inputs[key] = None if raw is None or parsed is None else (raw, parsed)
        return value

    def _created_of(self, text: str) -> tuple[datetime, int] | None:
        hit = self._created.get(text)
        if hit is None:
            if not _CREATED_RE.fullmatch(text):
                return None
            try:
                t = datetime.fromisoformat(text)
            except ValueError:
                return None
            if len(self._created) >= _CACHE_MAX:
                self._created.clear()
            hit = self._created[text] = (t, int(t.timestamp()))
        return hit

    def _key_of(self, cert: x509.Certificate) -> _KeyInfo | None:
        """The certificate's public key, its algorithm, and the key again if it is P-256 (checked once)."""
        hit = self._keys.get(id(cert))
        if hit is not None and hit[0] is cert:
            return hit[1]
        try:
            pub = keys.public_key_of(cert)
            alg = keys.signature_alg_for(pub)
        except GatewayError:
            return None
        p256 = pub if alg == signing.ALG_ECDSA_P256 and isinstance(pub, ec.EllipticCurvePublicKey) else None
        if len(self._keys) >= 256:
            self._keys.clear()
        value = (pub, alg, p256)
        self._keys[id(cert)] = (cert, value)
        return value

    def check_lean(self, line: bytes) -> Checked | None:
        """Steps 3a-3d for one record, specialised for records as the proxies log them; ``None`` when
        anything is not as expected (then :meth:`check` decides, and says what is wrong).

        The record carries its exact signature base, so instead of re-parsing the message as RFC 9421 does,
        this checks that the base's lines are the components that the (cached) ``Signature-Input`` lists,
        with the record's own values, and verifies the signature over the base. It makes every check of
        :meth:`check`, as strictly or more strictly: a record accepted here is accepted there (a unit test
        compares the two on tampered records).
        """
        # (3a) canonical version-1 JSON of this origin, every field of the right type
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return None
        f = split_record(text)
        if f is None:
            return None
        (body_text, body_digest, client_text, created_text, extensions, issue, kind, message_id, method,
         ocsp_text, origin, path, request_id, service_text, side, sig_text, base_text, sig_input, cert_text,
         status_text, user_id, v) = f
        if v != "1" or origin != self._origin_json or side not in ('"client"', '"server"'):
            return None
        if kind == '"request"':
            if status_text != "null":
                return None
            kind = "request"
        elif kind == '"response"':
            if not (len(status_text) == 3 and status_text.isascii() and status_text.isdigit()
                    and "100" <= status_text <= "599"):
                return None
            kind = "response"
        else:
            return None
        hit = None if created_text[:1] != '"' else self._created_of(created_text[1:-1])
        if hit is None or created_text[-1:] != '"':
            return None
        created, ts = hit
        strings = _json_strs(body_digest, client_text, message_id, method, path, request_id, service_text,
                             sig_text)
        parsed_input = self._lean_input(sig_input, kind)  # by its JSON text: decoded and parsed once
        if strings is None or parsed_input is None:
            return None
        body_digest, client_text, message_id, method, path, request_id, service_text, sig_text = strings
        sig_input, li = parsed_input
        user = None if user_id == "null" else _json_str(user_id)
        issue_value = None if issue == "null" else _json_str(issue)
        if (user is None and user_id != "null") or (issue_value is None and issue != "null"):
            return None
        if (len(message_id) > MAX_ID_LENGTH or len(request_id) > MAX_ID_LENGTH
                or max(len(method), len(path), len(sig_input), len(sig_text), len(body_digest),
                       len(client_text), len(service_text), len(user or ""), len(issue_value or "")) > MAX_TEXT_LENGTH):
            return None
        if extensions != "{}" and not _canonical_extensions(extensions):
            return None
        # the base64 fields: canonical padded base64, so their JSON text (as split) is canonical too
        if not (_quoted(base_text) and _quoted(cert_text) and _quoted(ocsp_text)
                and (body_text == "null" or _quoted(body_text))):
            return None
        base_text, cert_text, ocsp_text = base_text[1:-1], cert_text[1:-1], ocsp_text[1:-1]
        try:
            client = self._client(client_text)
            service = self._service(service_text)
            cert_der = self._cached_b64("signing_cert", cert_text)
            ocsp_der = self._cached_b64("ocsp_response", ocsp_text)
        except _RecordProblem:
            return None
        base = _b64_canonical(base_text)
        body = None if body_text == "null" else _b64_canonical(body_text[1:-1])
        if base is None or (body is None and body_text != "null"):
            return None
        status_json = status_text

        # (3b) the signature base is exactly the listed components with the record's values
        try:
            base_str = base.decode("ascii")
        except UnicodeDecodeError:
            return None
        if "\r" in base_str:
            return None
        lines = base_str.split("\n")
        if len(lines) != len(li.components) + 1 or lines[-1] != li.params_line:
            return None
        if kind == "request":
            target, _, query = path.partition("?")
            derived = {"@method": method, "@path": target or "/", "@query": "?" + query}
        else:
            derived = {"@status": status_json}
        headers: dict[str, str] = {}
        bound: bytes | None = None
        for (prefix, name, cat), base_line in zip(li.components, lines, strict=False):
            if not base_line.startswith(prefix):
                return None
            value = base_line[len(prefix):]
            if value != value.strip(" \t"):
                return None
            if cat == "h":
                headers[name] = value
            elif cat == "d":
                if value != derived[name]:
                    return None
            else:  # the bound request signature: canonical base64 between colons
                if len(value) < 2 or value[0] != ":" or value[-1] != ":":
                    return None
                bound = _b64_canonical(value[1:-1])
                if bound is None:
                    return None
        h = headers.get
        if (h("x-road-client") != client_text or h("x-road-service") != service_text
                or h("x-road-id") != message_id or h("x-road-request-id") != request_id
                or h(signing.H_CONTENT_DIGEST) != body_digest
                or h(signing.H_SIGNING_CERT) != cert_text or h(signing.H_SIGNING_OCSP) != ocsp_text):
            return None
        if kind == "request" and (h("x-road-userid") != user or h("x-road-issue") != issue_value):
            return None
        if created.microsecond or li.created != ts or (li.expires is not None and li.expires < ts):
            return None
        keyid = self._keyids.get(cert_text)
        if keyid is None:
            if len(self._keyids) >= _CACHE_MAX:
                self._keyids.clear()
            keyid = self._keyids[cert_text] = hashlib.sha256(cert_der).hexdigest()
        if li.keyid != keyid:
            return None
        m = _SIGNATURE_RE.fullmatch(sig_text)
        if m is None:
            return None
        try:
            signature = binascii.a2b_base64(m.group(1))  # the pattern admits only the base64 alphabet
        except binascii.Error:
            return None
        if not signature:
            return None
        # (3c) the certificate and OCSP status as of the message's created time
        signer, signer_side = self._signer(kind, client_text if kind == "request" else service_text, client,
                                           service)
        try:
            cert = self.check_cert(cert_der, ocsp_der, signer, created, signer_side)
        except TrustError:
            return None
        key = self._key_of(cert)
        if key is None or signing.cert_keyid(cert) != keyid:
            return None
        pub, alg, p256 = key
        if li.alg != alg:
            return None
        try:
            if p256 is not None:
                if len(signature) != 64:
                    return None
                p256.verify(keys.raw_to_der_ecdsa(signature), hashlib.sha256(base).digest(), _ECDSA_PREHASHED)
            else:
                keys.verify_bytes(pub, alg, base, signature)
        except (InvalidSignature, TrustError):
            return None
        # (3d) the body, if it was kept, is the one signed
        if body is not None:
            try:
                signing.verify_content_digest(body_digest, hashlib.sha256(body).digest())
            except TrustError:
                return None
        return Checked(kind=kind, request_id=request_id, created=created, signature=signature, bound=bound,
                       pair=(cert_der, ocsp_der))

    # -- the record

    def check(self, line: bytes) -> Checked:
        """Steps 3a-3d for one record, through the general RFC 9421 verifier (:mod:`gateway.signing`): the
        reference for :meth:`check_lean`, and the one that says what is wrong with a record.

        Raises:
            _RecordProblem: what is wrong.
        """
        # (3a) canonical version-1 JSON of this origin, every field of the right type
        try:
            obj = json.loads(line)
            canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        except (ValueError, UnicodeError, RecursionError):
            canonical = None
            obj = None
        if canonical != line or not isinstance(obj, dict):
            raise _RecordProblem("malformed", _decode_message(line))
        if obj.get("v") != 1 or type(obj.get("v")) is not int:  # 1.0 == 1 in Python, but is not canonical
            raise _RecordProblem("malformed", f"format version {obj.get('v')!r} is not supported (expected 1)")
        if obj.keys() != RECORD_FIELDS:
            raise _RecordProblem("malformed", _decode_message(line))
        if obj["origin"] != self.origin:
            raise _RecordProblem("origin", f"record of origin {str(obj['origin'])[:80]!r}, not {self.origin!r}")
        kind, status = obj["kind"], obj["status"]
        if kind == "request":
            if status is not None or obj["side"] not in ("client", "server"):
                raise _RecordProblem("malformed", _decode_message(line))
        elif kind == "response":
            if type(status) is not int or not 100 <= status <= 599 or obj["side"] not in ("client", "server"):
                raise _RecordProblem("malformed", _decode_message(line))
        else:
            raise _RecordProblem("malformed", f"kind {str(kind)[:20]!r} is not request or response")
        created_text = obj["created"]
        if not isinstance(created_text, str) or not _CREATED_RE.fullmatch(created_text):
            raise _RecordProblem("malformed", "field created is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
        try:
            created = datetime.fromisoformat(created_text)
        except ValueError as e:
            raise _RecordProblem("malformed", f"field created is not a valid time: {e}") from e
        message_id = _text(obj, "message_id", MAX_ID_LENGTH)
        request_id = _text(obj, "request_id", MAX_ID_LENGTH)
        for name in ("method", "path", "signature_input", "signature", "body_digest"):
            _text(obj, name)
        user_id = _text(obj, "user_id", optional=True)
        issue = _text(obj, "issue", optional=True)
        extensions = obj["extensions"]
        if not isinstance(extensions, dict) or len(extensions) > MAX_EXTENSIONS or not all(
            _EXT_KEY_RE.fullmatch(k) and (isinstance(v, str) or (isinstance(v, list) and all(
                isinstance(i, str) for i in v))) for k, v in extensions.items()
        ):
            raise _RecordProblem("malformed", _decode_message(line))
        client = self._client(_text(obj, "client"))
        service = self._service(_text(obj, "service"))
        base = _b64("signature_base", obj["signature_base"])
        cert_der = self._cached_b64("signing_cert", obj["signing_cert"])
        ocsp_der = self._cached_b64("ocsp_response", obj["ocsp_response"])
        body = None if obj["body"] is None else _b64("body", obj["body"])

        # (3b) the signature base says what the record says, and the signature verifies over it
        headers, req_sig = _base_lines(base)
        m = _CREATED_PARAM_RE.search(obj["signature_input"])
        if m is None or int(m.group(1)) != int(created.timestamp()) or created.microsecond:
            raise _RecordProblem("signature", f"created {created_text} is not the signature's created parameter")
        headers[signing.H_SIGNATURE_INPUT] = obj["signature_input"]
        headers[signing.H_SIGNATURE] = obj["signature"]
        expected: dict[str, str | None] = {
            "x-road-client": obj["client"], "x-road-service": obj["service"], "x-road-id": message_id,
            "x-road-request-id": request_id, signing.H_CONTENT_DIGEST: obj["body_digest"],
        }
        if kind == "request":  # a response record repeats the request's user id and issue, which it need not sign
            expected["x-road-userid"] = user_id
            expected["x-road-issue"] = issue
        for name, value in expected.items():
            if headers.get(name) != value:
                shown = "(absent)" if headers.get(name) is None else repr(headers[name][:80])
                raise _RecordProblem(
                    "signature", f"the signed {name} is {shown}, but the record says "
                                 f"{'(absent)' if value is None else repr(value[:80])}")
        for name, der in ((signing.H_SIGNING_CERT, cert_der), (signing.H_SIGNING_OCSP, ocsp_der)):
            if name not in headers or self._cached_b64(name, headers[name]) != der:
                raise _RecordProblem("signature", f"the signed {name} is not the record's {name[7:]}")
        signer, side = self._signer(kind, obj["client"] if kind == "request" else obj["service"], client, service)

        def resolve(keyid: str, c_der: bytes, o_der: bytes, /) -> x509.Certificate:
            # (3c) the certificate and OCSP status as of the message's created time
            try:
                return self.check_cert(c_der, o_der, signer, created, side)
            except TrustError as e:
                raise _RecordProblem("certificate", e.message) from e

        for name in ("method", "path"):  # RFC 9421 trims derived values: the record must hold the trimmed one
            if obj[name] != obj[name].strip(" \t"):
                raise _RecordProblem("signature", f"the record's {name} {obj[name][:80]!r} has white space around "
                                                  "it; the signed value has not")
        path, sep, query = obj["path"].partition("?")
        try:
            if kind == "request":
                verified = signing.verify_request(
                    method=obj["method"], path=path, query=query if sep else None, headers=headers,
                    now=created, max_skew_seconds=0, resolve_cert=resolve,
                )
            else:
                if req_sig is None:
                    raise _RecordProblem("signature", "the response signature is not bound to a request signature")
                verified = signing.verify_response(
                    status=status, headers=headers, request_signature=req_sig, now=created, max_skew_seconds=0,
                    resolve_cert=resolve,
                )
        except TrustError as e:
            raise _RecordProblem("signature", e.message) from e
        if verified.signature_base != base:
            raise _RecordProblem("signature", "the signature base does not match the record's method, target, "
                                              "status or signature parameters")
        # (3d) the body, if it was kept, is the one signed
        if body is not None:
            try:
                signing.verify_content_digest(obj["body_digest"], hashlib.sha256(body).digest())
            except TrustError as e:
                raise _RecordProblem("body", e.message) from e
        return Checked(kind=kind, request_id=request_id, created=created, signature=verified.signature,
                       bound=req_sig, pair=(cert_der, ocsp_der))


def _decode_message(line: bytes) -> str:
    """The reference decoder's reason for refusing ``line`` (record.decode is strict but slow: errors only)."""
    try:
        decode(line)
    except (TrustError, ValueError, RecursionError) as e:
        return getattr(e, "message", str(e))
    return "not in the canonical form of docs/messagelog.md"  # pragma: no cover - decode is the stricter


def check_chunk(checker: RecordChecker, first: int, data: bytes) -> ChunkResult:
    """Step 3 for one records member: each line checked, its leaf hash computed."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    leaves = bytearray()
    findings: list[RecordFinding] = []
    requests: list[tuple[int, str, bytes]] = []
    responses: list[tuple[int, str, bytes]] = []
    pairs: set[tuple[bytes, bytes]] = set()
    lo: datetime | None = None
    hi: datetime | None = None
    valid = 0
    sha256 = hashlib.sha256
    check_lean, check = checker.check_lean, checker.check
    for i, line in enumerate(lines):
        # (3e) the leaf hash, whatever the record's state
        h = sha256(b"\x00")
        h.update(line)
        leaves += h.digest()
        checked = check_lean(line)
        if checked is None:  # not in the usual form, or not valid: the general check decides and explains
            try:
                checked = check(line)
            except _RecordProblem as e:
                findings.append(RecordFinding(line=i, problem=e.problem, message=e.message))
                continue
        valid += 1
        created = checked.created
        lo = created if lo is None or created < lo else lo
        hi = created if hi is None or created > hi else hi
        pairs.add(checked.pair)
        if checked.kind == "request":
            requests.append((i, checked.request_id, checked.signature))
        else:
            assert checked.bound is not None
            responses.append((i, checked.request_id, checked.bound))
    return ChunkResult(
        first=first, lines=len(lines), leaves=bytes(leaves), valid=valid, findings=tuple(findings),
        requests=tuple(requests), responses=tuple(responses), pairs=frozenset(pairs), first_created=lo,
        last_created=hi,
    )


# --------------------------------------------------------------------------------------------------------
# Running step 3: in this process, or in a process pool
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckContext:
    """What a worker needs to build its :class:`RecordChecker` (picklable)."""

    anchor: bytes
    envelopes: tuple[bytes, ...]
    origin: str

    def checker(self) -> RecordChecker:
        trust, _ = load_trust(Anchor.from_bytes(self.anchor), self.envelopes)
        if trust is None:
            raise TrustError("no global configuration verifies against the anchor")
        return RecordChecker(trust, self.origin)


ChunkData = bytes | ChunkSpan  # a records member's bytes, or where a worker process reads them
ChunkRunner = Callable[[CheckContext, Iterable[tuple[Chunk, ChunkData]]], Iterator[ChunkResult]]


def _data(data: ChunkData) -> bytes:
    return data.read() if isinstance(data, ChunkSpan) else data


def serial_runner(context: CheckContext, chunks: Iterable[tuple[Chunk, ChunkData]]) -> Iterator[ChunkResult]:
    """Check the chunks one after the other in this process."""
    checker = context.checker()
    for chunk, data in chunks:
        yield check_chunk(checker, chunk.first, _data(data))


_WORKER: RecordChecker | None = None


def _worker_init(context: CheckContext) -> None:
    global _WORKER
    _WORKER = context.checker()


def _worker_check(first: int, data: ChunkData) -> ChunkResult:
    assert _WORKER is not None
    return check_chunk(_WORKER, first, _data(data))


class ProcessPoolRunner:
    """Check chunks in ``workers`` processes (default: one per CPU), keeping ``2 * workers`` in flight.

    ECDSA verification (70-90 us per record) dominates; this spreads it over the cores. Workers read the
    records members from the archive file themselves (:class:`ChunkSpan`) and send back leaf hashes,
    findings and the few fields the cross-record steps need, so little crosses between processes.
    """

    reads_files = True  # verify_archive sends ChunkSpans when the source can give them

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1

    def __call__(self, context: CheckContext, chunks: Iterable[tuple[Chunk, ChunkData]]) -> Iterator[ChunkResult]:
        executor: Executor = ProcessPoolExecutor(
            max_workers=self.workers, initializer=_worker_init, initargs=(context,),
        )
        try:
            pending = []
            for chunk, data in chunks:
                pending.append(executor.submit(_worker_check, chunk.first, data))
                while len(pending) >= 2 * self.workers:
                    yield pending.pop(0).result()
            while pending:
                yield pending.pop(0).result()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------------------
# Step 2: checkpoints
# --------------------------------------------------------------------------------------------------------


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
            cert = peertrust.check_signing_cert(cert_der, der, conf, member=member, now=when,
                                                side=signing.CLIENT_PROXY)
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
) -> tuple[list[VerifiedCheckpoint], list[Finding]]:
    """Step 2: each checkpoint's origin, timestamp, signature and signer."""
    findings: list[Finding] = []
    verified: list[VerifiedCheckpoint] = []
    expected_origin = cp.checkpoint_origin(origin)
    try:
        member = SecurityServerId.parse("/".join(origin.split("/")[:4]), encoded=False).owner
    except GatewayError as e:
        return [], [Finding(where="archive", problem="origin",
                            message=f"origin {origin!r} does not name a security server: {e.message}")]
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


# --------------------------------------------------------------------------------------------------------
# Steps 4 and 5: order, completeness, tree
# --------------------------------------------------------------------------------------------------------


def _roots_at(prefix_size: int, prefix: Sequence[bytes], leaves: bytes, sizes: Iterable[int]) -> dict[int, bytes]:
    """Tree roots at each of ``sizes`` (each in ``[prefix_size, prefix_size + len(leaves)/32]``)."""
    tree = MerkleTree(size=prefix_size, frontier=list(prefix))
    out: dict[int, bytes] = {}
    for size in sorted(set(sizes)):
        while tree.size < size:
            i = (tree.size - prefix_size) * HASH_SIZE
            tree.append(leaves[i:i + HASH_SIZE])
        out[size] = tree.root()
    return out


def _lis(values: Sequence[int]) -> set[int]:
    """Positions (into ``values``) of one longest strictly increasing subsequence."""
    import bisect

    tails: list[int] = []
    tails_at: list[int] = []
    back: list[int] = [-1] * len(values)
    for i, v in enumerate(values):
        k = bisect.bisect_left(tails, v)
        if k == len(tails):
            tails.append(v)
            tails_at.append(i)
        else:
            tails[k] = v
            tails_at[k] = i
        back[i] = tails_at[k - 1] if k else -1
    out: set[int] = set()
    i = tails_at[-1] if tails_at else -1
    while i >= 0:
        out.add(i)
        i = back[i]
    return out


Aligned = tuple[int | None, int | None, str, str]  # (line, seq, problem, message)


def compare_with_index(actual: Sequence[bytes], index: Sequence[bytes], start: int) -> list[Aligned]:
    """Step 4: align the records' leaf hashes with the stored ones.

    Returns ``(line, seq, problem, message)`` tuples: ``line`` is the record's position in the archive
    (``None`` for a missing record), ``seq`` the sequence number it belongs to (``None`` if unknown).
    """
    out: list[Aligned] = []
    if list(actual) == list(index):
        return out
    pos: dict[bytes, int] = {}
    for i, h in enumerate(index):
        pos.setdefault(h, i)
    matched: list[int | None] = []
    taken: set[int] = set()
    for k, h in enumerate(actual):
        j = pos.get(h)
        if j is not None and j in taken:
            out.append((k, j + start, "duplicate", f"the record at position {start + k} repeats record {start + j}"))
            matched.append(None)
            continue
        if j is not None:
            taken.add(j)
        matched.append(j)
    known = [(k, j) for k, j in enumerate(matched) if j is not None]
    in_order = {known[i][0] for i in _lis([j for _, j in known])}
    for k, j in known:
        if k not in in_order:
            out.append((k, j + start, "out-of-order",
                        f"record {start + j} is at position {start + k} (records reordered)"))
    missing = sorted(set(range(len(index))) - taken)
    # Pair each unknown record with a missing one between the same in-order neighbours: that is an alteration.
    gap: list[int] = []
    last = -1
    duplicates = {o[0] for o in out if o[2] == "duplicate"}

    def close_gap(upto: int) -> None:
        holes = [j for j in missing if last < j < upto]
        for k, j in zip(gap, holes, strict=False):
            out.append((k, j + start, "altered",
                        f"its bytes do not hash to the leaf hash that the log stored for record {start + j}"))
        for j in holes[len(gap):]:
            out.append((None, j + start, "missing", f"record {start + j} is not in the archive (deleted)"))
        for k in gap[len(holes):]:
            out.append((k, None, "inserted",
                        f"the record at position {start + k} is not in the log (inserted or altered)"))
        gap.clear()

    for k, jj in enumerate(matched):
        if jj is None:
            if k not in duplicates:
                gap.append(k)
        elif k in in_order:
            close_gap(jj)
            last = jj
    close_gap(len(index))
    return out


# --------------------------------------------------------------------------------------------------------
# The whole verification
# --------------------------------------------------------------------------------------------------------


def verify_archive(
    source: ArchiveSource, anchor: Anchor, *, runner: ChunkRunner = serial_runner,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Verify an archive against ``anchor``; the report lists every problem (module docstring steps).

    Never raises for a bad archive: every problem is a :class:`Finding`.
    """
    m = source.manifest
    report = VerifyReport(origin=m.origin, start=m.start, end=m.end, checkpoints=len(source.checkpoints))
    add = report.findings.append
    # (1) the global configurations that the anchor vouches for
    trust, conf_findings = load_trust(anchor, source.globalconfs, m.globalconf)
    report.findings.extend(conf_findings)
    if trust is None:
        return report
    report.configurations = tuple(c.version for c in trust.confs)
    # (3) the records, chunk by chunk (before the checkpoints: their stapled certificates serve step 2)
    context = CheckContext(anchor=anchor.to_bytes(), envelopes=tuple(source.globalconfs), origin=m.origin)
    total = m.end - m.start
    results: list[ChunkResult] = []

    span_of = getattr(source, "chunk_span", None) if getattr(runner, "reads_files", False) else None

    def chunks() -> Iterator[tuple[Chunk, ChunkData]]:
        for chunk in m.chunks:
            yield chunk, (span_of(chunk) if span_of is not None else source.read_chunk(chunk))

    for result in runner(context, chunks()):
        results.append(result)
        report.records_read += result.lines
        if progress is not None:
            progress(min(report.records_read, total), total)
    actual = b"".join(r.leaves for r in results)
    pairs: set[tuple[bytes, bytes]] = set()
    for r in results:
        pairs |= r.pairs
        report.records_valid += r.valid
        for t in (r.first_created, r.last_created):
            if t is not None:
                report.first_created = t if report.first_created is None else min(report.first_created, t)
                report.last_created = t if report.last_created is None else max(report.last_created, t)
    report.certificates = len(pairs)
    # (2) the checkpoints
    verified, cp_findings = verify_checkpoints(
        source.checkpoints, m.origin, trust, source.certificates, pairs, source.ocsp_responses,
    )
    report.checkpoints_verified = len(verified)
    # (4) order and completeness against the stored leaf hashes; (5) the tree against the checkpoints
    index = source.leaves
    n_actual, n_index = len(actual) // HASH_SIZE, len(index) // HASH_SIZE
    index_ok = len(index) % HASH_SIZE == 0
    inside = [v for v in verified if m.start <= v.size]
    roots_actual = _roots_at(m.start, m.prefix, actual, [v.size for v in inside if v.size <= m.start + n_actual])
    roots_index = roots_actual if index == actual else _roots_at(  # the usual case: one tree, built once
        m.start, m.prefix, index, [v.size for v in inside if index_ok and v.size <= m.start + n_index])
    index_authentic = any(roots_index.get(v.size) == v.root_hash for v in inside) and index_ok
    covered = 0
    tree_findings: list[Finding] = []
    for v in sorted(verified, key=lambda v: v.size):
        where = f"checkpoint {v.number} (size {v.size})"
        if v.size < m.start:
            tree_findings.append(Finding(where=where, problem="range", severity="note",
                                         message=f"precedes the archive's first record {m.start}; not compared"))
            continue
        got = roots_actual.get(v.size)
        if got is None:
            tree_findings.append(Finding(
                where=where, problem="tree",
                message=f"commits to {v.size} records but the archive ends at {m.start + n_actual} "
                        "(records missing or archive cut short)",
            ))
        elif got != v.root_hash:
            tree_findings.append(Finding(
                where=where, problem="tree",
                message=f"records {max(covered, m.start)}..{v.size - 1} do not reproduce the signed root hash (records "
                        "altered, missing, inserted or reordered" + (
                            "; the stored leaf hashes do, see the records named"
                            if roots_index.get(v.size) == v.root_hash else
                            "; the stored leaf hashes were changed too, so the records cannot be named") + ")",
            ))
        else:
            covered = max(covered, v.size)
    report.covered_until = covered
    # per-record findings, named by the sequence number they belong to
    by_line: dict[int, int] = {}
    aligned = compare_with_index(
        [actual[i:i + HASH_SIZE] for i in range(0, len(actual), HASH_SIZE)],
        [index[i:i + HASH_SIZE] for i in range(0, len(index) - len(index) % HASH_SIZE, HASH_SIZE)],
        m.start,
    ) if index_ok and index != actual else []
    qualifier = "" if index_authentic else " (per leaves.bin, which no verified checkpoint vouches for)"
    order_findings: list[Finding] = []
    for line, seq, problem, message in aligned:
        if line is not None and seq is not None:
            by_line[line] = seq
        order_findings.append(Finding(where=f"record {seq}" if seq is not None else f"position {m.start + (line or 0)}",
                                      problem=problem, message=message + qualifier, seq=seq))
    if not index_ok:
        add(Finding(where="archive", problem="malformed",
                    message=f"leaves.bin is {len(index)} bytes, not a multiple of {HASH_SIZE}"))
    line_base = 0
    record_findings: list[Finding] = []
    for r in results:
        for f in r.findings:
            line = line_base + f.line
            seq = by_line.get(line, m.start + line)
            record_findings.append(Finding(where=f"record {seq}", problem=f.problem, message=f.message, seq=seq))
        line_base += r.lines
    # (6) responses bound to the request records of the same exchange
    request_sigs: dict[str, bytes] = {}
    for r in results:
        for _, request_id, request_sig in r.requests:
            request_sigs.setdefault(request_id, request_sig)
    line_base = 0
    for r in results:
        for line, request_id, bound in r.responses:
            logged = request_sigs.get(request_id)
            if logged is not None and logged != bound:
                seq = by_line.get(line_base + line, m.start + line_base + line)
                record_findings.append(Finding(
                    where=f"record {seq}", problem="binding", seq=seq,
                    message=f"the response is bound to a request signature other than that of the logged "
                            f"request {request_id[:80]!r}",
                ))
        line_base += r.lines
    # (7) coverage: records that no verified checkpoint commits to (a checkpoint that commits to records but
    #     whose root they do not reproduce is reported under (5) instead)
    end_actual = m.start + n_actual
    committed = max((v.size for v in verified), default=0)
    if committed < end_actual:
        first_uncovered = max(committed, m.start)
        report.findings.append(Finding(
            where=f"records {first_uncovered}..{end_actual - 1}", problem="coverage",
            message="not covered by any verified checkpoint: their place in the log is not proven",
        ))
    report.findings[:0] = cp_findings
    report.findings.extend(order_findings)
    report.findings.extend(tree_findings)
    report.findings.extend(sorted(record_findings, key=lambda f: (f.seq or 0)))
    return report


__all__ = [
    "ArchiveSource",
    "CheckContext",
    "Checked",
    "ChunkData",
    "ChunkResult",
    "Finding",
    "LeanInput",
    "ProcessPoolRunner",
    "RecordChecker",
    "TrustSet",
    "VerifyReport",
    "check_chunk",
    "compare_with_index",
    "lean_input",
    "load_trust",
    "serial_runner",
    "split_record",
    "verify_archive",
    "verify_checkpoints",
]
