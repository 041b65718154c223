"""Step 3 of the archive verification, the lean way: records as the proxies log them, decided fast (pure).

:meth:`LeanChecker.check_lean` makes steps 3a-3d for records in the form the proxies write with a few string
operations and caches keyed by exact text: no JSON parse, no general RFC 9421 re-parse, the stored template of
the signature base compared with the text that the cached ``Signature-Input`` and the record's values make,
and the base itself made from that text (:meth:`LeanChecker.lean` says how). It accepts a record or declines it
(``None``); it never refuses one: a record it does not accept goes to the general check it inherits
(:meth:`gateway.messagelog.verify.records.RecordChecker.check`), which decides and explains. The lean check
never accepts what the general one refuses (``tests/unit/test_record_checkers.py`` runs one table of records
through both; ``tests/unit/test_archive_lean.py`` and ``tests/unit/test_verify_lean.py`` compare them on
random changes and test each shortcut against the plain way it replaces).
"""

from __future__ import annotations

import binascii
import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
from gateway.messagelog.record import (
    BASE_SOURCES,
    FORMAT_VERSION,
    MAX_EXTENSIONS,
    MAX_ID_LENGTH,
    MAX_TEXT_LENGTH,
    SOURCE_OCSP,
    SOURCE_PARAMS,
    SOURCE_SIGNING_CERT,
)
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
    of a version-2 record in canonical order and form; ``None`` otherwise.

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
# The record as the lean check reads it: the body found by its closing quote (base64 holds no quote), then the
# members up to the signature base template read by one regular expression that admits only canonical JSON of
# the right type (strings: no raw quote, backslash other than in an escape, or control character; escapes are
# then checked one by one), the template found by the member after it, and the members after it read by another.
_STR = r'[^"\\\x00-\x1f]*(?:\\.[^"\\\x00-\x1f]*)*'
_HEX = r"[0-9a-f]{64}"
_LEAN_A = re.compile(
    rf',"body_digest":"({_STR})","client":"({_STR})","created":"([0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}T[0-9]{{2}}:'
    rf'[0-9]{{2}}:[0-9]{{2}}\.[0-9]{{6}}Z)","extensions":(\{{[^{{}}]*\}}),"issue":(null|"{_STR}"),'
    rf'"kind":"(request|response)","message_id":"({_STR})","method":"({_STR})","ocsp_response":"({_HEX})",'
    rf'"origin":("{_STR}"),"path":"({_STR})","request_id":"({_STR})","service":"({_STR})",'
    rf'"side":"(?:client|server)","signature":"([^"]*)","signature_base":\[')  # the signature: base64, checked
_TEMPLATE_END = '],"signature_input":"'
_LEAN_C = re.compile(rf'\],"signature_input":("{_STR}"),"signing_cert":"({_HEX})","status":(null|[1-5][0-9][0-9]),'
                     rf'"user_id":(null|"{_STR}"),"v":{FORMAT_VERSION}\}}')
# The source number of a template for each line prefix (gateway.messagelog.record.BASE_SOURCES)
_SOURCE_OF_PREFIX = {prefix: n for n, (prefix, _) in enumerate(BASE_SOURCES)}
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


def _escaped(text: str) -> str:
    """``text`` as it is inside a JSON string of the canonical form, ready for ``str.format``."""
    return encode_basestring(text)[1:-1].replace("{", "{{").replace("}", "}}")


def _template_plan(comps: Sequence[tuple[str, str, str]], sources: Mapping[str, int], k: int) -> Plan | None:
    """What the stored template of the base of ``comps`` must be (docs/messagelog.md section 2), as the JSON
    text between its brackets, up to the ``@signature-params`` line's prefix (the rest depends on the record's
    ``signature_input``: :attr:`LeanInput.params_piece`): pieces of text, with the record's values in them, and
    slots for the values it does not hold. ``None`` where a line of a value the record does not hold has the
    prefix of a template source (its template could be a reference or not: the general check decides).

    Each line is as the encoder writes it for a base made of the record's values: a line of a source whose
    value is the record's is its prefix and the source number; the stapled lines are references to the blobs."""
    items: list[tuple[int, str]] = []
    text = '"'
    fields = False

    def flush() -> None:
        items.append((_FORMAT, text) if fields else (_TEXT, text.format()))

    for i, (prefix, name, cat) in enumerate(comps):
        text += _escaped(prefix)
        if i == k:
            text += f'",{SOURCE_SIGNING_CERT},"'
        elif i == k + 1:
            text += f'",{SOURCE_OCSP},"'
        else:
            source = sources.get(name) if cat != "r" else None
            n = _SOURCE_OF_PREFIX.get(prefix)
            if source is None:
                if n is not None:
                    return None
                flush()
                items.append((_BOUND if cat == "r" else _ANY, ""))
                text, fields = "", False
            elif n is not None:
                text += f'",{n},"'
            else:
                text += f"{{{source}}}"
                fields = True
        text += "\\n"
    text += _escaped(_PARAMS_LINE)
    flush()
    return tuple(items)


def _match_slots(text: str, plan: Plan, values: Sequence[object], end: str) -> list[str] | None:
    """The values in the slots of ``plan`` if ``text`` is ``plan`` with ``values`` and then ``end``, else ``None``.

    A slot's value is the text up to the next escaped line feed; it must hold no quote or backslash (no
    escape: what this cannot read is left to the general check) and no space at either end (RFC 9421 trims
    values, so a base with one would not be what the verifier rebuilds)."""
    pos = 0
    slots: list[str] = []
    last = len(plan) - 1
    for i, (code, piece) in enumerate(plan):
        if code <= _FORMAT:
            if code:
                piece = piece.format(*values)
            if i == last:
                piece += end
            if not text.startswith(piece, pos):
                return None
            pos += len(piece)
        else:
            stop = text.find("\\n", pos)
            if stop < 0:
                return None
            value = text[pos:stop]
            if '"' in value or "\\" in value or value[:1] == " " or value[-1:] == " ":
                return None
            slots.append(value)
            pos = stop
    return slots if pos == len(text) else None


def _fill(plan: Plan, values: Sequence[object], slots: Iterator[str], bound: list[str]) -> str:
    """The base text of ``plan`` with ``values`` and the next values of ``slots`` (the bound request signature's
    appended to ``bound``)."""
    out: list[str] = []
    for code, piece in plan:
        if code == _TEXT:
            out.append(piece)
        elif code == _FORMAT:
            out.append(piece.format(*values))
        else:
            value = next(slots)
            if code == _BOUND:
                bound.append(value)
            out.append(value)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class LeanInput:
    """A ``Signature-Input`` value that passed the profile checks of :func:`gateway.protocol.signatures.verify_request`
    (or ``verify_response``) that depend on it alone: parsed once per distinct value and kind.

    The signature base it describes is ``head``, the stapled certificate's and OCSP response's lines (in
    this order, at index ``stapled``), then ``tail`` (which ends with the ``@signature-params`` line): each a
    :data:`Plan` that :func:`_fill` makes the text of. Its stored template is ``template`` and then
    ``params_piece``, which :func:`_match_slots` compares with the record's."""

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
    template: Plan
    params_piece: str  # the end of the template: source 9, or the params text where the record's differs


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
    template = _template_plan(comps, sources, k)
    if template is None:
        return None
    names = {c[1] for c in comps}
    return LeanInput(components=tuple(comps), params_line=params_line, created=created, keyid=keyid, alg=alg,
                     expires=expires if isinstance(expires, int) else None, stapled=k,
                     head=_plan(comps[:k], sources, ""), tail=_plan(comps[k + 2:], sources, params_line),
                     user="x-road-userid" in names, issue="x-road-issue" in names, template=template,
                     params_piece=_params_piece(raw, params_text))


def _params_piece(raw: str, params_text: str) -> str:
    """How a template ends: with source 9 (the record's ``signature_input`` after its first ``=``) where that is
    the params text, else with the text itself (docs/messagelog.md section 2)."""
    return f'",{SOURCE_PARAMS},""' if raw.partition("=")[2] == params_text else encode_basestring(params_text)[1:]


_KeyInfo = tuple[keys.PublicKey, str, ec.EllipticCurvePublicKey | None]  # key, algorithm, the key if P-256


@dataclass(frozen=True, slots=True, kw_only=True)
class _LeanPair:
    """A record's blobs, the certificate and OCSP response it names, with their two lines of a signature base
    (``"x-road-signing-cert": ...``, ``"x-road-signing-ocsp": ...``, with their line feeds)."""

    cert_der: bytes
    ocsp_der: bytes
    der: tuple[bytes, bytes]  # (cert_der, ocsp_der), as Checked.pair
    keyid: str  # lower-case hex SHA-256 of the certificate (RFC 9421 keyid of this profile): the blob's name
    lines: bytes  # the two lines, each with its line feed

    @classmethod
    def of(cls, cert_name: str, cert_der: bytes, ocsp_der: bytes) -> _LeanPair:
        cert_text = binascii.b2a_base64(cert_der, newline=False).decode("ascii")
        ocsp_text = binascii.b2a_base64(ocsp_der, newline=False).decode("ascii")
        lines = f"{_STAPLED_PREFIXES[0]}{cert_text}\n{_STAPLED_PREFIXES[1]}{ocsp_text}\n".encode("ascii")
        return cls(cert_der=cert_der, ocsp_der=ocsp_der, der=(cert_der, ocsp_der), keyid=cert_name, lines=lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Verdict:
    """:meth:`RecordChecker.check_cert` passed for ``pair`` and ``signer`` at every moment in ``[lo, hi]``
    (under one configuration); ``key`` is the certificate's public key (:meth:`RecordChecker._key_of`)."""

    pair: _LeanPair
    signer: MemberId
    lo: datetime
    hi: datetime
    key: _KeyInfo


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

    def __init__(self, trust: TrustSet, origin: str, blobs: Iterable[tuple[str, bytes]] = ()) -> None:
        super().__init__(trust, origin, blobs)
        # parsed Signature-Input per (value, kind); created per text; the blobs per pair of names;
        # public key and algorithm per certificate object (held in the entry, so its id is not reused)
        self._inputs: dict[tuple[str, str], tuple[str, LeanInput] | None] = {}
        self._created: dict[str, tuple[datetime, int]] = {}
        self._pairs: dict[tuple[str, str], _LeanPair | None] = {}
        self._party: dict[tuple[str, str, str], MemberId | None] = {}
        self._bodies: dict[str, str] = {}  # short bodies' base64 -> their Content-Digest value
        # Signature-Input values apart from their created parameter -> (its digits, the parse), for _lean_input
        self._shapes: dict[tuple[str, str, str], tuple[str, tuple[str, LeanInput] | None]] = {}
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
        # the template's end is the same: the record's text after "=" and the params text differ by the same
        # digits, so they are equal for both values or for neither
        return raw, dataclasses.replace(li, params_line=params_line, created=int(digits),
                                        tail=_plan(li.components[k + 2:], _SOURCES[kind], params_line),
                                        params_piece=li.params_piece if li.params_piece[:1] == '"' else
                                        _params_piece(raw, params_line[len(_PARAMS_LINE):]))

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

    def _pair(self, cert_name: str, ocsp_name: str) -> _LeanPair | None:
        """The blobs that a record names (``None`` if the archive does not hold either intact), with what the
        lean check derives from them, once per pair."""
        key = (cert_name, ocsp_name)
        try:
            return self._pairs[key]
        except KeyError:
            pass
        if len(self._pairs) >= _CACHE_MAX:
            self._pairs.clear()
        cert_der, ocsp_der = self.blobs.get(cert_name), self.blobs.get(ocsp_name)
        value = None if cert_der is None or ocsp_der is None else _LeanPair.of(cert_name, cert_der, ocsp_der)
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

        - The record's members are found around its body, whose end is found by its closing quote, and its
          signature base template, whose end is found by the member after it; the short members around them
          are read and checked, all at once, by one regular expression per stretch (:data:`_LEAN_A`,
          :data:`_LEAN_C`). A record whose signed values hold an escape is left to the general check.
        - Instead of rebuilding the base from the template and re-parsing the message as RFC 9421 does, the
          template is compared with the text that the (cached) ``Signature-Input`` implies with the record's
          own values (:class:`LeanInput`, :func:`_match_slots`): the template the encoder makes of the base
          that the verifier would rebuild. The values the record does not hold (a response's request hash and
          the request's signature) are read from their slots. The base is then made of the same text
          (:func:`_fill`) and the stapled lines of the blobs (per pair, cached: :class:`_LeanPair`).
        - Caches keyed by exact text: the parsed ``Signature-Input`` (and its shape apart from ``created``),
          the created time, the signer per client and service, the blobs per pair of names, the certificate
          verdict, the ``Content-Digest`` of short bodies.
        """
        # (3a) canonical version-2 JSON of this origin, every field of the right type
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
        if pos <= 0:
            return None
        m_a = _LEAN_A.match(text, pos)
        if m_a is None:
            return None
        t_start = m_a.end()
        t_end = text.find(_TEMPLATE_END, t_start)
        m_c = _LEAN_C.fullmatch(text, t_end) if t_end > 0 else None
        if m_c is None:
            return None
        (body_digest, client_text, created_text, extensions, issue, kind, message_id, method, ocsp_name, origin,
         path, request_id, service_text, sig_text) = m_a.groups()
        input_literal, cert_name, status_text, user_id = m_c.groups()
        if origin != self._origin_json or (status_text == "null") != (kind == "request"):
            return None
        user = None if user_id == "null" else user_id[1:-1]
        issue_value = None if issue == "null" else issue[1:-1]
        if text.find("\\", pos, t_start) >= 0 or "\\" in user_id:  # escapes
            # none in a signed value (the general check decides such records); in others, canonical ones
            signed = [body_digest, client_text, message_id, request_id, service_text]
            if kind == "request":
                signed += [method, path, user or "", issue_value or ""]
            if any("\\" in v for v in signed):
                return None
            if kind == "response":
                strings = _json_strs(*(f'"{v}"' for v in (method, path)))
                if strings is None:
                    return None
                method, path = strings
                user = None if user_id == "null" else _json_str(user_id)
                issue_value = None if issue == "null" else _json_str(issue)
                if (user is None and user_id != "null") or (issue_value is None and issue != "null"):
                    return None
        if len(message_id) > MAX_ID_LENGTH or len(request_id) > MAX_ID_LENGTH or (max(
                t_start - pos, len(text) - t_end) > MAX_TEXT_LENGTH and max(  # a literal is no shorter than its value
                len(method), len(path), len(sig_text), len(body_digest), len(client_text), len(service_text),
                len(user or ""), len(issue_value or "")) > MAX_TEXT_LENGTH):
            return None
        if method != method.strip(" \t") or path != path.strip(" \t"):  # RFC 9421 trims them: not as signed
            return None
        if extensions != "{}" and not _canonical_extensions(extensions):
            return None
        hit = self._created.get(created_text) or self._created_of(created_text)
        parsed_input = self._inputs.get((input_literal, kind)) or self._lean_input(input_literal, kind)
        signer = self._party.get((kind, client_text, service_text)) or self._parties(kind, client_text, service_text)
        pair = self._pairs.get((cert_name, ocsp_name)) or self._pair(cert_name, ocsp_name)
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

        # (3b) the signature base template is the one of the base of the listed components with the record's
        #      values (and, in its slots, the values the record does not hold); the base is made of the same
        if kind == "request":
            if (user is not None) != li.user or (issue_value is not None) != li.issue:
                return None
            target, _, query = path.partition("?")
            values: tuple[str | None, ...] = (method, target or "/", "?" + query, body_digest, client_text,
                                              service_text, message_id, request_id, user, issue_value)
        else:
            values = (status_text, body_digest, client_text, service_text, message_id, request_id)
        for v in values:  # RFC 9421 trims values: one with a space at either end is not what was signed
            if v and (v[0] == " " or v[-1] == " "):
                return None
        slots = _match_slots(text[t_start:t_end], li.template, values, li.params_piece)
        if slots is None:
            return None
        given = iter(slots)
        bound_text: list[str] = []
        try:
            head = _fill(li.head, values, given, bound_text).encode("ascii")
            tail = _fill(li.tail, values, given, bound_text).encode("ascii")
        except UnicodeEncodeError:
            return None
        bound: bytes | None = None
        if kind == "response":  # the bound request signature: canonical base64 between colons
            if len(bound_text) != 1:
                return None
            value = bound_text[0]
            if len(value) < 2 or value[0] != ":" or value[-1] != ":":
                return None
            bound = _b64_canonical(value[1:-1])
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
                keys.verify_bytes(pub, alg, head + pair.lines + tail, signature)
            except (InvalidSignature, TrustError):
                return None
            return checked, None
        if len(signature) != 64:
            return None
        digest = hashlib.sha256(head)
        digest.update(pair.lines)
        digest.update(tail)
        return checked, (p256, _der_p256(signature), digest.digest())


__all__ = ["LeanChecker", "LeanInput", "P256Check", "lean_input", "split_record"]
