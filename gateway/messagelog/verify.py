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
   :meth:`RecordChecker.check_lean` makes 3a-3d for records in the form the proxies write with a few string
   operations and caches keyed by exact text (no JSON parse, no general RFC 9421 re-parse, the signature base
   compared with the text that the cached ``Signature-Input`` and the record's values make, most of it in
   base64 without decoding); a record it does not accept goes to :meth:`RecordChecker.check`, the general
   check, which decides and explains. The lean check never accepts what the general one refuses
   (``tests/unit/test_archive_lean.py``, ``tests/unit/test_verify_lean.py``).
4. Order and completeness: the records' leaf hashes are compared with ``leaves.bin`` (the leaf hashes as
   stored by the log). Once ``leaves.bin`` reproduces a verified checkpoint's root it is authenticated, so a
   difference names the record precisely: altered, missing, inserted, duplicated or out of place.
5. Tree: for each verified checkpoint of a size inside the archive's range, the records (after the
   compact-range prefix of the records before the range) must reproduce its root hash. The tree is built as
   the chunks' results arrive, from the roots of the perfect subtrees that each chunk's leaves make (computed
   by the worker that checked it) where the chunk is where the manifest puts it, else leaf by leaf.
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

from gateway.errors import GatewayError, TrustError
from gateway.globalconf import peertrust
from gateway.globalconf.anchor import Anchor
from gateway.globalconf.model import GlobalConf, format_time
from gateway.globalconf.trust import TrustedGlobalConf
from gateway.identifiers import ClientId, MemberId, SecurityServerId, ServiceId, member_of, parse_client
from gateway.messagelog import checkpoint as cp
from gateway.messagelog.archive import CheckpointData, Chunk, ChunkSpan, Manifest
from gateway.messagelog.merkle import HASH_SIZE, MerkleTree, node_hash, perfect_ranges
from gateway.messagelog.record import MAX_EXTENSIONS, MAX_ID_LENGTH, MAX_TEXT_LENGTH, decode
from gateway.protocol import sfv, signatures
from gateway.trust import keys, timestamp
from gateway.trust.ocsp import CLOCK_SKEW

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
_CANONICAL_INT_RE = re.compile(r"[1-9][0-9]{0,14}(?![0-9])")
_KEYID_RE = re.compile(r"[0-9a-f]{64}")
_REQ_IDENT = signatures.REQUEST_SIGNATURE_COMPONENT
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
    # the roots of merkle.perfect_ranges(first, first + lines) over the leaves: where the records before these
    # are as many as the manifest says, the tree of step 5 takes them in place of the leaves
    roots: tuple[bytes, ...] = ()


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
    binascii's strict mode rather than ``b64decode(validate=True)``, whose regular expression is slow.

    Strict mode refuses characters outside the alphabet, padding anywhere but at the end, and a missing pad
    character; what it lets through besides the canonical form is excess padding (``QUJD=``), which the
    length rules out, and non-zero bits in the last character before the padding, checked last. This
    costs no re-encoding (``tests/unit/test_archive_lean.py`` compares it with encoding and comparing).
    """
    try:
        raw = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: not ASCII
        return None
    n = len(raw)
    if len(value) != (n + 2) // 3 * 4:
        return None
    rest = n % 3  # 1: "X==", the last 4 bits of X unused; 2: "X=", the last 2 bits unused
    if (rest == 1 and value[-3] not in _PAD_BITS_ZERO_2) or (rest == 2 and value[-2] not in _PAD_BITS_ZERO_1):
        return None
    return raw


_PAD_BITS_ZERO_2 = frozenset("AQgw")  # base64 digits whose 4 low bits are zero
_PAD_BITS_ZERO_1 = frozenset("AEIMQUYcgkosw048")  # base64 digits whose 2 low bits are zero


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
_REQ_IDENTITY = ("signature", frozenset({("req", True), ("key", signatures.LABEL)}))
_DERIVED: dict[str, tuple[str, ...]] = {"request": signatures.REQUEST_DERIVED, "response": ("@status",)}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "request": signatures.REQUEST_REQUIRED_HEADERS, "response": signatures.RESPONSE_REQUIRED_HEADERS,
}
_STAPLED = (signatures.H_SIGNING_CERT, signatures.H_SIGNING_OCSP)
_STAPLED_PREFIXES = tuple(f'"{name}": ' for name in _STAPLED)  # their lines in a signature base
_CACHE_MAX = 4096  # entries per lean-path cache; cleared when full
_BODY_CACHE_MAX = 256  # characters; the base64 of bodies whose Content-Digest value the lean check caches
# The record as the lean check reads it: four long base64 members found by their markers and closing quotes
# (base64 holds no quote), and the three stretches of short members around them, each read by one regular
# expression that admits only canonical JSON of the right type (strings: no raw quote, backslash other than
# in an escape, or control character; escapes are then checked one by one).
_OCSP_MARK = ',"ocsp_response":"'
_BASE_MARK = ',"signature_base":"'
_INPUT_MARK = '","signature_input":"'
_CERT_MARK = '","signing_cert":"'
_STR = r'[^"\\\x00-\x1f]*(?:\\.[^"\\\x00-\x1f]*)*'
_LEAN_A = re.compile(
    rf',"body_digest":"({_STR})","client":"({_STR})","created":"([0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}T[0-9]{{2}}:'
    rf'[0-9]{{2}}:[0-9]{{2}}\.[0-9]{{6}}Z)","extensions":(\{{[^{{}}]*\}}),"issue":(null|"{_STR}"),'
    rf'"kind":"(request|response)","message_id":"({_STR})","method":"({_STR})"')
_LEAN_B = re.compile(
    rf'","origin":("{_STR}"),"path":"({_STR})","request_id":"({_STR})","service":"({_STR})",'
    rf'"side":"(?:client|server)","signature":"([^"]*)"')  # then read as base64, which admits no other character
_LEAN_C = re.compile(rf'","status":(null|[1-5][0-9][0-9]),"user_id":(null|"{_STR}"),"v":1\}}')
# ECDSA over SHA-256 computed by hashlib: the same check, without a digest context per call in the binding
_ECDSA_PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))


# What a signature base line's value must be, by kind: an index into the record's values that the lean check
# lists (:data:`_REQUEST_VALUES`, :data:`_RESPONSE_VALUES`); a component not named here is signed but not
# logged (``x-road-request-hash``; a response's user id and issue), so any value is taken.
_REQUEST_VALUES = ("@method", "@path", "@query", signatures.H_CONTENT_DIGEST, "x-road-client", "x-road-service",
                   "x-road-id", "x-road-request-id", "x-road-userid", "x-road-issue")
_RESPONSE_VALUES = ("@status", signatures.H_CONTENT_DIGEST, "x-road-client", "x-road-service", "x-road-id",
                    "x-road-request-id")
_SOURCES = {"request": {n: i for i, n in enumerate(_REQUEST_VALUES)},
            "response": {n: i for i, n in enumerate(_RESPONSE_VALUES)}}
# A plan's items: (_TEXT, text), (_FORMAT, format string over the record's values), (_ANY, "") a value not
# in the record, (_BOUND, "") the bound request signature
_TEXT, _FORMAT, _ANY, _BOUND = range(4)
Plan = tuple[tuple[int, str], ...]


def _plan(comps: Sequence[tuple[str, str, str]], sources: Mapping[str, int], end: str) -> Plan:
    """The text of the base lines of ``comps`` (each followed by a line feed) and then ``end``: pieces of text,
    with the record's values in them (``{i}``: value ``i``), between the slots of values it does not hold."""
    items: list[tuple[int, str]] = []
    text = ""
    fields = False

    def flush() -> None:
        items.append((_FORMAT, text) if fields else (_TEXT, text.format()))

    for prefix, name, cat in comps:
        text += prefix.replace("{", "{{").replace("}", "}}")
        source = sources.get(name) if cat != "r" else None
        if source is None:
            flush()
            items.append((_BOUND if cat == "r" else _ANY, ""))
            text, fields = "", False
        else:
            text += f"{{{source}}}"
            fields = True
        text += "\n"
    text += end.replace("{", "{{").replace("}", "}}")
    flush()
    return tuple(items)


@dataclass(frozen=True, slots=True)
class LeanInput:
    """A ``Signature-Input`` value that passed the profile checks of :func:`gateway.protocol.signatures.verify_request`
    (or ``verify_response``) that depend on it alone: parsed once per distinct value and kind.

    The signature base it describes is ``head``, the stapled certificate's and OCSP response's lines (in
    this order, at index ``stapled``), then ``tail`` (which ends with the ``@signature-params`` line): each a
    :data:`Plan` that :func:`_match` compares with the text."""

    components: tuple[tuple[str, str, str], ...]  # (identifier + ": ", name, "d"erived/"h"eader/"r"equest sig)
    params_line: str  # the last line of the signature base
    created: int
    keyid: str
    alg: str
    expires: int | None
    stapled: int
    head: Plan
    tail: Plan
    user: bool  # a request's base signs x-road-userid (then the record has a user id, else it has none)
    issue: bool  # the same for x-road-issue
    known: bool  # the record holds every value of the base: head is one piece and tail is params_line alone


def lean_input(raw: str, kind: str) -> LeanInput | None:
    """The profile checks of ``Signature-Input`` for a ``kind`` record; ``None`` when any fails (or the value
    is of a form our signer never produces): the full check then says what is wrong."""
    try:
        inputs = sfv.parse_dictionary(raw)
    except sfv.SFError:
        return None
    if signatures.LABEL not in inputs:
        return None
    inner, params = inputs[signatures.LABEL]
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
        elif cparams or name in (signatures.H_SIGNATURE_INPUT, signatures.H_SIGNATURE):
            return None
        elif name[:1] == "@":
            if name not in derived:
                return None
            cat = "d"
        else:
            cat = "h"
        try:
            comps.append((sfv.serialize_item(name, cparams) + ": ", name, cat))
        except sfv.SFError:
            return None
    must = {(n, _NO_CPARAMS) for n in (*derived, *_REQUIRED[kind], *_STAPLED)}
    if kind == "response":
        must.add(_REQ_IDENTITY)
    if not must <= seen or not set(params) <= _LEAN_PARAMS:
        return None
    created, keyid, alg, tag, expires = (params.get(k) for k in ("created", "keyid", "alg", "tag", "expires"))
    if (type(created) is not int or type(keyid) is not str or not _KEYID_RE.fullmatch(keyid)
            or type(alg) is not str or alg not in signatures.ALGORITHMS or tag != signatures.TAG
            or not (expires is None or type(expires) is int)):
        return None
    # the verifier's own reading of created (the first ";created=" of the field) must agree
    m = _CREATED_PARAM_RE.search(raw)
    if m is None or int(m.group(1)) != created:
        return None
    try:
        params_text = "(" + " ".join(c[0][:-2] for c in comps) + ")" + sfv.serialize_params(params)
    except sfv.SFError:
        return None
    prefixes = [c[0] for c in comps]
    k = prefixes.index(_STAPLED_PREFIXES[0])
    if prefixes[k + 1:k + 2] != [_STAPLED_PREFIXES[1]]:  # our signers put the OCSP response after the certificate
        return None
    params_line = _PARAMS_LINE + params_text
    sources = _SOURCES[kind]
    head = _plan(comps[:k], sources, "")
    names = {c[1] for c in comps}
    return LeanInput(components=tuple(comps), params_line=params_line, created=created, keyid=keyid, alg=alg,
                     expires=expires if isinstance(expires, int) else None, stapled=k,
                     head=head, tail=_plan(comps[k + 2:], sources, params_line),
                     user="x-road-userid" in names, issue="x-road-issue" in names,
                     known=k + 2 == len(comps) and len(head) == 1)


_KeyInfo = tuple[keys.PublicKey, str, ec.EllipticCurvePublicKey | None]  # key, algorithm, the key if P-256


@dataclass(frozen=True, slots=True, kw_only=True)
class _LeanPair:
    """A stapled certificate and OCSP response as a record holds them (canonical base64 and DER), with their
    two lines of a signature base (``"x-road-signing-cert": ...``, ``"x-road-signing-ocsp": ...``), as text
    and as bytes with their line feeds, and for each alignment ``a`` in 0..2 the base64 of the whole 3-byte
    groups of those bytes from ``a`` on, with the bytes it encodes: where the lines start at a byte offset
    ``3g - a`` of a base, that text is the base's base64 from character ``4g`` on."""

    cert_text: str
    ocsp_text: str
    cert_der: bytes
    ocsp_der: bytes
    der: tuple[bytes, bytes]  # (cert_der, ocsp_der), as Checked.pair
    keyid: str  # lower-case hex SHA-256 of the certificate (RFC 9421 keyid of this profile)
    lines: bytes  # the two lines, each with its line feed
    encoded: tuple[tuple[str, bytes], ...]  # per alignment: (base64 text, the bytes it encodes)

    @classmethod
    def of(cls, cert_text: str, ocsp_text: str, cert_der: bytes, ocsp_der: bytes) -> _LeanPair:
        lines = f"{_STAPLED_PREFIXES[0]}{cert_text}\n{_STAPLED_PREFIXES[1]}{ocsp_text}\n".encode("ascii")
        encoded = []
        for a in range(3):
            mid = lines[a:a + (len(lines) - a) // 3 * 3]
            encoded.append((binascii.b2a_base64(mid, newline=False).decode("ascii"), mid))
        return cls(cert_text=cert_text, ocsp_text=ocsp_text, cert_der=cert_der, ocsp_der=ocsp_der,
                   der=(cert_der, ocsp_der),
                   keyid=hashlib.sha256(cert_der).hexdigest(), lines=lines, encoded=tuple(encoded))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Verdict:
    """:meth:`RecordChecker.check_cert` passed for ``pair`` and ``signer`` at every moment in ``[lo, hi]``
    (under one configuration); ``key`` is the certificate's public key (:meth:`RecordChecker._key_of`)."""

    pair: _LeanPair
    signer: tuple[MemberId, str]
    lo: datetime
    hi: datetime
    key: _KeyInfo


def _find_aligned(base_text: str, encoded: tuple[tuple[str, bytes], ...], a: int, p: int) -> tuple[int, int] | None:
    """``(a, p)``: an alignment ``a`` whose text (:class:`_LeanPair`) is in ``base_text`` at a position ``p``
    that is a multiple of 4: the given one if it is there, else the first occurrence of the first 32
    characters of each alignment's text where the whole text is (anything else is left to the full check)."""
    if base_text.startswith(encoded[a][0], p):
        return a, p
    for a, (enc, _) in enumerate(encoded):
        p = base_text.find(enc[:32])
        if p >= 0 and p % 4 == 0 and base_text.startswith(enc, p):
            return a, p
    return None


def _match(text: str, plan: Plan, values: Sequence[object]) -> str | None:
    """Whether ``text`` is ``plan`` with ``values``: ``None`` if not, else the value in its :data:`_BOUND` slot
    (``""`` if it has none). A slot's value is the text up to the next line feed."""
    pos = 0
    bound = ""
    for code, piece in plan:
        if code <= _FORMAT:
            if code:
                piece = piece.format(*values)
            if not text.startswith(piece, pos):
                return None
            pos += len(piece)
        else:
            end = text.find("\n", pos)
            if end < 0:
                return None
            if code == _BOUND:
                bound = text[pos:end]
            pos = end
    return bound if pos == len(text) else None


def _der_p256_headers(high_r: int, high_s: int) -> tuple[bytes, bytes]:
    """What goes before r and before s in the DER ``ECDSA-Sig-Value`` of a 64-byte ``r || s`` whose halves
    have no leading zero byte: a zero byte where the high bit is set (as :func:`gateway.trust.keys.raw_to_der_ecdsa`
    encodes; a unit test compares)."""
    return (bytes((0x30, 68 + high_r + high_s, 2, 32 + high_r)) + b"\0" * high_r,
            bytes((2, 32 + high_s)) + b"\0" * high_s)


_DER_P256 = tuple(tuple(_der_p256_headers(r, s) for s in (0, 1)) for r in (0, 1))


def _der_p256(raw: bytes) -> bytes:
    """:func:`gateway.trust.keys.raw_to_der_ecdsa` of a 64-byte ``r || s``, without integers when neither half
    starts with a zero byte (all but about 1 in 128)."""
    r0, s0 = raw[0], raw[32]
    if not (r0 and s0):
        return keys.raw_to_der_ecdsa(raw)
    der_r, der_s = _DER_P256[r0 >> 7][s0 >> 7]
    return b"".join((der_r, raw[:32], der_s, raw[32:]))


P256Check = tuple[ec.EllipticCurvePublicKey, bytes, bytes]  # a key, a DER signature and the SHA-256 it signs


def _ecdsa_p256_ok(check: P256Check) -> bool:
    key, der, digest = check
    try:
        key.verify(der, digest, _ECDSA_PREHASHED)
    except InvalidSignature:
        return False
    return True


class Checked(NamedTuple):
    """What step 3 establishes for a record that verifies (a named tuple: one is built per record)."""

    kind: str
    request_id: str
    created: datetime
    signature: bytes  # the record's own signature value
    bound: bytes | None  # a response's bound request signature
    pair: tuple[bytes, bytes]  # (signing certificate, OCSP response), DER


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
        self._pairs: dict[tuple[str, str], _LeanPair | None] = {}
        self._party: dict[tuple[str, str, str], tuple[MemberId, str] | None] = {}
        self._found: dict[str, tuple[int, int]] = {}  # per kind: where the stapled lines were in the last base
        self._tails: dict[tuple[str, bytes], tuple[str, bytes]] = {}
        self._bodies: dict[str, str] = {}  # short bodies' base64 -> their Content-Digest value
        # Signature-Input values apart from their created parameter -> (its digits, the parse), for _lean_input
        self._shapes: dict[tuple[str, str, str], tuple[str, tuple[str, LeanInput] | None]] = {}
        self._last_pair: dict[str, _LeanPair] = {}  # per kind
        self._one_conf = len(trust.confs) == 1
        self._verdicts: dict[tuple[int, int, int], _Verdict] = {}
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
            hit = (member_of(client), signatures.SERVER_PROXY) if kind == "request" else (
                service.member, signatures.CLIENT_PROXY)
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
        """The ``signature_input`` value whose canonical JSON text is ``literal``, and its parse (cached)."""
        key = (literal, kind)
        try:
            return self._inputs[key]
        except KeyError:
            pass
        if len(self._inputs) >= _CACHE_MAX:
            self._inputs.clear()
        value = self._inputs[key] = self._input_by_shape(literal, kind)
        return value

    @staticmethod
    def _parse_input(literal: str, kind: str) -> tuple[str, LeanInput] | None:
        raw = _json_str(literal)
        parsed = None if raw is None or len(raw) > MAX_TEXT_LENGTH else lean_input(raw, kind)
        return None if raw is None or parsed is None else (raw, parsed)

    def _input_by_shape(self, literal: str, kind: str) -> tuple[str, LeanInput] | None:
        """:meth:`_parse_input`, made from the parse of a value that differs only in ``created`` where there
        is one (the proxies' values change every second).

        Where ``;created=`` occurs once and is followed by a canonical positive integer of at most 15 digits
        (an RFC 8941 integer that serialises as written), the value's parse differs from that of the same
        text with another such integer only in that integer: ``created``, and the ``@signature-params``
        line, which holds it once (the other parameters hold no ``;created=``; a component name that did
        would be a second occurrence), and the plan that ends with that line. A value that does not parse,
        or one of another form, is parsed on its own.
        """
        parts = literal.split(";created=")
        m = _CANONICAL_INT_RE.match(parts[1]) if len(parts) == 2 else None
        if m is None:
            return self._parse_input(literal, kind)
        digits = m.group()
        shape = (parts[0], parts[1][len(digits):], kind)
        known = self._shapes.get(shape)
        if known is None or known[1] is None:
            parsed = self._parse_input(literal, kind)
            if len(self._shapes) >= _CACHE_MAX:
                self._shapes.clear()
            self._shapes[shape] = (digits, parsed)
            return parsed
        old, (raw, li) = known[0], known[1]
        raw = raw.replace(";created=" + old, ";created=" + digits, 1)
        before, sep, after = li.params_line.partition(";created=" + old)
        if len(raw) > MAX_TEXT_LENGTH or not sep or after[:1].isdigit():  # (the last two cannot be, see above)
            return self._parse_input(literal, kind)
        params_line = f"{before};created={digits}{after}"
        k = li.stapled
        return raw, LeanInput(li.components, params_line, int(digits), li.keyid, li.alg, li.expires, k, li.head,
                              _plan(li.components[k + 2:], _SOURCES[kind], params_line), li.user, li.issue,
                              li.known)

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
        p256 = pub if alg == signatures.ALG_ECDSA_P256 and isinstance(pub, ec.EllipticCurvePublicKey) else None
        if len(self._keys) >= 256:
            self._keys.clear()
        value = (pub, alg, p256)
        self._keys[id(cert)] = (cert, value)
        return value

    def _parties(self, kind: str, client_text: str, service_text: str) -> tuple[MemberId, str] | None:
        """:meth:`_signer` for a record's client and service (``None`` if either does not parse), cached."""
        key = (kind, client_text, service_text)
        try:
            return self._party[key]
        except KeyError:
            pass
        try:
            client = self._client(client_text)
            service = self._service(service_text)
        except _RecordProblem:
            value = None
        else:
            value = self._signer(kind, client_text if kind == "request" else service_text, client, service)
        if len(self._party) >= _CACHE_MAX:
            self._party.clear()
        self._party[key] = value
        return value

    def _pair(self, cert_text: str, ocsp_text: str) -> _LeanPair | None:
        """The stapled certificate and OCSP response whose canonical base64 the record holds (``None`` if
        either is not canonical base64), with what the lean check derives from them, once per pair."""
        key = (cert_text, ocsp_text)
        try:
            return self._pairs[key]
        except KeyError:
            pass
        if len(self._pairs) >= _CACHE_MAX:
            self._pairs.clear()
        try:
            cert_der = self._cached_b64("signing_cert", cert_text)
            ocsp_der = self._cached_b64("ocsp_response", ocsp_text)
        except _RecordProblem:
            value = None
        else:
            value = _LeanPair.of(cert_text, ocsp_text, cert_der, ocsp_der)
        self._pairs[key] = value
        return value

    def _body(self, text: str) -> str | None:
        """The ``Content-Digest`` value (``sha-256=:...:``) of the body whose base64 is ``text``, ``None`` if that is
        not canonical base64; cached for short bodies (an empty request body is in most requests' records)."""
        body = _b64_canonical(text)
        if body is None:
            return None
        value = f"sha-256=:{binascii.b2a_base64(hashlib.sha256(body).digest(), newline=False).decode('ascii')}:"
        if len(text) <= _BODY_CACHE_MAX:
            if len(self._bodies) >= _CACHE_MAX:
                self._bodies.clear()
            self._bodies[text] = value
        return value

    def _tail(self, li: LeanInput, rest: bytes) -> tuple[str, bytes]:
        """The base64 text and the bytes of the end of a base whose last line is ``li.params_line``, after
        the stapled lines' bytes that end in ``rest`` (0 to 2 bytes), once per pair of them."""
        tail = rest + li.params_line.encode("ascii")
        if len(self._tails) >= _CACHE_MAX:
            self._tails.clear()
        value = self._tails[(li.params_line, rest)] = (binascii.b2a_base64(tail, newline=False).decode("ascii"), tail)
        return value

    def _verdict(self, pair: _LeanPair, signer: tuple[MemberId, str], t: datetime) -> _Verdict | None:
        """Step 3c for the lean check: :meth:`check_cert` (``None`` where it raises), with the certificate's
        public key and whether its keyid is the pair's; reused over the window in which the verdict holds."""
        index = 0 if self._one_conf else self.trust.at(t)[0]
        key = (id(pair), id(signer), index)
        hit = self._verdicts.get(key)
        if hit is not None and hit.pair is pair and hit.signer is signer and hit.lo <= t <= hit.hi:
            return hit
        member, side = signer
        try:
            cert = self.check_cert(pair.cert_der, pair.ocsp_der, member, t, side)
        except TrustError:
            return None
        _, lo, hi = self._certs[(pair.cert_der, pair.ocsp_der, member, index)]
        key_info = self._key_of(cert)
        if key_info is None or signatures.cert_keyid(cert) != pair.keyid:
            return None
        if len(self._verdicts) >= _CACHE_MAX:
            self._verdicts.clear()
        verdict = self._verdicts[key] = _Verdict(pair=pair, signer=signer, lo=lo, hi=hi, key=key_info)
        return verdict

    def check_lean(self, line: bytes | memoryview) -> Checked | None:
        """Steps 3a-3d for one record, specialised for records as the proxies log them; ``None`` when
        anything is not as expected (then :meth:`check` decides, and says what is wrong)."""
        prepared = self.lean(line)
        if prepared is None:
            return None
        checked, p256 = prepared
        return checked if p256 is None or _ecdsa_p256_ok(p256) else None

    def lean(self, line: bytes | memoryview) -> tuple[Checked, P256Check | None] | None:
        """:meth:`check_lean` but for an ECDSA P-256 signature, which it returns to be checked
        (:func:`_ecdsa_p256_ok`) by the caller: :func:`check_chunk` checks the signatures of a chunk one
        after the other, with the curve's tables in the processor's caches rather than evicted by the
        record's text between two of them.

        It makes every check of :meth:`check`, as strictly or more strictly: a record accepted here is
        accepted there (``tests/unit/test_archive_lean.py`` and ``tests/unit/test_verify_lean.py`` compare the
        two on tampered records). It is written for speed, as few steps per record as the checks allow:

        - The record's members are found around its four long base64 values, whose ends are found by their
          closing quote, and the short members between them are read and checked, all at once, by one
          regular expression per stretch (:data:`_LEAN_A`, :data:`_LEAN_B`, :data:`_LEAN_C`).
        - The record carries its exact signature base; instead of re-parsing the message as RFC 9421 does,
          the base is compared with the text that the (cached) ``Signature-Input`` implies with the
          record's own values (:class:`LeanInput`, :func:`_match`).
        - Most of the base is the stapled certificate's and OCSP response's lines, which the record also
          holds: their base64 (per pair and alignment, cached: :class:`_LeanPair`) is compared in place
          rather than decoded. So is the rest where the record holds every value of the base (a request):
          the text it makes is encoded and compared; else (a response, which holds neither the request hash
          nor the request's signature) the rest is decoded and matched with the plan's slots.
        - Caches keyed by exact text: the parsed ``Signature-Input`` (and its shape apart from ``created``),
          the created time, the signer per client and service, the stapled pair, the certificate verdict,
          the ``Content-Digest`` of short bodies.
        """
        # (3a) canonical version-1 JSON of this origin, every field of the right type
        try:
            text = str(line, "utf-8")
        except UnicodeDecodeError:
            return None
        if text.startswith('{"body":"'):
            pos = text.find('"', 9) + 1
            body_text: str | None = text[9:pos - 1]
        elif text.startswith('{"body":null'):
            pos, body_text = 12, None
        else:
            return None
        o = text.find(_OCSP_MARK, pos)
        oe = text.find('"', o + len(_OCSP_MARK))
        b = text.find(_BASE_MARK, oe)
        be = text.find('"', b + len(_BASE_MARK))
        i = be + len(_INPUT_MARK)
        c = text.find(_CERT_MARK, i)
        ce = text.find('"', c + len(_CERT_MARK))
        if min(pos, o, oe, b, be, c, ce) <= 0 or not text.startswith(_INPUT_MARK, be):
            return None
        m_a, m_b, m_c = _LEAN_A.fullmatch(text, pos, o), _LEAN_B.fullmatch(text, oe, b), _LEAN_C.fullmatch(text, ce)
        if m_a is None or m_b is None or m_c is None:
            return None
        (body_digest, client_text, created_text, extensions, issue, kind, message_id, method) = m_a.groups()
        origin, path, request_id, service_text, sig_text = m_b.groups()
        status_text, user_id = m_c.groups()
        if origin != self._origin_json or (status_text == "null") != (kind == "request"):
            return None
        if text.find("\\", pos, o) >= 0 or text.find("\\", oe, b) >= 0 or text.find("\\", ce) >= 0:  # escapes
            strings = _json_strs(*(f'"{v}"' for v in (body_digest, client_text, message_id, method, path,
                                                      request_id, service_text, sig_text)))
            if strings is None:
                return None
            body_digest, client_text, message_id, method, path, request_id, service_text, sig_text = strings
            user = None if user_id == "null" else _json_str(user_id)
            issue_value = None if issue == "null" else _json_str(issue)
            if (user is None and user_id != "null") or (issue_value is None and issue != "null"):
                return None
        else:
            user = None if user_id == "null" else user_id[1:-1]
            issue_value = None if issue == "null" else issue[1:-1]
        if len(message_id) > MAX_ID_LENGTH or len(request_id) > MAX_ID_LENGTH or (max(
                o - pos, b - oe, len(text) - ce) > MAX_TEXT_LENGTH and max(  # a literal is no shorter than its value
                len(method), len(path), len(sig_text), len(body_digest), len(client_text), len(service_text),
                len(user or ""), len(issue_value or "")) > MAX_TEXT_LENGTH):
            return None
        if extensions != "{}" and not _canonical_extensions(extensions):
            return None
        hit = self._created.get(created_text) or self._created_of(created_text)
        literal = text[i - 1:c + 1]
        parsed_input = self._inputs.get((literal, kind)) or self._lean_input(literal, kind)
        signer = self._party.get((kind, client_text, service_text)) or self._parties(kind, client_text, service_text)
        # the stapled certificate and OCSP response: most often those of the last record of this kind
        pair = self._last_pair.get(kind)
        cert_at, ocsp_at = c + len(_CERT_MARK), o + len(_OCSP_MARK)
        if (pair is None or len(pair.cert_text) != ce - cert_at or len(pair.ocsp_text) != oe - ocsp_at
                or not text.startswith(pair.cert_text, cert_at) or not text.startswith(pair.ocsp_text, ocsp_at)):
            pair = self._pair(text[cert_at:ce], text[ocsp_at:oe])
            if pair is not None:
                self._last_pair[kind] = pair
        # the body, if kept: canonical base64, and the Content-Digest value the proxies write for it
        body_digest_of = None if body_text is None else (self._bodies.get(body_text) or self._body(body_text))
        if hit is None or parsed_input is None or signer is None or pair is None or (
                body_digest_of is None and body_text is not None):
            return None
        created, ts = hit
        li = parsed_input[1]
        if created.microsecond or li.created != ts or (li.expires is not None and li.expires < ts):
            return None
        if li.keyid != pair.keyid:
            return None

        # (3b) the signature base is exactly the listed components with the record's values: the text before
        #      the stapled lines, those lines (compared as base64, where they start on a 4-character boundary
        #      in one of the 3 alignments), and the text after them
        if kind == "request":
            if (user is not None) != li.user or (issue_value is not None) != li.issue:
                return None
            target, _, query = path.partition("?")
            values: tuple[str | None, ...] = (method, target or "/", "?" + query, body_digest, client_text,
                                              service_text, message_id, request_id, user, issue_value)
        else:
            values = (status_text, body_digest, client_text, service_text, message_id, request_id)
        base_text = text[b + len(_BASE_MARK):be]
        lines = pair.lines
        bound: bytes | None = None
        k = li.stapled
        if li.known:  # the record holds every value of the base: compare it as base64
            code, before = li.head[0]
            if code:
                before = before.format(*values)
            a = -len(before) % 3
            p = (len(before) + a) // 3 * 4
            enc, mid = pair.encoded[a]
            try:
                head = before.encode("ascii") + lines[:a]
            except UnicodeEncodeError:
                return None
            rest = lines[a + len(mid):]
            after_text = self._tails.get((li.params_line, rest)) or self._tail(li, rest)
            if (not base_text.startswith(enc, p) or base_text[p + len(enc):] != after_text[0]
                    or base_text[:p] != binascii.b2a_base64(head, newline=False).decode("ascii")):
                return None
            tail = after_text[1]
            # no CR; no white space around a value (each prefix ends with ": "); no line feed in a value
            if ("\r" in before or "\t" in before or "  " in before or " \n" in before
                    or before.count("\n") != k):
                return None
        else:  # decode what is around the stapled lines, and match it with the values' slots
            if len(li.head) == 1:  # where the stapled lines start is known
                code, piece = li.head[0]
                n = len(piece.format(*values) if code else piece)
                found = _find_aligned(base_text, pair.encoded, -n % 3, (n + 2) // 3 * 4)
            else:  # try where they were in the last record of this kind
                found = _find_aligned(base_text, pair.encoded, *self._found.get(kind, (0, 0)))
                if found is not None:
                    self._found[kind] = found
            if found is None:
                return None
            a, p = found
            enc, mid = pair.encoded[a]
            try:  # no padding before the end (the head would decode short)
                head = binascii.a2b_base64(base_text[:p], strict_mode=True)
            except (binascii.Error, ValueError):
                return None
            tail_or_none = _b64_canonical(base_text[p + len(enc):])
            if tail_or_none is None or len(head) * 4 != p * 3:
                return None
            tail = tail_or_none
            n_head, n_tail = len(head) - a, len(lines) - a - len(mid)
            if head[n_head:] != lines[:a] or tail[:n_tail] != lines[a + len(mid):]:
                return None
            try:
                before, after = head[:n_head].decode("ascii"), tail[n_tail:].decode("ascii")
            except UnicodeDecodeError:
                return None
            both = before + after
            if ("\r" in both or "\t" in both or "  " in both or " \n" in both
                    or before.count("\n") != k or after.count("\n") != len(li.components) - k - 2):
                return None
            bound_text = _match(after, li.tail, values)
            if bound_text is None or _match(before, li.head, values) is None:
                return None
            if kind == "response":  # the bound request signature: canonical base64 between colons
                if len(bound_text) < 2 or bound_text[0] != ":" or bound_text[-1] != ":":
                    return None
                bound = _b64_canonical(bound_text[1:-1])
                if bound is None:
                    return None
        # the signature: "xroad=:" and canonical base64 of the raw signature, the form the proxies write
        if sig_text[:7] != "xroad=:" or sig_text[-1:] != ":":
            return None
        signature = _b64_canonical(sig_text[7:-1])
        if not signature:
            return None
        # (3c) the certificate and OCSP status as of the message's created time
        verdict = self._verdicts.get((id(pair), id(signer), 0 if self._one_conf else self.trust.at(created)[0]))
        if (verdict is None or verdict.pair is not pair or verdict.signer is not signer
                or not verdict.lo <= created <= verdict.hi):
            verdict = self._verdict(pair, signer, created)
            if verdict is None:
                return None
        pub, alg, p256 = verdict.key
        if li.alg != alg:
            return None
        # (3d) the body, if it was kept, is the one signed
        if body_digest_of is not None and body_digest != body_digest_of:
            body = _b64_canonical(body_text or "")
            try:  # not the one form the proxies write: the general reading decides
                signatures.verify_content_digest(body_digest, hashlib.sha256(body or b"").digest())
            except TrustError:
                return None
        checked = Checked(kind, request_id, created, signature, bound, pair.der)
        # (3b, last) the signature over the base
        if p256 is None:
            try:
                keys.verify_bytes(pub, alg, head + mid + tail, signature)
            except (InvalidSignature, TrustError):
                return None
            return checked, None
        if len(signature) != 64:
            return None
        digest = hashlib.sha256(head)
        digest.update(mid)
        digest.update(tail)
        return checked, (p256, _der_p256(signature), digest.digest())

    # -- the record

    def check(self, line: bytes) -> Checked:
        """Steps 3a-3d for one record, through the general RFC 9421 verifier (:mod:`gateway.protocol.signatures`): the
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
        headers[signatures.H_SIGNATURE_INPUT] = obj["signature_input"]
        headers[signatures.H_SIGNATURE] = obj["signature"]
        expected: dict[str, str | None] = {
            "x-road-client": obj["client"], "x-road-service": obj["service"], "x-road-id": message_id,
            "x-road-request-id": request_id, signatures.H_CONTENT_DIGEST: obj["body_digest"],
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
        for name, der in ((signatures.H_SIGNING_CERT, cert_der), (signatures.H_SIGNING_OCSP, ocsp_der)):
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
                verified = signatures.verify_request(
                    method=obj["method"], path=path, query=query if sep else None, headers=headers,
                    now=created, max_skew_seconds=0, resolve_cert=resolve,
                )
            else:
                if req_sig is None:
                    raise _RecordProblem("signature", "the response signature is not bound to a request signature")
                verified = signatures.verify_response(
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
                signatures.verify_content_digest(obj["body_digest"], hashlib.sha256(body).digest())
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


def _subtree_roots(first: int, leaves: bytes) -> tuple[bytes, ...]:
    """The roots of the aligned perfect subtrees (:func:`gateway.messagelog.merkle.perfect_ranges`) that the
    leaf hashes ``leaves`` make if the first one is leaf ``first`` of the log (RFC 9162 section 2.1.1)."""
    sha256 = hashlib.sha256
    out: list[bytes] = []
    for lo, hi in perfect_ranges(first, first + len(leaves) // HASH_SIZE):
        level = [leaves[i:i + HASH_SIZE] for i in range((lo - first) * HASH_SIZE, (hi - first) * HASH_SIZE, HASH_SIZE)]
        while len(level) > 1:
            level = [sha256(b"\x01" + left + right).digest() for left, right in zip(level[::2], level[1::2],
                                                                                  strict=True)]
        out.append(level[0])
    return tuple(out)


def _append_subtrees(tree: MerkleTree, end: int, roots: Sequence[bytes]) -> None:
    """Extend ``tree`` to ``end`` leaves by the roots of :func:`gateway.messagelog.merkle.perfect_ranges` from
    its size to ``end``: an aligned perfect subtree of ``2**h`` leaves is added as a binary counter adds at bit
    ``h``, merging the frontier's subtrees of the same height (as ``2**h`` calls of ``append`` would)."""
    frontier = tree.frontier
    assert frontier is not None
    for (lo, hi), root in zip(perfect_ranges(tree.size, end), roots, strict=True):
        n = lo >> ((hi - lo).bit_length() - 1)
        while n & 1:
            root = node_hash(frontier.pop(), root)
            n >>= 1
        frontier.append(root)
        tree.size = hi


def _extend_tree(tree: MerkleTree, result: ChunkResult, wanted: set[int], roots: dict[int, bytes]) -> None:
    """Add a chunk's leaves to ``tree`` (step 5), noting the root at each size in ``wanted`` reached on the way:
    by the subtree roots that the worker computed when the chunk starts where the manifest says and no wanted
    size falls inside it, else by subtree roots computed here, between the wanted sizes."""
    start, end = tree.size, tree.size + result.lines
    cuts = sorted(s for s in wanted if start < s < end)
    if result.roots and start == result.first and not cuts:
        _append_subtrees(tree, end, result.roots)
    else:
        for stop in (*cuts, end):
            x, y = (tree.size - start) * HASH_SIZE, (stop - start) * HASH_SIZE
            _append_subtrees(tree, stop, _subtree_roots(tree.size, result.leaves[x:y]))
            if stop in wanted:
                roots[stop] = tree.root()
    if tree.size in wanted:
        roots[tree.size] = tree.root()


def check_chunk(checker: RecordChecker, first: int, data: bytes) -> ChunkResult:
    """Step 3 for one records member: each line checked, its leaf hash computed (and the roots of the
    subtrees that they make, for step 5).

    The lean check (:meth:`RecordChecker.lean`) of every line comes first, then the ECDSA signatures it
    leaves, one after the other, then, in line order, the general check of each line that the lean check did
    not accept or whose signature does not verify.
    """
    leaves = bytearray()
    sha256 = hashlib.sha256
    lean = checker.lean
    # per line: its view, and what the lean check made of it (None: not accepted)
    prepared: list[tuple[memoryview, tuple[Checked, P256Check | None] | None]] = []
    # the lines as views of the member's bytes: data.split(b"\n") without the empty one after a final line feed,
    # but with no copy of each line
    view = memoryview(data)
    size = len(data)
    pos = 0
    while pos < size:
        end = data.find(b"\n", pos)
        if end < 0:
            end = size
        line = view[pos:end]
        pos = end + 1
        # (3e) the leaf hash, whatever the record's state
        h = sha256(b"\x00")
        h.update(line)
        leaves += h.digest()
        prepared.append((line, lean(line)))
    # the signatures, one after the other: whether the lean check accepts each line
    accepted = [p is not None and (p[1] is None or _ecdsa_p256_ok(p[1])) for _, p in prepared]
    findings: list[RecordFinding] = []
    requests: list[tuple[int, str, bytes]] = []
    responses: list[tuple[int, str, bytes]] = []
    pairs: set[tuple[bytes, bytes]] = set()
    lo: datetime | None = None
    hi: datetime | None = None
    valid = 0
    for i, ((line, lean_result), ok) in enumerate(zip(prepared, accepted, strict=True)):
        if ok and lean_result is not None:
            checked = lean_result[0]
        else:  # not in the usual form, or not valid: the general check decides and explains
            try:
                checked = checker.check(line.tobytes())
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
    leaf_hashes = bytes(leaves)
    return ChunkResult(
        first=first, lines=len(prepared), leaves=leaf_hashes, valid=valid, findings=tuple(findings),
        requests=tuple(requests), responses=tuple(responses), pairs=frozenset(pairs), first_created=lo,
        last_created=hi, roots=_subtree_roots(first, leaf_hashes),
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


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which a container or ``taskset`` may narrow)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ProcessPoolRunner:
    """Check chunks in ``workers`` processes (default: one per usable CPU), keeping ``2 * workers`` in flight.

    ECDSA verification (70-90 us per record) dominates; this spreads it over the cores. Workers read the
    records members from the archive file themselves (:class:`ChunkSpan`) and send back leaf hashes,
    findings and the few fields the cross-record steps need, so little crosses between processes.
    """

    reads_files = True  # verify_archive sends ChunkSpans when the source can give them

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or usable_cpus()

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
                                                side=signatures.CLIENT_PROXY)
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

    # (5, as the results come) the tree over the records, with its root at each size that a checkpoint names
    wanted = set()
    for entry in source.checkpoints:
        try:
            wanted.add(cp.parse_checkpoint(cp.parse_note(entry.note).text).size)
        except (TrustError, UnicodeDecodeError):
            continue
    tree = MerkleTree(size=m.start, frontier=list(m.prefix))
    roots_actual: dict[int, bytes] = {m.start: tree.root()} if m.start in wanted else {}
    early: tuple[list[VerifiedCheckpoint], list[Finding]] | None = None
    for result in runner(context, chunks()):
        results.append(result)
        _extend_tree(tree, result, wanted, roots_actual)
        report.records_read += result.lines
        if progress is not None:
            progress(min(report.records_read, total), total)
        if early is None:
            # (2, while the workers go on) the checkpoints with the certificates and OCSP responses of the
            # archive alone: where every one verifies so, the records' stapled ones change nothing (they
            # come after those of the archive in verify_checkpoints' search, which stops at the first that
            # serves), so the result stands; else step 2 is made again below with them
            early = verify_checkpoints(
                source.checkpoints, m.origin, trust, source.certificates, (), source.ocsp_responses,
            )
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
    verified, cp_findings = early if early is not None and not early[1] else verify_checkpoints(
        source.checkpoints, m.origin, trust, source.certificates, pairs, source.ocsp_responses,
    )
    report.checkpoints_verified = len(verified)
    # (4) order and completeness against the stored leaf hashes; (5) the tree against the checkpoints
    index = source.leaves
    n_actual, n_index = len(actual) // HASH_SIZE, len(index) // HASH_SIZE
    index_ok = len(index) % HASH_SIZE == 0
    inside = [v for v in verified if m.start <= v.size]
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
    "usable_cpus",
    "verify_archive",
    "verify_checkpoints",
]
