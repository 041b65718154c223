"""Message-log records and their canonical encoding (pure).

docs/messagelog.md. One :class:`LogRecord` per request or response that a security server signs or
verifies. :meth:`LogRecord.encode` gives the bytes that are stored, hashed into the Merkle tree
(:func:`~gateway.messagelog.merkle.leaf_hash`, RFC 9162 section 2.1.1) and exported to auditors; :func:`decode`
reads them back and accepts only the exact bytes :meth:`~LogRecord.encode` would produce, so one record has one
encoding.

The encoding (version 2, specified for independent implementations in ``docs/messagelog.md``) is RFC 8785
canonical JSON of one object with every field present. The stapled certificate and OCSP response are not in
it: each is a **blob**, stored once per log and named by the lower-case hex SHA-256 of its DER
(:meth:`LogRecord.blobs`); the record names them. The signature base is stored as a **template**
(:func:`base_template`): its text, in which the values that the record holds anyway (the identifiers, the
digest, the blobs' base64, the signature parameters) are replaced by the number of their source
(:data:`BASE_SOURCES`); :func:`rebuild_base` puts them back. Other byte strings are standard base64 with
padding (RFC 4648 section 4), absent values are ``null``, ``created`` is ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring
from types import MappingProxyType
from typing import Any, Literal, get_args

from gateway.errors import IdentifierError, MessageLogError, TrustError
from gateway.identifiers import ClientId, ServiceId, parse_client
from gateway.messagelog.merkle import leaf_hash as leaf_hash  # a record's leaf hash, re-exported: RFC 9162 lives there
from gateway.trust.canonical import loads_canonical

FORMAT_VERSION = 2
MAX_ORIGIN_LENGTH = 255  # characters; a C2SP checkpoint origin line stays short
MAX_ID_LENGTH = 255  # characters of message_id and request_id; X-Road's queryid column is as long
MAX_TEXT_LENGTH = 8192  # characters for any other text field (user id, issue, path, header values)
MAX_EXTENSIONS = 64  # extension entries per record

Kind = Literal["request", "response", "usage"]  # usage: docs/transparency.md section 3
Side = Literal["client", "server"]
ExtensionValue = str | tuple[str, ...]

_ORIGIN_RE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: safe in a signed-note origin line
_SURROGATE_RE = re.compile("[\ud800-\udfff]")  # lone surrogates have no UTF-8 form
_EXT_KEY_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_CREATED_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_B64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_HEX_RE = re.compile(r"[0-9a-f]{64}")  # a blob's name: lower-case hex SHA-256 of its bytes

_KINDS: frozenset[str] = frozenset(get_args(Kind))
_SIDES: frozenset[str] = frozenset(get_args(Side))
_NO_EXTENSIONS: Mapping[str, ExtensionValue] = MappingProxyType({})

_FIELDS = (
    "body", "body_digest", "client", "created", "extensions", "issue", "kind", "message_id", "method",
    "ocsp_response", "origin", "path", "request_id", "service", "side", "signature", "signature_base",
    "signature_input", "signing_cert", "status", "user_id", "v",
)

# The sources of a signature base template (docs/messagelog.md section 2): number n stands for the value of
# BASE_SOURCES[n][1] in a line that begins with BASE_SOURCES[n][0]. For signing_cert and ocsp_response that is
# the standard base64 of the blob the field names; for signature_input the field's text after its first "=".
BASE_SOURCES: tuple[tuple[str, str], ...] = (
    ('"content-digest": ', "body_digest"),
    ('"x-road-client": ', "client"),
    ('"x-road-service": ', "service"),
    ('"x-road-id": ', "message_id"),
    ('"x-road-request-id": ', "request_id"),
    ('"x-road-userid": ', "user_id"),
    ('"x-road-issue": ', "issue"),
    ('"x-road-signing-cert": ', "signing_cert"),
    ('"x-road-signing-ocsp": ', "ocsp_response"),
    ('"@signature-params": ', "signature_input"),
)
_SOURCE_OF_PREFIX: dict[str, int] = {prefix: n for n, (prefix, _) in enumerate(BASE_SOURCES)}
SOURCE_SIGNING_CERT = 7
SOURCE_OCSP = 8
SOURCE_PARAMS = 9

Blobs = Mapping[str, bytes]  # blobs by name: lower-case hex SHA-256 of the bytes -> the bytes (DER)
Template = list[str | int]  # a signature base template: text, source number, text, ..., text


def _fail(message: str) -> MessageLogError:
    return MessageLogError(f"log record: {message}")


# Origins that passed the checks of LogRecord._check (printable ASCII without spaces, within the limit): a server
# writes records of one or a few origins, so each is checked once; by value (str is immutable).
_VALID_ORIGINS: set[str] = set()
_VALID_ORIGINS_MAX = 256


def _ascii_within(value: object, limit: int) -> bool:
    # a str of ASCII only (hence no lone surrogate) within limit characters: _check_text passes it
    return type(value) is str and value.isascii() and len(value) <= limit


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
    signature_base: bytes  # RFC 9421 signature base, exactly as signed (ASCII); stored as a template
    signature_input: str  # Signature-Input header value
    signature: str  # Signature header value
    signing_cert: bytes  # DER; stored as a blob, named by its SHA-256
    ocsp_response: bytes  # DER, as stapled; stored as a blob, named by its SHA-256
    body_digest: str  # RFC 9530 Content-Digest value, e.g. sha-256=:...:
    body: bytes | None = None
    extensions: Mapping[str, ExtensionValue] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if len(self.extensions) == 0 and self._usual():
            object.__setattr__(self, "extensions", _NO_EXTENSIONS)
            return
        self._check()

    def _usual(self) -> bool:
        """Whether the record is valid by the checks of :meth:`_check` that the proxies' records take: ASCII text
        within its limits, an origin seen valid before, a UTC ``created``; True only when :meth:`_check` would
        pass (the fast path of every record; anything else is checked by :meth:`_check`, with its errors)."""
        user_id, issue, status = self.user_id, self.issue, self.status
        text_limit, id_limit = MAX_TEXT_LENGTH, MAX_ID_LENGTH
        return (
            self.origin in _VALID_ORIGINS and self.kind in _KINDS and self.side in _SIDES
            and type(self.created) is datetime and self.created.tzinfo is UTC
            and _ascii_within(self.message_id, id_limit) and _ascii_within(self.request_id, id_limit)
            and _ascii_within(self.method, text_limit) and _ascii_within(self.path, text_limit)
            and _ascii_within(self.signature_input, text_limit) and _ascii_within(self.signature, text_limit)
            and _ascii_within(self.body_digest, text_limit)
            and (user_id is None or _ascii_within(user_id, text_limit))
            and (issue is None or _ascii_within(issue, text_limit))
            and ((status is None and self.kind == "request")
                 or (type(status) is int and 100 <= status <= 599 and self.kind != "request"))
            and type(self.signature_base) is bytes and type(self.signing_cert) is bytes
            and type(self.ocsp_response) is bytes and (self.body is None or type(self.body) is bytes)
            and self.signature_base.isascii()
        )

    def _check(self) -> None:
        if not isinstance(self.origin, str) or not _ORIGIN_RE.fullmatch(self.origin):
            raise _fail(f"origin {str(self.origin)[:80]!r} must be printable ASCII without spaces")
        if len(self.origin) > MAX_ORIGIN_LENGTH:
            raise _fail(f"origin is longer than {MAX_ORIGIN_LENGTH} characters")
        if type(self.origin) is str:  # valid: the next record of this origin takes the fast path
            if len(_VALID_ORIGINS) >= _VALID_ORIGINS_MAX:
                _VALID_ORIGINS.clear()
            _VALID_ORIGINS.add(self.origin)
        if self.kind not in _KINDS:
            raise _fail(f"kind {self.kind!r} is not 'request', 'response' or 'usage'")
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
        if not self.signature_base.isascii():
            raise _fail("signature_base must be ASCII, as an RFC 9421 signature base is")
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

    def blobs(self) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
        """The blobs the record names, as ``(name, DER)``: the signing certificate's and the OCSP response's.

        A blob's name is the lower-case hex SHA-256 of its bytes; the store keeps each once per log.
        """
        return (_der_info(self.signing_cert)[0], self.signing_cert), (_der_info(self.ocsp_response)[0],
                                                                      self.ocsp_response)

    def base_sources(self) -> tuple[str | None, ...]:
        """The value of each source of :data:`BASE_SOURCES` for this record (``None``: it has none)."""
        _, params_sep, params = self.signature_input.partition("=")
        return (
            self.body_digest, str(self.client), str(self.service), self.message_id, self.request_id,
            self.user_id, self.issue, _der_info(self.signing_cert)[1], _der_info(self.ocsp_response)[1],
            params if params_sep else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the encoding (version 2), before serialisation."""
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
            "signature_base": base_template(self.signature_base.decode("ascii"), self.base_sources()),
            "signature_input": self.signature_input,
            "signature": self.signature,
            "signing_cert": _der_info(self.signing_cert)[0],
            "ocsp_response": _der_info(self.ocsp_response)[0],
            "body_digest": self.body_digest,
            "body": None if self.body is None else _b64(self.body),
            "extensions": {k: (v if isinstance(v, str) else list(v)) for k, v in self.extensions.items()},
        }

    def encode(self) -> bytes:
        """The canonical encoding (RFC 8785 JSON, UTF-8): the bytes stored, hashed and exported.

        The serialiser is Python's ``json`` with sorted keys, no whitespace and ``ensure_ascii=False``,
        which for the value types used here (ASCII keys, strings, integers below 2**53, null, arrays and
        objects of them) produces exactly RFC 8785's output, three times faster than a general RFC 8785
        serialiser; a unit test checks the equality.

        It is written out here rather than built as a dict and passed to ``json.dumps``: the members in
        sorted key order, strings through ``json``'s own string encoder (the one ``json.dumps`` uses with
        ``ensure_ascii=False``), base64 and hex values (which never need escaping) as they are, and the
        names and base64 of the stapled certificate and OCSP response, identical on thousands of records,
        computed once per object. The same unit test checks these bytes against an RFC 8785 serialiser.

        Raises:
            MessageLogError: a value has no encoding (cannot happen for a validated record).
        """
        q = encode_basestring
        cert_name, cert_b64 = _der_info(self.signing_cert)
        ocsp_name, ocsp_b64 = _der_info(self.ocsp_response)
        _, params_sep, params = self.signature_input.partition("=")
        client, service = str(self.client), str(self.service)
        sources = (self.body_digest, client, service, self.message_id, self.request_id, self.user_id,
                   self.issue, cert_b64, ocsp_b64, params if params_sep else None)
        try:
            text = "".join((
                '{"body":', "null" if self.body is None else '"' + _b64(self.body) + '"',
                ',"body_digest":', q(self.body_digest),
                ',"client":', q(client),
                ',"created":', q(format_created(self.created)),
                ',"extensions":', "{}" if not self.extensions else json.dumps(
                    self.to_json()["extensions"], sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                ),
                ',"issue":', "null" if self.issue is None else q(self.issue),
                ',"kind":', q(self.kind),
                ',"message_id":', q(self.message_id),
                ',"method":', q(self.method),
                ',"ocsp_response":"', ocsp_name,
                '","origin":', q(self.origin),
                ',"path":', q(self.path),
                ',"request_id":', q(self.request_id),
                ',"service":', q(service),
                ',"side":', q(self.side),
                ',"signature":', q(self.signature),
                ',"signature_base":', _template_json(self.signature_base.decode("ascii"), sources),
                ',"signature_input":', q(self.signature_input),
                ',"signing_cert":"', cert_name,
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


# ---- a body stored apart from its record (docs/messagelog.md section 2, "Large bodies") ---------------------

_NULL_BODY = b'{"body":null'
BODY_HEAD = b'{"body":"'  # what comes before the body's base64 in every encoding that has a body


def body_apart_parts(record: LogRecord) -> tuple[bytes, bytes]:
    """``(head, tail)`` of the encoding of ``record`` with a body: for any body ``B``, the encoding of the same
    record with ``body=B`` is ``head + base64(B) + tail``, byte for byte (``body`` is the first member in
    canonical order and its base64 needs no escaping). ``record`` itself carries no body; its own encoding,
    with ``"body":null``, is ``_NULL_BODY + tail[1:]``.

    Raises:
        MessageLogError: ``record`` has a body.
    """
    if record.body is not None:
        raise _fail("a record whose body is stored apart must carry none itself (body=None)")
    encoded = record.encode()
    return BODY_HEAD, b'"' + encoded[len(_NULL_BODY):]


class StreamedEncoding:
    """The RFC 9162 leaf hash (and the size) of a record's encoding whose body is fed in chunks: the same
    value as ``leaf_hash(record_with_body.encode())``, with no more than one chunk in memory. Also gives the
    encoding's bytes piece by piece, for a caller that writes it out (:meth:`update` returns them).

    Chunks may be of any size; base64 is cut at multiples of 3 bytes, the remainder carried to the next one.
    Not thread-safe; the hashing of a large chunk may run in a worker thread (``hashlib`` releases the GIL).
    """

    __slots__ = ("_carry", "_hash", "_tail", "body_size", "size")

    def __init__(self, record: LogRecord | None, *, tail: bytes | None = None) -> None:
        """From ``record`` (which carries no body), or from the ``tail`` of :func:`body_apart_parts` as stored
        (:meth:`of_bodyless`).

        Raises: MessageLogError: ``record`` has a body (see :func:`body_apart_parts`)."""
        if record is not None:
            _, tail = body_apart_parts(record)
        assert tail is not None
        self._tail = tail
        self._hash = hashlib.sha256(b"\x00")  # RFC 9162 section 2.1.1: leaf hash prefix
        self._hash.update(BODY_HEAD)
        self._carry = b""
        self.size = len(BODY_HEAD)  # bytes of the encoding so far
        self.body_size = 0

    @classmethod
    def of_bodyless(cls, encoded: bytes) -> StreamedEncoding:
        """From the stored encoding of a record whose body is stored apart (``{"body":null,...``), as it is,
        without decoding it (an export passes on what is stored).

        Raises: MessageLogError: ``encoded`` does not begin with a null body."""
        if not encoded.startswith(_NULL_BODY):
            raise _fail("a record whose body is stored apart must be stored with a null body")
        return cls(None, tail=b'"' + encoded[len(_NULL_BODY):])

    def update(self, chunk: bytes) -> bytes:
        """Feed the next chunk of the body; the encoding's bytes it gives (its base64, whole groups only)."""
        self.body_size += len(chunk)
        data = self._carry + chunk if self._carry else chunk
        cut = len(data) - len(data) % 3
        self._carry = data[cut:]
        out = base64.b64encode(data[:cut]) if cut else b""
        self._hash.update(out)
        self.size += len(out)
        return out

    def finish(self) -> tuple[bytes, bytes]:
        """``(last bytes, leaf hash)``: the base64 of the carried remainder (padded) and the tail of the
        encoding, and the record's leaf hash. Call once, after the last :meth:`update`."""
        last = base64.b64encode(self._carry) + self._tail
        self._carry = b""
        self._hash.update(last)
        self.size += len(last)
        return last, self._hash.digest()


# Name (hex SHA-256) and base64 of stapled certificates and OCSP responses, per bytes object (the proxies pass
# the same object for as long as a certificate or response is in use). Keyed by id(); each entry holds its
# object, so an id is not reused while its entry lives and a hit is the very same (immutable) object.
_DER_INFO: dict[int, tuple[bytes, tuple[str, str]]] = {}
_DER_INFO_MAX = 64


def _der_info(data: bytes) -> tuple[str, str]:
    """``(name, base64)`` of a blob: lower-case hex SHA-256 of ``data``, and its standard base64."""
    hit = _DER_INFO.get(id(data))
    if hit is not None and hit[0] is data:
        return hit[1]
    info = (hashlib.sha256(data).hexdigest(), _b64(data))
    if len(_DER_INFO) >= _DER_INFO_MAX:
        _DER_INFO.clear()
    _DER_INFO[id(data)] = (data, info)
    return info


def blob_name(data: bytes) -> str:
    """The name of a blob: the lower-case hex SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def _template_pieces(base: str, sources: Sequence[str | None]) -> Template:
    # A line that begins with the prefix of source n and whose rest is that source's value becomes the prefix
    # (text) and n; everything else is text; consecutive text is one piece (docs/messagelog.md section 2).
    # Written for speed (it runs for every record): no copy of a line but the pieces, the long stapled values
    # compared in place.
    out: Template = []
    size = len(base)
    text_start = pos = 0
    prefix_of = _SOURCE_OF_PREFIX
    while True:
        end = base.find("\n", pos)
        if end < 0:
            end = size
        cut = base.find('": ', pos, end)
        if cut >= 0:
            cut += 3
            n = prefix_of.get(base[pos:cut])
            if n is not None:
                value = sources[n]
                if value is not None and end - cut == len(value) and base.startswith(value, cut):
                    out.append(base[text_start:cut])
                    out.append(n)
                    text_start = end
        if end == size:
            break
        pos = end + 1
    out.append(base[text_start:])
    return out


def base_template(base: str, sources: Sequence[str | None]) -> Template:
    """The template of signature base ``base`` (ASCII text) given the record's :data:`BASE_SOURCES` values.

    A list that alternates text and source numbers, starting and ending with text (possibly empty):
    :func:`rebuild_base` of it gives ``base`` again. Each line of ``base`` that begins with the line prefix of
    a source and whose rest equals that source's value is written as its prefix and the source's number.
    """
    return _template_pieces(base, sources)


_REF_JSON = tuple(f",{n}," for n in range(len(BASE_SOURCES)))


# BASE_SOURCES by line head, the prefix without its '": ' (what str.partition gives before the separator)
_SOURCE_OF_HEAD: dict[str, int] = {prefix[:-3]: n for n, (prefix, _) in enumerate(BASE_SOURCES)}


def _template_json(base: str, sources: Sequence[str | None]) -> str:
    """:func:`base_template` serialised as canonical JSON (the same rule as :func:`_template_pieces`: a line is
    cut at its first '": ', and it is a source's line when the part before is a source's prefix and the rest
    is that source's value; written with one split and one partition per line, the JSON made as it goes: this
    runs for every record)."""
    q = encode_basestring
    out = ["["]
    text_start = pos = 0
    head_of = _SOURCE_OF_HEAD
    for line in base.split("\n"):
        head, sep, rest = line.partition('": ')
        if sep:
            n = head_of.get(head)
            if n is not None and rest == sources[n]:
                out.append(q(base[text_start:pos + len(head) + 3]))
                out.append(_REF_JSON[n])
                text_start = pos + len(line)
        pos += len(line) + 1
    out.append(q(base[text_start:]))
    out.append("]")
    return "".join(out)


def rebuild_base(template: object, sources: Sequence[str | None]) -> str:
    """The signature base that ``template`` (as parsed from JSON) stands for, with the record's
    :data:`BASE_SOURCES` values: its texts with each source number replaced by that source's value.

    Raises:
        TrustError: the template is not a list of text and source numbers, alternating and starting and
            ending with text, or it refers to a source that the record does not have (a null user id).
    """
    if not isinstance(template, list) or len(template) % 2 != 1:
        raise TrustError("log record field signature_base is not a template: a list of text and source numbers, "
                         "alternating, starting and ending with text")
    out: list[str] = []
    for i, piece in enumerate(template):
        if i % 2 == 0:
            if not isinstance(piece, str):
                raise TrustError(f"log record field signature_base: item {i} must be text")
            out.append(piece)
            continue
        if type(piece) is not int or not 0 <= piece < len(BASE_SOURCES):
            raise TrustError(f"log record field signature_base: item {i} must be a source number "
                             f"0 to {len(BASE_SOURCES) - 1}")
        value = sources[piece]
        if value is None:
            raise TrustError(f"log record field signature_base: item {i} refers to source {piece} "
                             f"({BASE_SOURCES[piece][1]}), which the record does not have")
        out.append(value)
    return "".join(out)


def blob_refs(data: bytes) -> tuple[str | None, str | None]:
    """The blob names a stored record gives as its ``signing_cert`` and ``ocsp_response``, as far as its bytes
    can be read as a record (``None`` for a name that cannot)."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None
    if not isinstance(obj, dict):
        return None, None
    cert, ocsp = obj.get("signing_cert"), obj.get("ocsp_response")
    return (cert if isinstance(cert, str) and _HEX_RE.fullmatch(cert) else None,
            ocsp if isinstance(ocsp, str) and _HEX_RE.fullmatch(ocsp) else None)


def resolved_view(data: bytes, blobs: Blobs) -> dict[str, Any] | None:
    """A stored record as shown to a reader (the admin API's listing): its JSON object with the references
    resolved where ``blobs`` allows, ``signing_cert`` and ``ocsp_response`` as the standard base64 of their DER
    and ``signature_base`` as the base's text. ``None`` if the bytes are not a JSON object. Not a verification:
    a value that cannot be resolved is left as stored.
    """
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    ders = {name: blobs.get(obj[name]) if isinstance(obj.get(name), str) else None
            for name in ("signing_cert", "ocsp_response")}
    if all(isinstance(obj.get(n), str | None) for n in (
            "body_digest", "client", "service", "message_id", "request_id", "user_id", "issue", "signature_input")):
        _, params_sep, params = str(obj.get("signature_input", "")).partition("=")
        sources = (obj.get("body_digest"), obj.get("client"), obj.get("service"), obj.get("message_id"),
                   obj.get("request_id"), obj.get("user_id"), obj.get("issue"),
                   *(None if d is None else _b64(d) for d in ders.values()), params if params_sep else None)
        try:
            obj["signature_base"] = rebuild_base(obj.get("signature_base"), sources)
        except TrustError:
            pass
    for name, der in ders.items():
        if der is not None:
            obj[name] = _b64(der)
    return obj


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


def _blob(obj: Mapping[str, Any], name: str, blobs: Blobs) -> bytes:
    value = obj[name]
    if not isinstance(value, str) or not _HEX_RE.fullmatch(value):
        raise TrustError(f"log record field {name} is not a blob name (64 lower-case hex digits)")
    data = blobs.get(value)
    if data is None:
        raise TrustError(f"log record field {name} refers to blob {value}, which is not stored with the log")
    if hashlib.sha256(data).hexdigest() != value:
        raise TrustError(f"blob {value} (the record's {name}) does not hash to its name: it was altered")
    return data


def decode(data: bytes, blobs: Blobs) -> LogRecord:
    """Parse a record from its encoding; the bytes must be exactly what :meth:`LogRecord.encode` gives.

    ``blobs`` are the log's blobs by name (at least the two the record names); the signature base is rebuilt
    from its template with them.

    Raises:
        TrustError: the bytes are not canonical JSON, not version 2, miss or add a field, a value is
            malformed, or a blob the record names is missing from ``blobs`` or does not hash to its name;
            a stored record that fails this was altered.
    """
    # (1) Canonical JSON only: the bytes hashed into the tree have exactly one parse.
    obj = loads_canonical(data, what="log record")
    if not isinstance(obj, dict):
        raise TrustError("log record is not a JSON object")
    # (2) A version we know, with exactly its fields.
    if obj.get("v") != FORMAT_VERSION:
        raise TrustError(f"log record format version {obj.get('v')!r} is not supported (expected "
                         f"{FORMAT_VERSION}; version 1 records are not read any more: docs/messagelog.md section 2)")
    if tuple(sorted(obj)) != _FIELDS:
        missing = sorted(set(_FIELDS) - set(obj))
        extra = sorted(set(obj) - set(_FIELDS))
        raise TrustError(f"log record fields differ from version {FORMAT_VERSION}: missing {missing}, "
                         f"unexpected {extra}")
    # (3) Field by field; the blobs; the signature base from its template.
    created = _text(obj, "created")
    if not _CREATED_RE.fullmatch(created):
        raise TrustError(f"log record field created {created[:40]!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    extensions = obj["extensions"]
    if not isinstance(extensions, dict):
        raise TrustError("log record field extensions must be an object")
    cert = _blob(obj, "signing_cert", blobs)
    ocsp = _blob(obj, "ocsp_response", blobs)
    signature_input = _text(obj, "signature_input")
    _, params_sep, params = signature_input.partition("=")
    texts = [_text(obj, n, optional=True) for n in (
        "body_digest", "client", "service", "message_id", "request_id", "user_id", "issue")]
    sources = (*texts, _b64(cert), _b64(ocsp), params if params_sep else None)
    base = rebuild_base(obj["signature_base"], sources)
    if not base.isascii():
        raise TrustError("log record field signature_base stands for a base that is not ASCII")
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
            signature_base=base.encode("ascii"),
            signature_input=signature_input,
            signature=_text(obj, "signature"),
            signing_cert=cert,
            ocsp_response=ocsp,
            body_digest=_text(obj, "body_digest"),
            body=None if body is None else _unb64("body", body),
            extensions={k: (tuple(v) if isinstance(v, list) else v) for k, v in extensions.items()},
        )
    except (MessageLogError, IdentifierError, ValueError) as e:
        raise TrustError(f"log record is malformed: {getattr(e, 'message', e)}") from e
    # (4) Round trip: anything the checks above let through but encode() would spell differently (a
    #     template that is not the one encode() makes, for instance).
    if record.encode() != data:
        raise TrustError("log record does not re-encode to the same bytes")
    return record
