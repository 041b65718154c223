"""Step 3 of the archive verification, the general way: one record checked through the RFC 9421 verifier (pure).

:meth:`RecordChecker.check` makes steps 3a-3d for any record: it parses the JSON, re-encodes it to show the
form canonical, finds the blobs it names (certificate and OCSP response) among the archive's, rebuilds the
signature base from its template and shows the template canonical, and verifies the signature with
:func:`gateway.protocol.signatures.verify_request` (or ``verify_response``) over headers rebuilt from the record
and its signature base. It is the reference for
the lean check (:class:`gateway.messagelog.verify.lean.LeanChecker`), and the one that says what is wrong
with a record (:class:`_RecordProblem`). The caches it keeps (identifiers, base64, certificate verdicts) serve
the lean check too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.x509 import ocsp as x509_ocsp

from gateway.errors import GatewayError, TrustError
from gateway.globalconf import peertrust
from gateway.identifiers import ClientId, MemberId, ServiceId, member_of, parse_client
from gateway.messagelog.record import (
    BASE_SOURCES,
    FORMAT_VERSION,
    MAX_EXTENSIONS,
    MAX_ID_LENGTH,
    MAX_TEXT_LENGTH,
    base_template,
    blob_name,
    decode,
    rebuild_base,
)
from gateway.messagelog.verify.trustset import TrustSet
from gateway.protocol import signatures
from gateway.trust.ocsp import CLOCK_SKEW

# The members of a version-2 record (docs/messagelog.md section 1); a unit test compares with record.py.
RECORD_FIELDS = frozenset({
    "body", "body_digest", "client", "created", "extensions", "issue", "kind", "message_id", "method",
    "ocsp_response", "origin", "path", "request_id", "service", "side", "signature", "signature_base",
    "signature_input", "signing_cert", "status", "user_id", "v",
})
_CREATED_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_BLOB_NAME_RE = re.compile(r"[0-9a-f]{64}")
_EXT_KEY_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_CREATED_PARAM_RE = re.compile(r";created=(-?[0-9]+)")
_REQ_IDENT = signatures.REQUEST_SIGNATURE_COMPONENT


class _RecordProblem(Exception):
    """What is wrong with a record: ``problem`` names it (a :class:`~.report.Finding`'s), ``message`` says it."""

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


class Checked(NamedTuple):
    """What step 3 establishes for a record that verifies (a named tuple: one is built per record)."""

    kind: str
    request_id: str
    created: datetime
    signature: bytes  # the record's own signature value
    bound: bytes | None  # a response's bound request signature
    pair: tuple[bytes, bytes]  # (signing certificate, OCSP response), DER


class RecordChecker:
    """Step 3 for the records of one origin, the general way; keeps caches of identifiers and certificate
    verdicts.

    ``blobs`` are the archive's ``certs/`` and ``ocsp/`` members as ``(name, bytes)``: those whose bytes hash
    to their name serve the records that name them; the others are altered, and a record naming one is told so.
    """

    def __init__(self, trust: TrustSet, origin: str, blobs: Iterable[tuple[str, bytes]] = ()) -> None:
        self.trust = trust
        self.origin = origin
        self.blobs: dict[str, bytes] = {}
        self.altered: set[str] = set()
        for name, data in blobs:
            if blob_name(data) == name:
                self.blobs[name] = data
            else:
                self.altered.add(name)
        self.altered -= self.blobs.keys()  # a name held twice, once intact, serves
        self._clients: dict[str, ClientId] = {}
        self._services: dict[str, ServiceId] = {}
        self._b64: dict[str, bytes] = {}
        self._b64_of: dict[bytes, str] = {}
        self._signers: dict[tuple[str, str], MemberId] = {}
        # (cert DER, OCSP DER, member, configuration index) -> (certificate, valid from, valid until)
        self._certs: dict[tuple[bytes, bytes, MemberId, int], tuple[x509.Certificate, datetime, datetime]] = {}

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

    def _signer(self, kind: str, key: str, client: ClientId, service: ServiceId) -> MemberId:
        """Who must sign: the client's member for a request, the provider's for a response."""
        hit = self._signers.get((kind, key))
        if hit is None:
            hit = member_of(client) if kind == "request" else service.member
            self._signers[(kind, key)] = hit
        return hit

    def blob(self, field_name: str, value: object) -> bytes:
        """The blob a record's ``signing_cert`` or ``ocsp_response`` names.

        Raises:
            _RecordProblem: ``malformed`` for a value that is not a blob name; ``blob`` for a blob the archive
                does not hold, or holds altered.
        """
        if not isinstance(value, str) or not _BLOB_NAME_RE.fullmatch(value):
            raise _RecordProblem("malformed", f"field {field_name} is not a blob name (64 lower-case hex digits)")
        data = self.blobs.get(value)
        if data is None:
            what = "certificate" if field_name == "signing_cert" else "OCSP response"
            if value in self.altered:
                raise _RecordProblem("blob", f"its {what} (field {field_name}) is blob {value}, whose bytes in the "
                                             "archive do not hash to that name (altered)")
            raise _RecordProblem("blob", f"its {what} (field {field_name}) is blob {value}, which the archive "
                                         "does not hold (missing)")
        return data

    def _b64_text(self, der: bytes) -> str:
        """The standard base64 of a blob (cached: a log's records name few blobs)."""
        hit = self._b64_of.get(der)
        if hit is None:
            if len(self._b64_of) > 4096:
                self._b64_of.clear()
            hit = self._b64_of[der] = base64.b64encode(der).decode("ascii")
        return hit

    def _cached_b64(self, name: str, value: object) -> bytes:
        if not isinstance(value, str):
            return _b64(name, value)  # raises: the value is not base64 text
        hit = self._b64.get(value)
        if hit is not None:
            return hit
        raw = _b64(name, value)
        if len(self._b64) > 4096:
            self._b64.clear()
        self._b64[value] = raw
        return raw

    def check_cert(self, cert_der: bytes, ocsp_der: bytes, member: MemberId, t: datetime) -> x509.Certificate:
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
        cert = peertrust.check_signing_cert(cert_der, ocsp_der, conf, member=member, now=t)
        single = x509_ocsp.load_der_ocsp_response(ocsp_der)
        this_update = single.this_update_utc
        lo = max(this_update - CLOCK_SKEW, cert.not_valid_before_utc)
        hi = min(this_update + timedelta(seconds=conf.ocsp_freshness_seconds), cert.not_valid_after_utc)
        if single.next_update_utc is not None:
            hi = min(hi, single.next_update_utc + CLOCK_SKEW)
        self._certs[key] = (cert, lo, hi)
        return cert

    # -- the record

    def check(self, line: bytes) -> Checked:
        """Steps 3a-3d for one record, through the general RFC 9421 verifier (:mod:`gateway.protocol.signatures`): the
        reference for :meth:`check_lean`, and the one that says what is wrong with a record.

        Raises:
            _RecordProblem: what is wrong.
        """
        # (3a) canonical version-2 JSON of this origin, every field of the right type
        try:
            obj = json.loads(line)
            canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        except (ValueError, UnicodeError, RecursionError):
            canonical = None
            obj = None
        if canonical != line or not isinstance(obj, dict):
            raise _RecordProblem("malformed", _decode_message(line, self.blobs))
        if obj.get("v") != FORMAT_VERSION or type(obj.get("v")) is not int:  # 2.0 == 2 in Python, not canonical
            raise _RecordProblem("malformed", f"format version {obj.get('v')!r} is not supported (expected "
                                              f"{FORMAT_VERSION})")
        if obj.keys() != RECORD_FIELDS:
            raise _RecordProblem("malformed", _decode_message(line, self.blobs))
        if obj["origin"] != self.origin:
            raise _RecordProblem("origin", f"record of origin {str(obj['origin'])[:80]!r}, not {self.origin!r}")
        kind, status = obj["kind"], obj["status"]
        if kind == "request":
            if status is not None or obj["side"] not in ("client", "server"):
                raise _RecordProblem("malformed", _decode_message(line, self.blobs))
        elif kind == "response":
            if type(status) is not int or not 100 <= status <= 599 or obj["side"] not in ("client", "server"):
                raise _RecordProblem("malformed", _decode_message(line, self.blobs))
        elif kind == "usage":
            return self._check_usage(obj, line)
        else:
            raise _RecordProblem("malformed", f"kind {str(kind)[:20]!r} is not request, response or usage")
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
            raise _RecordProblem("malformed", _decode_message(line, self.blobs))
        client = self._client(_text(obj, "client"))
        service = self._service(_text(obj, "service"))
        cert_der = self.blob("signing_cert", obj["signing_cert"])
        ocsp_der = self.blob("ocsp_response", obj["ocsp_response"])
        body = None if obj["body"] is None else _b64("body", obj["body"])
        # the signature base, from its template (and the template the one the encoder makes of that base)
        _, params_sep, params = obj["signature_input"].partition("=")
        sources = (obj["body_digest"], obj["client"], obj["service"], message_id, request_id, user_id, issue,
                   self._b64_text(cert_der), self._b64_text(ocsp_der), params if params_sep else None)
        template = obj["signature_base"]
        try:
            base_text = rebuild_base(template, sources)
        except TrustError as e:
            missing = [p for p in (template if isinstance(template, list) else ())[1::2]
                       if type(p) is int and 0 <= p < len(sources) and sources[p] is None]
            if missing:  # a signed value that the record does not hold (a user id removed...)
                name = BASE_SOURCES[missing[0]][1]
                raise _RecordProblem(
                    "signature", f"the signature base holds the record's {name}, which the record does not have",
                ) from e
            raise _RecordProblem("malformed", e.message) from e
        if not base_text.isascii():
            raise _RecordProblem("signature", "signature base is not ASCII")
        base = base_text.encode("ascii")

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
        signer = self._signer(kind, obj["client"] if kind == "request" else obj["service"], client, service)

        def resolve(keyid: str, c_der: bytes, o_der: bytes, /) -> x509.Certificate:
            # (3c) the certificate and OCSP status as of the message's created time
            try:
                return self.check_cert(c_der, o_der, signer, created)
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
        # (3a, last) the template is the one the encoder makes of that base: a record has one encoding (checked
        #     last, so that a changed signed value is named as such rather than as a template in another form)
        if base_template(base_text, sources) != template:
            raise _RecordProblem("malformed", "the signature base template is not the one its base makes "
                                              "(docs/messagelog.md section 2)")
        return Checked(kind=kind, request_id=request_id, created=created, signature=verified.signature,
                       bound=req_sig, pair=(cert_der, ocsp_der))


    def _check_usage(self, obj: dict[str, Any], line: bytes) -> Checked:
        """A usage record (docs/transparency.md section 3): no signature of its own, the exchange's ids, the
        answer's status, the log owner's stapled certificate and OCSP response, and the ``usage.*``
        extensions; it must decode to the same bytes (one encoding per record)."""
        status, side = obj["status"], obj["side"]
        if type(status) is not int or not 100 <= status <= 599 or side not in ("client", "server"):
            raise _RecordProblem("malformed", _decode_message(line, self.blobs))
        empty = {"signature_input": "", "signature": "", "body_digest": "", "body": None, "user_id": None,
                 "issue": None, "signature_base": [""]}
        for name, value in empty.items():
            if obj[name] != value:
                raise _RecordProblem("malformed", f"a usage record's {name} must be {value!r}")
        extensions = obj["extensions"]
        if not isinstance(extensions, dict) or extensions.get("usage.v") != "1":
            raise _RecordProblem("malformed", "a usage record's extensions must name usage.v 1")
        created_text = obj["created"]
        if not isinstance(created_text, str) or not _CREATED_RE.fullmatch(created_text):
            raise _RecordProblem("malformed", "field created is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
        cert_der = self.blob("signing_cert", obj["signing_cert"])
        ocsp_der = self.blob("ocsp_response", obj["ocsp_response"])
        try:
            record = decode(line, self.blobs)
        except TrustError as e:
            raise _RecordProblem("malformed", e.message) from e
        return Checked(kind="usage", request_id=record.request_id, created=record.created, signature=b"",
                       bound=None, pair=(cert_der, ocsp_der))


def _decode_message(line: bytes, blobs: Mapping[str, bytes]) -> str:
    """The reference decoder's reason for refusing ``line`` (record.decode is strict but slow: errors only)."""
    try:
        decode(line, blobs)
    except (TrustError, ValueError, RecursionError) as e:
        return getattr(e, "message", str(e))
    return "not in the canonical form of docs/messagelog.md"  # pragma: no cover - decode is the stricter


__all__ = ["RECORD_FIELDS", "Checked", "RecordChecker"]
