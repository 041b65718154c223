"""X-Road message protocol for REST, version r1, as the client information system speaks it (pure).

Bytes and strings in, frozen dataclasses and decisions out; no sockets, no aiohttp. The client-side and
server-side proxies call these functions on their hot path, so every function works on the raw values the
HTTP server already has and parses each thing once.

What is implemented, with the X-Road source it follows (PR-REST 4.1-4.6, ``RestRequest``, ``RestMessage``,
``ClientRestMessageHandler``; details and deviations in ``docs/protocol.md``):

- :func:`parse_target`: ``{METHOD} /r1/{INSTANCE}/{CLASS}/{MEMBER}/{SUBSYSTEM}/{SERVICE}[/path][?query]``.
  Identifier parts are percent-decoded exactly once; the rest of the path and the query stay raw (they are
  forwarded unchanged).
- :func:`normalise_path`: the canonical form of the rest path that access rules match against.
- :func:`parse_request_headers`: the X-Road request headers; :func:`end_to_end_headers` drops hop-by-hop ones.
- :func:`request_header_part`, :func:`response_header_part`, :class:`BodyHasher`, :func:`request_hash`:
  X-Road's REST header parts and ``X-Road-Request-Hash``.
- :func:`render_error`, :func:`render_list_clients`, :func:`render_methods`: responses the security server
  itself produces.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal
from xml.sax.saxutils import escape as _xml_escape

from gateway.errors import BadIdentifier, GatewayError, IdentifierError, InvalidHttpMethod, RequestError, UriTooLong
from gateway.identifiers import (
    ClientId,
    SecurityServerId,
    ServiceId,
    SubsystemId,
    decode_part,
    parse_client,
)

PROTOCOL_VERSION: Final = "r1"
MAX_URI_BYTES: Final = 8192  # bytes of path + "?" + query; PR-REST 4.2 asks for a limit, clients cap at ~2000
MAX_MESSAGE_ID_LENGTH: Final = 255  # characters of X-Road-Id; X-Road stores it in a VARCHAR(255)
MAX_HEADER_TEXT_LENGTH: Final = 255  # characters of X-Road-UserId and X-Road-Issue; same column width

METHODS: Final = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"})

# Header names (lower case, as X-Road writes them on responses).
H_CLIENT: Final = "x-road-client"
H_SERVICE: Final = "x-road-service"
H_ID: Final = "x-road-id"
H_USER_ID: Final = "x-road-userid"
H_ISSUE: Final = "x-road-issue"
H_SECURITY_SERVER: Final = "x-road-security-server"
H_REPRESENTED_PARTY: Final = "x-road-represented-party"
H_REQUEST_ID: Final = "x-road-request-id"
H_REQUEST_HASH: Final = "x-road-request-hash"
H_ERROR: Final = "x-road-error"

# RestMessage.SKIPPED_HEADERS: hop-by-hop headers plus the ones that leak the origin host or that the
# security server rewrites (PR-REST 4.3 "Filtered headers", "Specially handled headers").
HOP_BY_HOP: Final = frozenset({
    "transfer-encoding", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "upgrade", "connection", "user-agent", "host", "content-length", "server", "expect",
})

# Headers of the server-to-server profile (gateway.protocol.signatures). They never reach a service or a client
# information system and never enter a REST header part.
TRANSPORT_HEADERS: Final = frozenset({
    "signature", "signature-input", "content-digest", "x-road-signing-cert", "x-road-signing-ocsp",
})

# Headers only security servers may set: the client side drops any value a client information system sends
# (X-Road drops an incoming X-Road-Request-Id and X-Road-Request-Hash, RestRequest constructor).
SERVER_SET_HEADERS: Final = frozenset({H_REQUEST_ID, H_REQUEST_HASH, H_SERVICE, H_ERROR}) | TRANSPORT_HEADERS

_VERSION_RE = re.compile(r"r[0-9]+")
_PCT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Visible ASCII only: a request target never holds spaces, controls or raw non-ASCII (RFC 9112 3.2).
_TARGET_RE = re.compile(r"[\x21-\x7e]*")
_PRINTABLE_RE = re.compile(r"[\x20-\x7e]*")
_CRLF = b"\r\n"


# --------------------------------------------------------------------------------------------------------
# Request target
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RestTarget:
    """A parsed r1 request target.

    ``raw_path`` is the whole path as received (``/r1/...``, still percent-encoded) and ``raw_query`` the
    query without ``?`` (``None`` when the target had no ``?``); both go into the request header part.
    ``service_path`` is the raw rest of the path after the service code (``""`` or ``/...``), forwarded to the
    service unchanged.
    """

    method: str
    service: ServiceId
    raw_path: str
    raw_query: str | None
    service_path: str

    @property
    def forward_target(self) -> str:
        """The request target the provider appends to the service's base URL: ``/v1/x?q=1``."""
        return self.service_path + ("" if self.raw_query is None else "?" + self.raw_query)


@lru_cache(maxsize=4096)
def _parse_service(raw: str) -> ServiceId:
    # Cached: a security server sees the same few services again and again. Errors are not cached.
    try:
        return ServiceId.parse(raw, encoded=True)
    except IdentifierError as e:
        raise BadIdentifier(f"invalid service identifier in the request path: {e.message}", hint=e.hint) from e


def parse_target(
    method: str, raw_path: str, raw_query: str | None = None, *, max_uri_bytes: int = MAX_URI_BYTES,
) -> RestTarget:
    """Parse an r1 request line: ``/r1/{INSTANCE}/{CLASS}/{MEMBER}/{SUBSYSTEM}/{SERVICE}[/path]``.

    ``raw_path`` must be the path exactly as received (percent-encoded, without the query); ``raw_query`` the
    raw query string without ``?``, or ``None`` when there was none.

    Raises:
        RequestError: ``Client.InvalidHttpMethod`` for a method r1 does not carry; status 414 when path and
            query together exceed ``max_uri_bytes``; ``Client.BadRequest`` for a malformed target, a protocol
            version other than r1 or an invalid service identifier (then an :class:`IdentifierError`).
    """
    # (1) the method: X-Road's Verb enum, exact upper case
    if method not in METHODS:
        raise InvalidHttpMethod(
            f"HTTP method {method[:20]!r} is not supported; use one of {', '.join(sorted(METHODS))}",
        )
    # (2) size first, so that nothing below works on an unbounded string
    size = len(raw_path) + (0 if raw_query is None else len(raw_query) + 1)
    if size > max_uri_bytes:
        raise UriTooLong(
            f"request URI is {size} bytes long; at most {max_uri_bytes} are allowed",
            hint="send large data in the request body",
        )
    # (3) characters: visible ASCII only, well-formed percent escapes in the path
    if not _TARGET_RE.fullmatch(raw_path) or (raw_query is not None and not _TARGET_RE.fullmatch(raw_query)):
        raise RequestError("request URI contains a space, control character or non-ASCII character")
    if "?" in raw_path or "#" in raw_path:
        raise RequestError("request path may not contain '?' or '#'; pass the query separately")
    if _PCT_RE.search(raw_path):
        raise RequestError("request path contains a malformed percent-escape")
    # (4) structure: '' / r1 / 5 identifier parts [/ rest]
    parts = raw_path.split("/", 7)
    if len(parts) < 7 or parts[0] != "":
        raise RequestError(
            f"request path {raw_path[:100]!r} does not match /{PROTOCOL_VERSION}/{{INSTANCE}}/{{CLASS}}/"
            "{MEMBER}/{SUBSYSTEM}/{SERVICE}[/path]"
        )
    if parts[1] != PROTOCOL_VERSION:
        if _VERSION_RE.fullmatch(parts[1]):
            raise RequestError(
                f"unsupported protocol version {parts[1]!r}; this security server supports {PROTOCOL_VERSION}"
            )
        raise RequestError(f"invalid protocol version {parts[1][:20]!r}; expected {PROTOCOL_VERSION}")
    # (5) the service identifier, each part percent-decoded exactly once
    service = _parse_service("/".join(parts[2:7]))
    service_path = "/" + parts[7] if len(parts) == 8 else ""
    return RestTarget(
        method=method, service=service, raw_path=raw_path, raw_query=raw_query, service_path=service_path,
    )


# --------------------------------------------------------------------------------------------------------
# Path normalisation for access rules
# --------------------------------------------------------------------------------------------------------

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Escapes refused outright: encoded '/', '\' and controls (0x00-0x1F, 0x7F).
_FORBIDDEN_ESCAPES = frozenset({0x2F, 0x5C, 0x7F, *range(0x20)})
# Double-encoded '.', '/', '\' and NUL: harmless to us, but a service that decodes twice would see them.
_DOUBLE_ENCODED_RE = re.compile(r"%25(2[eEfF]|5[cC]|00)")
_SEGMENT_PARAM_RE = re.compile(r";.*", re.DOTALL)


def normalise_path(raw_rest_path: str) -> str:
    """Return the canonical form of a raw rest path (``RestTarget.service_path``) for access-rule matching.

    Rules, in order (``docs/protocol.md`` section "Path normalisation"):

    1. ``""`` means ``/``; anything else must start with ``/`` and hold visible ASCII only.
    2. Percent-escapes must be well formed. Escapes of unreserved characters (``A-Z a-z 0-9 - . _ ~``) are
       decoded (RFC 3986 6.2.2.2); all other escapes are kept with upper-case hex (6.2.2.1).
    3. Refused: an encoded ``/`` (``%2F``) or ``\\`` (``%5C``), an encoded control character (``%00``-``%1F``,
       ``%7F``), a raw ``\\``, and the double-encoded forms ``%252E``, ``%252F``, ``%255C``, ``%2500``.
    4. Runs of ``/`` collapse into one (as many web servers do), keeping a trailing ``/``.
    5. ``.`` and ``..`` segments are resolved (RFC 3986 5.2.4); a ``..`` that would climb above ``/`` is
       refused, and so is a segment that is ``.`` or ``..`` followed by ``;parameters`` (``..;/``), which some
       servlet containers read as a dot segment.

    Raises:
        RequestError: ``Client.BadRequest`` for any refused form.
    """
    # (1) empty and shape
    if raw_rest_path == "":
        return "/"
    if not raw_rest_path.startswith("/"):
        raise RequestError(f"service path {raw_rest_path[:100]!r} must start with '/'")
    if not _TARGET_RE.fullmatch(raw_rest_path):
        raise RequestError("service path contains a space, control character or non-ASCII character")
    if "\\" in raw_rest_path:
        raise RequestError("service path may not contain '\\'")
    if _DOUBLE_ENCODED_RE.search(raw_rest_path):
        raise RequestError("service path contains a double-encoded '.', '/', '\\' or NUL")
    # (2)+(3) percent-escapes
    if "%" in raw_rest_path:
        out: list[str] = []
        i, n = 0, len(raw_rest_path)
        while i < n:
            ch = raw_rest_path[i]
            if ch != "%":
                out.append(ch)
                i += 1
                continue
            hexpair = raw_rest_path[i + 1:i + 3]
            try:
                if len(hexpair) != 2:
                    raise ValueError(hexpair)
                code = int(hexpair, 16)
            except ValueError:
                raise RequestError("service path contains a malformed percent-escape") from None
            if code in _FORBIDDEN_ESCAPES:
                raise RequestError(f"service path contains a forbidden encoded character %{hexpair.upper()}")
            out.append(chr(code) if code in _UNRESERVED else "%" + hexpair.upper())
            i += 3
        path = "".join(out)
    else:
        path = raw_rest_path
    # (4)+(5) segments
    trailing = path.endswith("/") and path != "/"
    stack: list[str] = []
    segments = [s for s in path.split("/") if s]
    for seg in segments:
        bare = _SEGMENT_PARAM_RE.sub("", seg)
        if bare in (".", "..") and bare != seg:
            raise RequestError(f"service path segment {seg[:40]!r} is a dot segment with parameters")
        if seg == ".":
            continue
        if seg == "..":
            if not stack:
                raise RequestError("service path climbs above its root with '..'")
            stack.pop()
            continue
        stack.append(seg)
    if segments and segments[-1] in (".", ".."):
        trailing = True  # "/a/b/.." names the directory "/a/"
    result = "/" + "/".join(stack)
    if trailing and result != "/":
        result += "/"
    return result


# --------------------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RepresentedParty:
    """``X-Road-Represented-Party: [CLASS/]CODE`` (PR-THIRDPARTY)."""

    party_class: str | None
    party_code: str

    def __str__(self) -> str:
        return self.party_code if self.party_class is None else f"{self.party_class}/{self.party_code}"


@dataclass(frozen=True, slots=True, kw_only=True)
class XRoadRequestHeaders:
    """The X-Road headers of a client information system's request, parsed and validated.

    ``message_id`` is the client's ``X-Road-Id`` or, when it sent none, one generated as
    ``{INSTANCE}-{uuid4}`` (X-Road's ``ClientRestMessageProcessor``); ``message_id_generated`` says which.
    """

    client: ClientId
    message_id: str
    message_id_generated: bool
    user_id: str | None = None
    issue: str | None = None
    security_server: SecurityServerId | None = None
    represented_party: RepresentedParty | None = None


def uuid4_text() -> str:
    """A random (version 4) UUID in its canonical text form, as ``str(uuid.uuid4())`` gives it, without
    building a :class:`uuid.UUID` (once or twice per exchange)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _default_id() -> str:
    return uuid4_text()


def _check_text(name: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise RequestError(f"{name} header is {len(value)} characters long; at most {limit} are allowed")
    if not _PRINTABLE_RE.fullmatch(value):
        raise RequestError(f"{name} header may hold printable ASCII characters only")
    return value


@lru_cache(maxsize=4096)
def _parse_client_header(value: str) -> ClientId:
    return parse_client(value, encoded=True)


def _parse_represented_party(value: str) -> RepresentedParty:
    parts = value.split("/")
    if len(parts) > 2:
        raise RequestError(f"X-Road-Represented-Party {value[:80]!r} must be CODE or CLASS/CODE")
    try:
        decoded = [decode_part(p, what="X-Road-Represented-Party part") for p in parts]
    except IdentifierError as e:
        raise BadIdentifier(e.message, hint=e.hint) from e
    if len(decoded) == 1:
        return RepresentedParty(party_class=None, party_code=decoded[0])
    return RepresentedParty(party_class=decoded[0], party_code=decoded[1])


def parse_request_headers(
    pairs: Iterable[tuple[str, str]], *, instance: str, new_id: Callable[[], str] = _default_id,
) -> XRoadRequestHeaders:
    """Parse the X-Road headers from a client's request headers (name/value pairs, any case, in order).

    A repeated X-Road header: the last one wins, as in X-Road's ``RestRequest.decodeHeaders``. ``instance``
    is this security server's instance code, the prefix of a generated ``X-Road-Id``; ``new_id`` makes the
    rest of it (a UUID4 string by default).

    Raises:
        RequestError: ``Client.BadRequest`` for a missing ``X-Road-Client`` or a malformed optional header;
            :class:`IdentifierError` ``Client.InvalidClientIdentifier`` for a malformed ``X-Road-Client``.
    """
    found: dict[str, str] = {}
    for name, value in pairs:
        low = name.lower()
        if low.startswith("x-road-"):
            found[low] = value.strip(" \t")
    # (1) the client: mandatory
    raw_client = found.get(H_CLIENT)
    if raw_client is None:
        raise RequestError("X-Road-Client header is missing")
    try:
        client = _parse_client_header(raw_client)
    except IdentifierError as e:
        raise IdentifierError(f"X-Road-Client header is invalid: {e.message}", hint=e.hint) from e
    # (2) the message id: validated, or generated
    raw_id = found.get(H_ID)
    if raw_id is None or raw_id == "":
        message_id, generated = f"{instance}-{new_id()}", True
    else:
        message_id, generated = _check_text("X-Road-Id", raw_id, MAX_MESSAGE_ID_LENGTH), False
    # (3) the optional ones
    user_id = found.get(H_USER_ID)
    issue = found.get(H_ISSUE)
    raw_server = found.get(H_SECURITY_SERVER)
    security_server = None
    if raw_server is not None:
        try:
            security_server = SecurityServerId.parse(raw_server, encoded=True)
        except IdentifierError as e:
            raise BadIdentifier(f"X-Road-Security-Server header is invalid: {e.message}", hint=e.hint) from e
    raw_party = found.get(H_REPRESENTED_PARTY)
    return XRoadRequestHeaders(
        client=client,
        message_id=message_id,
        message_id_generated=generated,
        user_id=None if user_id is None else _check_text("X-Road-UserId", user_id, MAX_HEADER_TEXT_LENGTH),
        issue=None if issue is None else _check_text("X-Road-Issue", issue, MAX_HEADER_TEXT_LENGTH),
        security_server=security_server,
        represented_party=None if raw_party is None else _parse_represented_party(raw_party),
    )


def connection_named(pairs: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Header names listed in ``Connection`` (RFC 9110 7.6.1), lower case: hop-by-hop for this hop only."""
    names: set[str] = set()
    for name, value in pairs:
        if name.lower() == "connection":
            names.update(t.strip().lower() for t in value.split(",") if t.strip())
    return frozenset(names)


@lru_cache(maxsize=64)
def _skip_set(also_skip: frozenset[str]) -> frozenset[str]:
    return HOP_BY_HOP | also_skip


def end_to_end_headers(
    pairs: Sequence[tuple[str, str]], *, also_skip: frozenset[str] = frozenset(),
) -> list[tuple[str, str]]:
    """Drop hop-by-hop headers (:data:`HOP_BY_HOP`, those named in ``Connection``) and ``also_skip`` (lower
    case names, e.g. :data:`SERVER_SET_HEADERS`); keep the rest in order, duplicates included."""
    skip = _skip_set(also_skip)
    if any(n.lower() == "connection" for n, _ in pairs):
        skip = skip | connection_named(pairs)
    return [(n, v) for n, v in pairs if n.lower() not in skip]


# --------------------------------------------------------------------------------------------------------
# Header parts and the request hash (reference D4, PR-REST 4.3)
# --------------------------------------------------------------------------------------------------------


_HEADER_PART_SKIP: Final = HOP_BY_HOP | TRANSPORT_HEADERS | {H_REQUEST_HASH}


def _header_lines(out: bytearray, pairs: Iterable[tuple[str, str]]) -> None:
    skip = _HEADER_PART_SKIP
    for name, value in pairs:
        if name.lower() in skip:
            continue
        if "\r" in name or "\n" in name or ":" in name or "\r" in value or "\n" in value:
            raise RequestError(f"header {name[:40]!r} contains a line break or a colon in its name")
        out += name.encode("utf-8", "surrogateescape")
        out += b":"
        out += value.encode("utf-8", "surrogateescape")
        out += _CRLF


def request_header_part(
    method: str, raw_path: str, raw_query: str | None, headers: Iterable[tuple[str, str]],
) -> bytes:
    """X-Road's REST request header part: ``VERB\\r\\n/r1/...[?query]\\r\\nName:Value\\r\\n...``.

    Not HTTP syntax: no space after the colon and no blank line at the end (X-Road ``RestRequest``).
    Headers keep their order, names their case and values their bytes (``surrogateescape`` undoes how the
    HTTP server decoded them). Hop-by-hop headers, :data:`TRANSPORT_HEADERS` and ``X-Road-Request-Hash`` are
    left out, so both security servers compute the same bytes from what they send and what they receive.

    Raises:
        RequestError: a header name or value holds CR or LF (the part would be ambiguous).
    """
    out = bytearray(method.encode("utf-8", "surrogateescape"))
    out += _CRLF
    out += raw_path.encode("utf-8", "surrogateescape")
    if raw_query is not None:
        out += b"?"
        out += raw_query.encode("utf-8", "surrogateescape")
    out += _CRLF
    _header_lines(out, headers)
    return bytes(out)


def response_header_part(status: int, reason: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """X-Road's REST response header part: ``CODE\\r\\nREASON\\r\\nName:Value\\r\\n...`` (``RestResponse``).

    Same header rules as :func:`request_header_part`.

    Raises:
        RequestError: a header name or value holds CR or LF.
    """
    out = bytearray(str(status).encode("ascii"))
    out += _CRLF
    out += reason.encode("utf-8")
    out += _CRLF
    _header_lines(out, headers)
    return bytes(out)


class BodyHasher:
    """SHA-512 of a body fed in chunks, for :func:`request_hash`. Not thread-safe; one per message."""

    __slots__ = ("_h", "size")

    def __init__(self) -> None:
        self._h = hashlib.sha512()
        self.size = 0  # bytes seen

    def update(self, chunk: bytes) -> None:
        self._h.update(chunk)
        self.size += len(chunk)

    def digest_or_none(self) -> bytes | None:
        """The body digest, or ``None`` for an empty body (X-Road: a request without a body)."""
        return self._h.digest() if self.size else None


def request_hash(header_part: bytes, body_digest: bytes | None) -> str:
    """``X-Road-Request-Hash``: ``b64(SHA512(SHA512(hdr) || SHA512(body)))``, or ``b64(SHA512(hdr))`` with no
    body (PR-REST 4.3; reference section 2.4)."""
    head = hashlib.sha512(header_part).digest()
    if body_digest is None:
        return base64.b64encode(head).decode("ascii")
    return base64.b64encode(hashlib.sha512(head + body_digest).digest()).decode("ascii")


# --------------------------------------------------------------------------------------------------------
# Responses produced by the security server
# --------------------------------------------------------------------------------------------------------

JSON_UTF8: Final = "application/json;charset=utf-8"
_XML_TYPES: Final = {"text/xml": "text/xml", "application/xml": "application/xml", "text/*": "text/xml"}
_JSON_TYPES: Final = frozenset({"application/json", "application/*", "*/*"})


def _accept_ranges(accept: str) -> list[tuple[float, int, str]]:
    ranges: list[tuple[float, int, str]] = []
    for pos, item in enumerate(accept.split(",")):
        media, _, params = item.partition(";")
        media = media.strip().lower()
        if not media:
            continue
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v.strip())
                except ValueError:
                    q = 0.0
        if q > 0:
            ranges.append((-q, pos, media))
    ranges.sort()
    return ranges


def negotiate_error_type(accept: str | None) -> Literal["json", "text/xml", "application/xml"]:
    """Pick the error body format from ``Accept``: XML for ``text/xml``, ``application/xml`` or ``text/*``
    unless JSON is preferred at least as much (by q-value, then order); JSON otherwise (PR-REST 4.6)."""
    if not accept:
        return "json"
    for _q, _pos, media in _accept_ranges(accept):
        if media in _JSON_TYPES:
            return "json"
        xml = _XML_TYPES.get(media)
        if xml == "text/xml":
            return "text/xml"
        if xml == "application/xml":
            return "application/xml"
    return "json"


def render_error(
    err: GatewayError, *, accept: str | None, detail: str,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Render an error as X-Road does: ``(status, headers, body)``.

    JSON ``{"type","message","detail"}`` with ``Content-Type: application/json;charset=utf-8``, or
    ``<error><type/><message/><detail/></error>`` when ``Accept`` asks for XML (:func:`negotiate_error_type`).
    ``X-Road-Error`` carries the type. ``detail`` is the id the operator finds in the logs (a UUID).
    """
    xroad_type = err.xroad_type
    status = err.http_status  # the fault class's, by X-Road's rule (gateway.errors); never recomputed here
    kind = negotiate_error_type(accept)
    if kind == "json":
        body = json.dumps(
            {"type": xroad_type, "message": err.message, "detail": detail}, ensure_ascii=False,
        ).encode("utf-8")
        content_type = JSON_UTF8
    else:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f"<error><type>{_xml_text(xroad_type)}</type><message>{_xml_text(err.message)}</message>"
            f"<detail>{_xml_text(detail)}</detail></error>"
        ).encode()
        content_type = f"{kind};charset=utf-8"
    return status, [("Content-Type", content_type), ("X-Road-Error", xroad_type)], body


_XML_INVALID_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str) -> str:
    # XML 1.0 cannot carry most control characters even escaped; replace them.
    return _xml_escape(_XML_INVALID_RE.sub("\ufffd", text))


def _id_json(client: ClientId) -> dict[str, str]:
    out = {
        "member_class": client.member_class,
        "member_code": client.member_code,
    }
    if isinstance(client, SubsystemId):
        out["subsystem_code"] = client.subsystem_code
    out["object_type"] = client.object_type
    out["xroad_instance"] = client.instance
    return out


def render_list_clients(
    clients: Iterable[tuple[ClientId, str | None]], *, accept: str | None,
) -> tuple[str, bytes]:
    """The ``listClients`` metaservice body, ``(content_type, body)`` (PR-META 2, Annex C.1).

    ``clients`` are (identifier, name) pairs. JSON ``{"member":[{"id":{...},"name":...}]}`` when ``Accept``
    names ``application/json``; otherwise the ``clientList`` XML of namespace ``http://x-road.eu/xsd/xroad.xsd``
    with identifier elements of ``http://x-road.eu/xsd/identifiers``, as ``text/xml``.
    """
    items = list(clients)
    if accept and any(m == "application/json" for _q, _p, m in _accept_ranges(accept)):
        members: list[dict[str, object]] = []
        for cid, name in items:
            entry: dict[str, object] = {"id": _id_json(cid)}
            if name is not None:
                entry["name"] = name
            members.append(entry)
        return JSON_UTF8, json.dumps({"member": members}, ensure_ascii=False).encode("utf-8")
    parts = [
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<ns2:clientList xmlns:ns1="http://x-road.eu/xsd/identifiers" xmlns:ns2="http://x-road.eu/xsd/xroad.xsd">'
    ]
    for cid, name in items:
        parts.append(f'<ns2:member><ns2:id ns1:objectType="{cid.object_type}">')
        parts.append(f"<ns1:xRoadInstance>{_xml_text(cid.instance)}</ns1:xRoadInstance>")
        parts.append(f"<ns1:memberClass>{_xml_text(cid.member_class)}</ns1:memberClass>")
        parts.append(f"<ns1:memberCode>{_xml_text(cid.member_code)}</ns1:memberCode>")
        if isinstance(cid, SubsystemId):
            parts.append(f"<ns1:subsystemCode>{_xml_text(cid.subsystem_code)}</ns1:subsystemCode>")
        parts.append("</ns2:id>")
        if name is not None:
            parts.append(f"<ns2:name>{_xml_text(name)}</ns2:name>")
        parts.append("</ns2:member>")
    parts.append("</ns2:clientList>")
    return "text/xml;charset=utf-8", "".join(parts).encode("utf-8")


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One endpoint of a REST service: a method (or ``*``) and a path pattern (may hold ``*``)."""

    method: str
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceEntry:
    """A REST service as ``listMethods``/``allowedMethods`` list it."""

    service: ServiceId
    service_type: Literal["OPENAPI", "REST", "WSDL"]
    endpoints: tuple[Endpoint, ...] = ()


def render_methods(service_entries: Iterable[ServiceEntry]) -> tuple[str, bytes]:
    """The ``listMethods``/``allowedMethods`` body, ``(content_type, body)``, in the PR-MREST Annex B shape:
    ``{"service":[{"member_class",...,"endpoint_list":[{"method","path"}]}]}``."""
    services = [
        {
            "member_class": e.service.member_class,
            "member_code": e.service.member_code,
            "object_type": "SERVICE",
            "service_code": e.service.service_code,
            "service_type": e.service_type,
            "subsystem_code": e.service.subsystem_code,
            "xroad_instance": e.service.instance,
            "endpoint_list": [{"method": ep.method, "path": ep.path} for ep in e.endpoints],
        }
        for e in service_entries
    ]
    return JSON_UTF8, json.dumps({"service": services}, ensure_ascii=False).encode("utf-8")


__all__ = [
    "HOP_BY_HOP",
    "MAX_URI_BYTES",
    "METHODS",
    "PROTOCOL_VERSION",
    "SERVER_SET_HEADERS",
    "TRANSPORT_HEADERS",
    "BodyHasher",
    "Endpoint",
    "RepresentedParty",
    "RestTarget",
    "ServiceEntry",
    "XRoadRequestHeaders",
    "connection_named",
    "end_to_end_headers",
    "negotiate_error_type",
    "normalise_path",
    "parse_request_headers",
    "parse_target",
    "render_error",
    "render_list_clients",
    "render_methods",
    "request_hash",
    "request_header_part",
    "response_header_part",
]
