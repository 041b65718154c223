"""Message-log records and their canonical encoding (pure).

docs/messagelog.md. One :class:`LogRecord` per request or response that a security server signs or
verifies. :meth:`LogRecord.encode` gives the bytes that are stored, hashed into the Merkle tree
(:func:`~gateway.messagelog.merkle.leaf_hash`, RFC 9162 section 2.1.1) and exported to auditors; :func:`decode`
reads them back and accepts only the exact bytes :meth:`~LogRecord.encode` would produce, so one record has one
encoding.

The encoding (version 1, specified for independent implementations in ``docs/messagelog.md``) is RFC 8785
canonical JSON of one object with every field present; byte strings are standard base64 with padding
(RFC 4648 section 4), absent values are ``null``, ``created`` is ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring
from types import MappingProxyType
from typing import Any, Literal, get_args

from gateway.errors import IdentifierError, MessageLogError, TrustError
from gateway.identifiers import ClientId, ServiceId, parse_client
from gateway.messagelog.merkle import leaf_hash as leaf_hash  # a record's leaf hash, re-exported: RFC 9162 lives there
from gateway.trust.canonical import loads_canonical

FORMAT_VERSION = 1
MAX_ORIGIN_LENGTH = 255  # characters; a C2SP checkpoint origin line stays short
MAX_ID_LENGTH = 255  # characters of message_id and request_id; X-Road's queryid column is as long
MAX_TEXT_LENGTH = 8192  # characters for any other text field (user id, issue, path, header values)
MAX_EXTENSIONS = 64  # extension entries per record

Kind = Literal["request", "response"]
Side = Literal["client", "server"]
ExtensionValue = str | tuple[str, ...]

_ORIGIN_RE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: safe in a signed-note origin line
_SURROGATE_RE = re.compile("[\ud800-\udfff]")  # lone surrogates have no UTF-8 form
_EXT_KEY_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_CREATED_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_B64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")

_KINDS: frozenset[str] = frozenset(get_args(Kind))
_SIDES: frozenset[str] = frozenset(get_args(Side))
_NO_EXTENSIONS: Mapping[str, ExtensionValue] = MappingProxyType({})

_FIELDS = (
    "body", "body_digest", "client", "created", "extensions", "issue", "kind", "message_id", "method",
    "ocsp_response", "origin", "path", "request_id", "service", "side", "signature", "signature_base",
    "signature_input", "signing_cert", "status", "user_id", "v",
)


def _fail(message: str) -> MessageLogError:
    return MessageLogError(f"log record: {message}")


def _check_text(name: str, value: object, *, optional: bool = False, limit: int = MAX_TEXT_LENGTH) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise _fail(f"{name} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise _fail(f"{name} is longer than {limit} characters")
    if not value.isascii() and _SURROGATE_RE.search(value):  # isascii() is O(1): ASCII has no surrogates
        raise _fail(f"{name} contains a lone surrogate, which has no UTF-8 form")


def format_created(created: datetime) -> str:
    """``created`` in the one form the encoding uses: UTC, microseconds, ``Z``."""
    c = created.astimezone(UTC)
    if c.year < 1000:  # strftime's %Y does not pad such years; keep its output exactly
        return c.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (f"{c.year}-{c.month:02d}-{c.day:02d}T{c.hour:02d}:{c.minute:02d}:{c.second:02d}."
            f"{c.microsecond:06d}Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class LogRecord:
    """One logged message, as signed or verified by this server.

    ``body`` is ``None`` when body logging is off for the subsystem; ``body_digest`` (the RFC 9530
    ``Content-Digest`` value that the signature covers) is always kept, so a body handed over later can
    still be checked. ``extensions`` holds later additions (data subject, purpose...) without a new format.
    """

    origin: str  # the log origin: this security server (or one writer of it), e.g. DEV/GOV/1001/ss1
    kind: Kind
    side: Side  # which proxy wrote it: client (consumer's server) or server (provider's server)
    message_id: str  # X-Road-Id
    request_id: str  # X-Road-Request-Id: generated and signed by the client-side server; the replay key
    client: ClientId
    service: ServiceId
    user_id: str | None = None  # X-Road-UserId
    issue: str | None = None  # X-Road-Issue
    created: datetime  # the signature's created parameter, aware UTC
    method: str  # HTTP method of the request (also on the response's record)
    path: str  # request target as signed: path and query
    status: int | None = None  # HTTP status: responses only
    signature_base: bytes  # RFC 9421 signature base, exactly as signed
    signature_input: str  # Signature-Input header value
    signature: str  # Signature header value
    signing_cert: bytes  # DER
    ocsp_response: bytes  # DER, as stapled
    body_digest: str  # RFC 9530 Content-Digest value, e.g. sha-256=:...:
    body: bytes | None = None
    extensions: Mapping[str, ExtensionValue] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not _ORIGIN_RE.fullmatch(self.origin):
            raise _fail(f"origin {str(self.origin)[:80]!r} must be printable ASCII without spaces")
        if len(self.origin) > MAX_ORIGIN_LENGTH:
            raise _fail(f"origin is longer than {MAX_ORIGIN_LENGTH} characters")
        if self.kind not in _KINDS:
            raise _fail(f"kind {self.kind!r} is not 'request' or 'response'")
        if self.side not in _SIDES:
            raise _fail(f"side {self.side!r} is not 'client' or 'server'")
        _check_text("message_id", self.message_id, limit=MAX_ID_LENGTH)
        _check_text("request_id", self.request_id, limit=MAX_ID_LENGTH)
        _check_text("method", self.method)
        _check_text("path", self.path)
        _check_text("signature_input", self.signature_input)
        _check_text("signature", self.signature)
        _check_text("body_digest", self.body_digest)
        _check_text("user_id", self.user_id, optional=True)
        _check_text("issue", self.issue, optional=True)
        if not isinstance(self.created, datetime) or self.created.utcoffset() != timedelta(0):
            raise _fail("created must be an aware UTC datetime")
        if self.status is not None and (
            isinstance(self.status, bool) or not isinstance(self.status, int) or not 100 <= self.status <= 599
        ):
            raise _fail(f"status {self.status!r} is not an HTTP status code")
        if (self.status is None) != (self.kind == "request"):
            raise _fail("status is required on a response record and absent on a request record")
        for name in ("signature_base", "signing_cert", "ocsp_response"):
            if not isinstance(getattr(self, name), bytes):
                raise _fail(f"{name} must be bytes")
        if self.body is not None and not isinstance(self.body, bytes):
            raise _fail("body must be bytes or None")
        if len(self.extensions) == 0:  # the usual case
            object.__setattr__(self, "extensions", _NO_EXTENSIONS)
            return
        if len(self.extensions) > MAX_EXTENSIONS:
            raise _fail(f"more than {MAX_EXTENSIONS} extensions")
        frozen: dict[str, ExtensionValue] = {}
        for key, value in self.extensions.items():
            if not isinstance(key, str) or not _EXT_KEY_RE.fullmatch(key):
                raise _fail(f"extension key {str(key)[:80]!r} must match [a-z0-9][a-z0-9._-]{{0,63}}")
            if isinstance(value, str):
                _check_text(f"extension {key}", value)
            elif isinstance(value, tuple | list):
                for item in value:
                    _check_text(f"extension {key} item", item)
                value = tuple(value)
            else:
                raise _fail(f"extension {key} must be a string or a tuple of strings")
            frozen[key] = value
        object.__setattr__(self, "extensions", MappingProxyType(frozen))

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the encoding (version 1), before serialisation."""
        b64 = _b64
        return {
            "v": FORMAT_VERSION,
            "origin": self.origin,
            "kind": self.kind,
            "side": self.side,
            "message_id": self.message_id,
            "request_id": self.request_id,
            "client": str(self.client),
            "service": str(self.service),
            "user_id": self.user_id,
            "issue": self.issue,
            "created": format_created(self.created),
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "signature_base": b64(self.signature_base),
            "signature_input": self.signature_input,
            "signature": self.signature,
            "signing_cert": b64(self.signing_cert),
            "ocsp_response": b64(self.ocsp_response),
            "body_digest": self.body_digest,
            "body": None if self.body is None else b64(self.body),
            "extensions": {k: (v if isinstance(v, str) else list(v)) for k, v in self.extensions.items()},
        }

    def encode(self) -> bytes:
        """The canonical encoding (RFC 8785 JSON, UTF-8): the bytes stored, hashed and exported.

        The serialiser is Python's ``json`` with sorted keys, no whitespace and ``ensure_ascii=False``,
        which for the value types used here (ASCII keys, strings, integers below 2**53, null) produces
        exactly RFC 8785's output, three times faster than a general RFC 8785 serialiser; a unit test
        checks the equality.

        It is written out here rather than built as a dict and passed to ``json.dumps``: the members in
        sorted key order, strings through ``json``'s own string encoder (the one ``json.dumps`` uses with
        ``ensure_ascii=False``), base64 values (which never need escaping) as they are, and the base64 of the
        stapled certificate and OCSP response, identical on thousands of records, computed once per object.
        The same unit test checks these bytes against an RFC 8785 serialiser.

        Raises:
            MessageLogError: a value has no encoding (cannot happen for a validated record).
        """
        q = encode_basestring
        try:
            text = "".join((
                '{"body":', "null" if self.body is None else '"' + _b64(self.body) + '"',
                ',"body_digest":', q(self.body_digest),
                ',"client":', q(str(self.client)),
                ',"created":', q(format_created(self.created)),
                ',"extensions":', "{}" if not self.extensions else json.dumps(
                    self.to_json()["extensions"], sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                ),
                ',"issue":', "null" if self.issue is None else q(self.issue),
                ',"kind":', q(self.kind),
                ',"message_id":', q(self.message_id),
                ',"method":', q(self.method),
                ',"ocsp_response":"', _b64_of_der(self.ocsp_response),
                '","origin":', q(self.origin),
                ',"path":', q(self.path),
                ',"request_id":', q(self.request_id),
                ',"service":', q(str(self.service)),
                ',"side":', q(self.side),
                ',"signature":', q(self.signature),
                ',"signature_base":"', _b64(self.signature_base),
                '","signature_input":', q(self.signature_input),
                ',"signing_cert":"', _b64_of_der(self.signing_cert),
                '","status":', "null" if self.status is None else int.__repr__(self.status),
                ',"user_id":', "null" if self.user_id is None else q(self.user_id),
                ',"v":', int.__repr__(FORMAT_VERSION), "}",
            ))
            return text.encode("utf-8")
        except (TypeError, ValueError) as e:  # pragma: no cover - __post_init__ rules these out
            raise _fail(f"cannot be encoded: {e}") from e

    @property
    def loggable_size(self) -> int:
        """Bytes of body kept in the record (for the loggable-size limit)."""
        return 0 if self.body is None else len(self.body)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# Base64 of stapled certificates and OCSP responses, per bytes object (the proxies pass the same object for
# as long as a certificate or response is in use). Keyed by id(); each entry holds its object, so an id is
# not reused while its entry lives and a hit is the very same (immutable) object.
_DER_B64: dict[int, tuple[bytes, str]] = {}
_DER_B64_MAX = 64


def _b64_of_der(data: bytes) -> str:
    hit = _DER_B64.get(id(data))
    if hit is not None and hit[0] is data:
        return hit[1]
    text = _b64(data)
    if len(_DER_B64) >= _DER_B64_MAX:
        _DER_B64.clear()
    _DER_B64[id(data)] = (data, text)
    return text


def _unb64(name: str, value: object) -> bytes:
    if not isinstance(value, str) or not _B64_RE.fullmatch(value):
        raise TrustError(f"log record field {name} is not padded standard base64")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as e:  # pragma: no cover - the regex already refuses what b64decode refuses
        raise TrustError(f"log record field {name} is not valid base64") from e


def _text(obj: Mapping[str, Any], name: str, *, optional: bool = False) -> Any:
    value = obj[name]
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TrustError(f"log record field {name} must be a string")
    return value


def decode(data: bytes) -> LogRecord:
    """Parse a record from its encoding; the bytes must be exactly what :meth:`LogRecord.encode` gives.

    Raises:
        TrustError: the bytes are not canonical JSON, not version 1, miss or add a field, or a value is
            malformed; a stored record that fails this was altered.
    """
    # (1) Canonical JSON only: the bytes hashed into the tree have exactly one parse.
    obj = loads_canonical(data, what="log record")
    if not isinstance(obj, dict):
        raise TrustError("log record is not a JSON object")
    # (2) A version we know, with exactly its fields.
    if obj.get("v") != FORMAT_VERSION:
        raise TrustError(f"log record format version {obj.get('v')!r} is not supported (expected 1)")
    if tuple(sorted(obj)) != _FIELDS:
        missing = sorted(set(_FIELDS) - set(obj))
        extra = sorted(set(obj) - set(_FIELDS))
        raise TrustError(f"log record fields differ from version 1: missing {missing}, unexpected {extra}")
    # (3) Field by field.
    created = _text(obj, "created")
    if not _CREATED_RE.fullmatch(created):
        raise TrustError(f"log record field created {created[:40]!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    extensions = obj["extensions"]
    if not isinstance(extensions, dict):
        raise TrustError("log record field extensions must be an object")
    body = obj["body"]
    try:
        record = LogRecord(
            origin=_text(obj, "origin"),
            kind=_text(obj, "kind"),
            side=_text(obj, "side"),
            message_id=_text(obj, "message_id"),
            request_id=_text(obj, "request_id"),
            client=parse_client(_text(obj, "client"), encoded=False),
            service=ServiceId.parse(_text(obj, "service"), encoded=False),
            user_id=_text(obj, "user_id", optional=True),
            issue=_text(obj, "issue", optional=True),
            created=datetime.strptime(created, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC),
            method=_text(obj, "method"),
            path=_text(obj, "path"),
            status=obj["status"],
            signature_base=_unb64("signature_base", obj["signature_base"]),
            signature_input=_text(obj, "signature_input"),
            signature=_text(obj, "signature"),
            signing_cert=_unb64("signing_cert", obj["signing_cert"]),
            ocsp_response=_unb64("ocsp_response", obj["ocsp_response"]),
            body_digest=_text(obj, "body_digest"),
            body=None if body is None else _unb64("body", body),
            extensions={k: (tuple(v) if isinstance(v, list) else v) for k, v in extensions.items()},
        )
    except (MessageLogError, IdentifierError, ValueError) as e:
        raise TrustError(f"log record is malformed: {getattr(e, 'message', e)}") from e
    # (4) Round trip: anything the checks above let through but encode() would spell differently.
    if record.encode() != data:
        raise TrustError("log record does not re-encode to the same bytes")
    return record


