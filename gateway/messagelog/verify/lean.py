"""Step 3 of the archive verification, the lean way: records as the proxies log them, decided fast (pure).

:meth:`LeanChecker.check_lean` makes steps 3a-3d for records in the form the proxies write with a few string
operations and caches keyed by exact text: no JSON parse, no general RFC 9421 re-parse, the signature base
compared with the text that the cached ``Signature-Input`` and the record's values make, most of it in
base64 without decoding (:meth:`LeanChecker.lean` says how). It accepts a record or declines it (``None``);
it never refuses one: a record it does not accept goes to the general check it inherits
(:meth:`gateway.messagelog.verify.records.RecordChecker.check`), which decides and explains. The lean check
never accepts what the general one refuses (``tests/unit/test_record_checkers.py`` runs one table of records
through both; ``tests/unit/test_archive_lean.py`` and ``tests/unit/test_verify_lean.py`` compare them on
random changes and test each shortcut against the plain way it replaces).
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from gateway.errors import GatewayError, TrustError
from gateway.identifiers import MemberId
from gateway.messagelog.record import MAX_EXTENSIONS, MAX_ID_LENGTH, MAX_TEXT_LENGTH
from gateway.messagelog.verify.records import (
    _CREATED_PARAM_RE,
    _CREATED_RE,
    _EXT_KEY_RE,
    RECORD_FIELDS,
    Checked,
    RecordChecker,
    _RecordProblem,
)
from gateway.messagelog.verify.trustset import TrustSet
from gateway.protocol import sfv, signatures
from gateway.trust import keys

_CANONICAL_INT_RE = re.compile(r"[1-9][0-9]{0,14}(?![0-9])")
_KEYID_RE = re.compile(r"[0-9a-f]{64}")


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
    signer: MemberId
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


class LeanChecker(RecordChecker):
    """Step 3 for the records of one origin: the lean check (:meth:`check_lean`), and the general one
    (:meth:`check`, inherited) for what the lean check does not accept."""

    def __init__(self, trust: TrustSet, origin: str) -> None:
        super().__init__(trust, origin)
        # parsed Signature-Input per (value, kind); created per text; keyid per certificate text;
        # public key and algorithm per certificate object (held in the entry, so its id is not reused)
        self._inputs: dict[tuple[str, str], tuple[str, LeanInput] | None] = {}
        self._created: dict[str, tuple[datetime, int]] = {}
        self._pairs: dict[tuple[str, str], _LeanPair | None] = {}
        self._party: dict[tuple[str, str, str], MemberId | None] = {}
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

    def _parties(self, kind: str, client_text: str, service_text: str) -> MemberId | None:
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

    def _verdict(self, pair: _LeanPair, signer: MemberId, t: datetime) -> _Verdict | None:
        """Step 3c for the lean check: :meth:`check_cert` (``None`` where it raises), with the certificate's
        public key and whether its keyid is the pair's; reused over the window in which the verdict holds."""
        index = 0 if self._one_conf else self.trust.at(t)[0]
        key = (id(pair), id(signer), index)
        hit = self._verdicts.get(key)
        if hit is not None and hit.pair is pair and hit.signer is signer and hit.lo <= t <= hit.hi:
            return hit
        try:
            cert = self.check_cert(pair.cert_der, pair.ocsp_der, signer, t)
        except TrustError:
            return None
        _, lo, hi = self._certs[(pair.cert_der, pair.ocsp_der, signer, index)]
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


__all__ = ["LeanChecker", "LeanInput", "P256Check", "lean_input", "split_record"]
