"""X-Road's message protocol v4.0 (PR-MESS): SOAP 1.1 messages with X-Road's header fields (pure).

What this module reads and checks, in the words of the specification:

- the message: ``text/xml`` (the SOAP envelope itself), or ``multipart/related`` whose first part (or its
  ``start`` part) is the envelope, ``text/xml`` or ``application/xop+xml`` (MTOM), with a
  ``Content-Transfer-Encoding`` of ``8bit`` (``7bit``, ``binary`` or none accepted too), then the attachments
  (PR-MESS 2.4). Attachments are not read: they travel untouched inside the body the signature covers;
- the envelope, parsed by :func:`gateway.xmlsafe.parse_xml` (no DTD, bounded size, depth and attributes):
  namespace ``http://schemas.xmlsoap.org/soap/envelope/``, one ``Header``, exactly one ``Body``;
- the header fields (PR-MESS 2.2, Table 1): ``client`` (a member or subsystem), ``service`` (a subsystem's
  service, with an optional ``serviceVersion``), ``id``, ``protocolVersion`` mandatory; ``userId``, ``issue``,
  ``securityServer`` (PR-TARGETSS) and ``repr:representedParty`` (PR-THIRDPARTY) optional; each at most once;
  the ``objectType`` attribute must name the identifier's kind. ``protocolVersion`` must be of major version 4
  ("any protocols with the same major version number are compatible", PR-MESS 2.2; PR-META's own getWsdl
  example sends ``4.x``);
- a response's header echoes the request's fields in the same order with the same values (PR-MESS 2.2), a
  ``requestHash`` aside; a SOAP Fault passes as the service's answer.

The body's wrapper element is not required to be named as the ``serviceCode``: PR-MESS 2.3 asks for it, but its
own Annex F and G examples (``exampleServiceSwaRef`` for service ``exampleService``) do not do it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from functools import lru_cache
from typing import Final
from xml.sax.saxutils import escape

from lxml import etree

from gateway.errors import (
    DuplicateHeaderField,
    GatewayError,
    InconsistentHeaders,
    InvalidProtocolVersion,
    InvalidSoap,
    MissingHeaderField,
    UnsupportedMediaType,
)
from gateway.identifiers import (
    ClientId,
    MemberId,
    SecurityServerId,
    ServiceId,
    SubsystemId,
    check_part,
)
from gateway.xmlsafe import DEFAULT_LIMITS, XmlLimits, parse_xml

NS_SOAP: Final = "http://schemas.xmlsoap.org/soap/envelope/"
NS_XRD: Final = "http://x-road.eu/xsd/xroad.xsd"
NS_ID: Final = "http://x-road.eu/xsd/identifiers"
NS_REPR: Final = "http://x-road.eu/xsd/representation.xsd"
NS_WSDL_SOAP: Final = ("http://schemas.xmlsoap.org/wsdl/soap/", "http://schemas.xmlsoap.org/wsdl/soap12/")
SHA512_URI: Final = "http://www.w3.org/2001/04/xmlenc#sha512"
# PR-META 4: the endpoint location every WSDL carries when it is handed out through the metaservice
HIDDEN_ENDPOINT: Final = "http://example.org/xroad-endpoint"

META_SERVICES: Final = frozenset({"listMethods", "allowedMethods", "getWsdl"})

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_LIMIT = 255  # characters of id, userId, issue (X-Road's message log column sizes)
_XML_TYPES = frozenset({"text/xml", "application/xop+xml"})
_OPTIONAL_ID_FIELDS = frozenset({"serviceVersion", "subsystemCode"})
_ID_FIELDS = (
    "xRoadInstance",
    "memberClass",
    "memberCode",
    "subsystemCode",
    "serviceCode",
    "serviceVersion",
    "serverCode",
)


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def is_soap_content_type(content_type: str | None) -> bool:
    """Whether a POST with this ``Content-Type`` is a SOAP message for the client port (cheap: no parsing)."""
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("text/xml", "multipart/related")


@dataclass(frozen=True, slots=True, kw_only=True)
class SoapHeader:
    """The X-Road header fields of one SOAP message, validated."""

    client: ClientId
    service: ServiceId
    service_version: str | None
    message_id: str
    user_id: str | None
    issue: str | None
    protocol_version: str
    security_server: SecurityServerId | None
    represented_party: tuple[str | None, str] | None  # (partyClass, partyCode)


@dataclass(frozen=True, slots=True, kw_only=True)
class SoapMessage:
    """A parsed SOAP message: ``soap_part`` is the envelope's bytes as received (the whole body, or the first
    MIME part of a multipart message), ``header`` its X-Road fields (``None`` for a response's fault)."""

    soap_part: bytes
    envelope: etree._Element
    header_fields: tuple[etree._Element, ...]
    body_element: etree._Element | None
    fault: etree._Element | None
    attachments: int  # MIME parts after the SOAP part


def _media(content_type: str) -> tuple[str, Message]:
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n")
    return msg.get_content_type(), msg


def soap_part_of(content_type: str | None, body: bytes) -> tuple[bytes, int]:
    """The SOAP envelope's bytes in a message body and the number of attachments (PR-MESS 2.4).

    Raises:
        UnsupportedMediaType: neither ``text/xml`` nor ``multipart/related`` (``Client.InvalidContentType``).
        InvalidSoap: a multipart message without its SOAP part, or with a SOAP part that is not XML or is
            transfer-encoded.
    """
    if content_type is None:
        raise UnsupportedMediaType("a SOAP message needs Content-Type text/xml or multipart/related")
    if content_type.split(";", 1)[0].strip().lower() == "text/xml":
        return body, 0  # the common case, without the MIME parser (about a millisecond)
    try:
        media, _ = _media(content_type)
    except (ValueError, UnicodeError) as e:
        raise UnsupportedMediaType(f"Content-Type {content_type[:100]!r} is malformed") from e
    if media == "text/xml":
        return body, 0
    if media != "multipart/related":
        raise UnsupportedMediaType(
            f"Content-Type {media[:60]!r} is not a SOAP message; send text/xml or multipart/related",
        )
    try:
        whole = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body,
        )
    except (ValueError, UnicodeError) as e:
        raise InvalidSoap(f"the multipart message cannot be read: {e}") from e
    parts = whole.get_payload() if whole.is_multipart() else None
    if not isinstance(parts, list) or not parts or whole.defects:
        raise InvalidSoap("the multipart/related message has no parts (check its boundary)")
    start = whole.get_param("start", header="content-type")
    mime_parts = [p for p in parts if isinstance(p, Message)]
    first = mime_parts[0]
    if isinstance(start, str):
        for part in mime_parts:
            if str(part.get("Content-ID", "")).strip() == start.strip():
                first = part
                break
        else:
            raise InvalidSoap(f"the multipart message has no part with Content-ID {start[:80]!r} (its start)")
    if first.get_content_type() not in _XML_TYPES:
        raise InvalidSoap(
            f"the SOAP part of a multipart message must be text/xml or application/xop+xml, "
            f"not {first.get_content_type()[:60]!r}",
        )
    encoding = first.get("Content-Transfer-Encoding", "8bit").strip().lower()
    if encoding not in ("8bit", "7bit", "binary"):
        raise InvalidSoap(f"the SOAP part's Content-Transfer-Encoding must be 8bit, not {encoding[:40]!r}")
    payload = first.get_payload(decode=False)
    data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
    return data, len(parts) - 1


def parse_message(
    content_type: str | None,
    body: bytes,
    *,
    limits: XmlLimits = DEFAULT_LIMITS,
    what: str = "SOAP message",
) -> SoapMessage:
    """Parse a SOAP message body: its SOAP part, the envelope, the header's elements and the body's element.

    Raises:
        UnsupportedMediaType, InvalidSoap: see :func:`soap_part_of`; also an envelope that is not SOAP 1.1,
            without a Body or with other than one element in it.
        InvalidXml: the hardened parser refused the envelope (gateway/xmlsafe.py).
    """
    part, attachments = soap_part_of(content_type, body)
    envelope = parse_xml(part, limits=limits, what=what)
    if envelope.tag != _q(NS_SOAP, "Envelope"):
        raise InvalidSoap(f"the {what} is not a SOAP 1.1 envelope (root element {envelope.tag[:120]!r})")
    headers = [c for c in envelope if isinstance(c.tag, str) and c.tag == _q(NS_SOAP, "Header")]
    bodies = [c for c in envelope if isinstance(c.tag, str) and c.tag == _q(NS_SOAP, "Body")]
    if len(headers) > 1:
        raise InvalidSoap(f"the {what} has {len(headers)} SOAP Header elements; at most one is allowed")
    if len(bodies) != 1:
        raise InvalidSoap(f"the {what} has {len(bodies)} SOAP Body elements; exactly one is required")
    fields = tuple(c for c in headers[0] if isinstance(c.tag, str)) if headers else ()
    children = [c for c in bodies[0] if isinstance(c.tag, str)]
    if len(children) != 1:
        raise InvalidSoap(f"the SOAP Body of the {what} must hold exactly one element, not {len(children)}")
    child = children[0]
    fault = child if child.tag == _q(NS_SOAP, "Fault") else None
    return SoapMessage(
        soap_part=part,
        envelope=envelope,
        header_fields=fields,
        body_element=None if fault is not None else child,
        fault=fault,
        attachments=attachments,
    )


def _text(el: etree._Element, what: str) -> str:
    value = (el.text or "").strip()
    if not value:
        raise MissingHeaderField(f"X-Road header field {what} is empty")
    if len(value) > _TEXT_LIMIT:
        raise InvalidSoap(f"X-Road header field {what} is {len(value)} characters long; at most {_TEXT_LIMIT}")
    if _CONTROL_RE.search(value) is not None:
        raise InvalidSoap(f"X-Road header field {what} contains a control character")
    return value


def _id_parts(el: etree._Element, what: str, expected: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    object_type = el.get(_q(NS_ID, "objectType"))
    if object_type is None:
        raise InvalidSoap(f"X-Road header field {what} has no id:objectType attribute")
    parts: dict[str, str] = {}
    for child in el:
        if not isinstance(child.tag, str):
            continue
        namespace, _, name = child.tag[1:].rpartition("}")
        if namespace != NS_ID or name not in _ID_FIELDS:
            raise InvalidSoap(f"X-Road header field {what} has an unexpected element {name[:60]!r}")
        if name in parts:
            raise DuplicateHeaderField(f"X-Road header field {what} has {name} twice")
        parts[name] = (child.text or "").strip()  # checked as the identifier is built
    order = [n for n in _ID_FIELDS if n in parts]
    if not parts.keys() <= set(expected) or any(n not in parts for n in expected if n not in _OPTIONAL_ID_FIELDS):
        raise InvalidSoap(
            f"X-Road header field {what} ({object_type}) must have {', '.join(expected)}; it has {', '.join(order)}",
        )
    return object_type, parts


def _member(parts: dict[str, str]) -> MemberId:
    return MemberId(instance=parts["xRoadInstance"], member_class=parts["memberClass"], member_code=parts["memberCode"])


# A server sees the same few clients and services again and again: identifiers built once (errors not cached)
@lru_cache(maxsize=4096)
def _client_of(instance: str, member_class: str, member_code: str, subsystem: str | None) -> ClientId:
    member = MemberId(instance=instance, member_class=member_class, member_code=member_code)
    return member if subsystem is None else member.subsystem(subsystem)


@lru_cache(maxsize=4096)
def _service_of(instance: str, member_class: str, member_code: str, subsystem: str, code: str) -> ServiceId:
    member = MemberId(instance=instance, member_class=member_class, member_code=member_code)
    return member.subsystem(subsystem).service(code)


def _client(el: etree._Element) -> ClientId:
    object_type, parts = _id_parts(el, "client", ("xRoadInstance", "memberClass", "memberCode", "subsystemCode"))
    if object_type not in ("MEMBER", "SUBSYSTEM") or (object_type == "MEMBER") == ("subsystemCode" in parts):
        raise InvalidSoap(
            f"X-Road header field client has id:objectType {object_type[:30]!r} that does not fit its parts",
        )
    return _client_of(parts["xRoadInstance"], parts["memberClass"], parts["memberCode"], parts.get("subsystemCode"))


def _service(el: etree._Element) -> tuple[ServiceId, str | None]:
    object_type, parts = _id_parts(
        el, "service", ("xRoadInstance", "memberClass", "memberCode", "subsystemCode", "serviceCode", "serviceVersion")
    )
    if object_type != "SERVICE":
        raise InvalidSoap(f"X-Road header field service has id:objectType {object_type[:30]!r}, not SERVICE")
    if "subsystemCode" not in parts:
        raise InvalidSoap("X-Road header field service names no subsystemCode; services here belong to subsystems")
    if "serviceCode" not in parts:
        raise MissingHeaderField("X-Road header field service has no serviceCode")
    service = _service_of(
        parts["xRoadInstance"], parts["memberClass"], parts["memberCode"], parts["subsystemCode"], parts["serviceCode"]
    )
    version = parts.get("serviceVersion")
    return service, None if version is None else check_part(version, what="service serviceVersion")


def _server(el: etree._Element) -> SecurityServerId:
    object_type, parts = _id_parts(el, "securityServer", ("xRoadInstance", "memberClass", "memberCode", "serverCode"))
    if object_type != "SERVER" or "serverCode" not in parts:
        raise InvalidSoap("X-Road header field securityServer must be a SERVER identifier with a serverCode")
    return _member(parts).server(parts["serverCode"])


def _represented(el: etree._Element) -> tuple[str | None, str]:
    values: dict[str, str] = {}
    for child in el:
        if isinstance(child.tag, str):
            name = etree.QName(child).localname
            if name not in ("partyClass", "partyCode") or name in values:
                raise InvalidSoap(f"representedParty has an unexpected or repeated element {name[:40]!r}")
            values[name] = _text(child, f"representedParty {name}")
    if "partyCode" not in values:
        raise MissingHeaderField("representedParty has no partyCode")
    return values.get("partyClass"), values["partyCode"]


def parse_header(message: SoapMessage) -> SoapHeader:
    """The X-Road header of a request (PR-MESS 2.2).

    Raises:
        MissingHeaderField: ``client``, ``service``, ``id`` or ``protocolVersion`` is missing or empty.
        DuplicateHeaderField: a field is given twice.
        InvalidProtocolVersion: ``protocolVersion`` is not ``4.<minor>``.
        InvalidSoap: a field is malformed (identifier parts, objectType, length, control characters).
        BadIdentifier: an identifier part holds a forbidden character.
    """
    seen: dict[str, etree._Element] = {}
    for field in message.header_fields:
        namespace, _, name = field.tag[1:].rpartition("}")
        if namespace not in (NS_XRD, NS_REPR):
            continue  # other headers (WS-Addressing, security tokens...) are the parties' business
        if name in seen:
            raise DuplicateHeaderField(f"X-Road header field {name[:40]} is given twice")
        seen[name] = field
    for name in ("client", "service", "id", "protocolVersion"):
        if name not in seen:
            raise MissingHeaderField(f"the SOAP header has no X-Road field {name} (PR-MESS 2.2)")
    version = _text(seen["protocolVersion"], "protocolVersion")
    if version.split(".", 1)[0] != "4" or "." not in version:
        raise InvalidProtocolVersion(f"protocolVersion is {version[:20]!r}; this server speaks X-Road's 4.0")
    service, service_version = _service(seen["service"])
    return SoapHeader(
        client=_client(seen["client"]),
        service=service,
        service_version=service_version,
        message_id=_text(seen["id"], "id"),
        user_id=_text(seen["userId"], "userId") if "userId" in seen else None,
        issue=_text(seen["issue"], "issue") if "issue" in seen else None,
        protocol_version=version,
        security_server=_server(seen["securityServer"]) if "securityServer" in seen else None,
        represented_party=_represented(seen["representedParty"]) if "representedParty" in seen else None,
    )


def _canonical(el: etree._Element) -> tuple[object, ...]:
    """A header field's value with prefixes and layout whitespace aside (PR-MESS 2.2: prefixes do not matter)."""
    children = tuple(_canonical(c) for c in el if isinstance(c.tag, str))
    text = (el.text or "").strip() if not children else ""
    return el.tag, tuple(sorted(el.attrib.items())), text, children


def check_echo(request: SoapMessage, response: SoapMessage) -> None:
    """The response's header repeats every field of the request's, in order, with the same values; a
    ``requestHash`` the response may carry is left aside (PR-MESS 2.2). A Fault is not checked.

    Raises:
        InconsistentHeaders: (``Server.ServerProxy.InconsistentResponse``) a field is missing, changed, added or
            moved.
    """
    if response.fault is not None:
        return
    hash_tag = _q(NS_XRD, "requestHash")
    want = [_canonical(f) for f in request.header_fields if f.tag != hash_tag]
    got = [_canonical(f) for f in response.header_fields if f.tag != hash_tag]
    if want == got:
        return
    for i, field in enumerate(want):
        name = etree.QName(str(field[0])).localname
        if i >= len(got):
            raise InconsistentHeaders(f"the service's response lacks the request's header field {name}")
        if got[i] != field:
            raise InconsistentHeaders(
                f"header field {i + 1} of the service's response ({etree.QName(str(got[i][0])).localname}) does "
                f"not repeat the request's {name} (PR-MESS 2.2: same fields, same order, same values)",
            )
    raise InconsistentHeaders("the service's response has header fields the request did not have")


def request_hash(soap_part: bytes) -> str:
    """PR-MESS 2.2: base64 of SHA-512 over the request's SOAP part as received."""
    return base64.b64encode(hashlib.sha512(soap_part).digest()).decode("ascii")


# ---- rendering ---------------------------------------------------------------------------------------------


def render_fault(fault_code: str, fault_string: str, detail: str) -> bytes:
    """A SOAP Fault as X-Road sends one (PR-MESS 2.5, Annex D.1): code, string, empty actor, the detail id."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{NS_SOAP}"><SOAP-ENV:Body><SOAP-ENV:Fault>'
        f"<faultcode>{escape(fault_code)}</faultcode><faultstring>{escape(fault_string)}</faultstring>"
        f'<faultactor></faultactor><detail><faultDetail xmlns="">{escape(detail)}</faultDetail></detail>'
        "</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


def fault_of(e: GatewayError, detail: str) -> bytes:
    """Our error as a SOAP Fault: X-Road's fault type as ``faultcode``."""
    return render_fault(e.xroad_type, e.message, detail)


def _id_xml(tag: str, object_type: str, parts: list[tuple[str, str]]) -> str:
    inner = "".join(f"<id:{name}>{escape(value)}</id:{name}>" for name, value in parts)
    return f'<{tag} id:objectType="{object_type}">{inner}</{tag}>'


def client_xml(client: ClientId, tag: str = "xrd:client") -> str:
    member = client if isinstance(client, MemberId) else client.member
    parts = [
        ("xRoadInstance", member.instance),
        ("memberClass", member.member_class),
        ("memberCode", member.member_code),
    ]
    if isinstance(client, SubsystemId):
        parts.append(("subsystemCode", client.subsystem_code))
        return _id_xml(tag, "SUBSYSTEM", parts)
    return _id_xml(tag, "MEMBER", parts)


def service_xml(service: ServiceId, version: str | None, tag: str = "xrd:service") -> str:
    parts = [
        ("xRoadInstance", service.instance),
        ("memberClass", service.member_class),
        ("memberCode", service.member_code),
        ("subsystemCode", service.subsystem_code),
        ("serviceCode", service.service_code),
    ]
    if version is not None:
        parts.append(("serviceVersion", version))
    return _id_xml(tag, "SERVICE", parts)


def render_request(
    *,
    client: ClientId,
    service: ServiceId,
    message_id: str,
    body: str,
    version: str | None = None,
) -> bytes:
    """A request envelope with X-Road's header fields (for the client port's ``GET /wsdl``) and ``body``."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="{NS_SOAP}" '
        f'xmlns:xrd="{NS_XRD}" xmlns:id="{NS_ID}"><SOAP-ENV:Header>{client_xml(client)}'
        f"{service_xml(service, version)}<xrd:id>{escape(message_id)}</xrd:id>"
        "<xrd:protocolVersion>4.0</xrd:protocolVersion></SOAP-ENV:Header>"
        f"<SOAP-ENV:Body>{body}</SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


def render_response(request: SoapMessage, body: str, *, namespaces: str = "") -> bytes:
    """A response to ``request``: its header fields copied in order (serialised as received, so the echo
    holds), then ``body``; the caller's ``namespaces`` are declared on the envelope."""
    fields = "".join(etree.tostring(f, encoding="unicode", with_tail=False) for f in request.header_fields)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="{NS_SOAP}" '
        f'xmlns:xrd="{NS_XRD}" xmlns:id="{NS_ID}"{namespaces}><SOAP-ENV:Header>{fields}</SOAP-ENV:Header>'
        f"<SOAP-ENV:Body>{body}</SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


def render_methods(request: SoapMessage, name: str, services: list[ServiceId]) -> bytes:
    """``listMethodsResponse`` / ``allowedMethodsResponse`` (PR-META 3)."""
    inner = "".join(service_xml(s, None) for s in services)
    return render_response(request, f"<xrd:{name}Response>{inner}</xrd:{name}Response>")


def get_wsdl_params(message: SoapMessage) -> tuple[str, str | None]:
    """The ``serviceCode`` and optional ``serviceVersion`` of a ``getWsdl`` request body (PR-META 4).

    Raises:
        InvalidSoap: the body is not ``getWsdl`` or has no ``serviceCode``.
    """
    body = message.body_element
    if body is None or etree.QName(body).localname != "getWsdl":
        raise InvalidSoap("a getWsdl request's body must be a getWsdl element")
    values: dict[str, str] = {}
    for child in body:
        if isinstance(child.tag, str):
            values[etree.QName(child).localname] = (child.text or "").strip()
    code = values.get("serviceCode")
    if not code:
        raise InvalidSoap("getWsdl needs a serviceCode element")
    return check_part(code, what="getWsdl serviceCode"), values.get("serviceVersion") or None


def hide_endpoints(wsdl: bytes, *, limits: XmlLimits = DEFAULT_LIMITS) -> bytes:
    """The WSDL with every SOAP address replaced by PR-META 4's ``http://example.org/xroad-endpoint``.

    Raises:
        InvalidXml: the WSDL is refused by the hardened parser.
    """
    root = parse_xml(wsdl, limits=limits, what="WSDL")
    for ns in NS_WSDL_SOAP:
        for address in root.iter(_q(ns, "address")):
            address.set("location", HIDDEN_ENDPOINT)
    out: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return out


def render_wsdl_response(request: SoapMessage, code: str, version: str | None, wsdl: bytes) -> tuple[str, bytes]:
    """The getWsdl answer: a ``getWsdlResponse`` envelope, the WSDL as its attachment (PR-META 4, Annex C.7,
    C.8), as ``(content type, body)``."""
    version_xml = "" if version is None else f"<xrd:serviceVersion>{escape(version)}</xrd:serviceVersion>"
    envelope = render_response(
        request,
        f"<xrd:getWsdlResponse><xrd:serviceCode>{escape(code)}</xrd:serviceCode>{version_xml}</xrd:getWsdlResponse>",
    )
    boundary = "xroad" + hashlib.sha256(wsdl).hexdigest()[:32]
    body = (
        f"--{boundary}\r\nContent-Type: text/xml; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        f"Content-ID: <rootpart>\r\n\r\n".encode()
        + envelope
        + f"\r\n--{boundary}\r\nContent-Type: text/xml; charset=UTF-8\r\nContent-ID: <wsdl>\r\n\r\n".encode()
        + wsdl
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return f'multipart/related; type="text/xml"; start="<rootpart>"; boundary="{boundary}"', body


def wsdl_attachment(content_type: str | None, body: bytes) -> bytes:
    """The WSDL attached to a getWsdl answer (the first attachment of the multipart message).

    Raises:
        InvalidSoap: the answer is not multipart or has no attachment.
    """
    if content_type is None or _media(content_type)[0] != "multipart/related":
        raise InvalidSoap("the getWsdl answer is not a multipart/related message with the WSDL attached")
    whole = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body,
    )
    parts = whole.get_payload()
    if not isinstance(parts, list) or len(parts) < 2:
        raise InvalidSoap("the getWsdl answer has no WSDL attached")
    attached = parts[1]
    payload = attached.get_payload(decode=True) if isinstance(attached, Message) else None
    return payload if isinstance(payload, bytes) else b""


__all__ = [
    "HIDDEN_ENDPOINT",
    "META_SERVICES",
    "NS_ID",
    "NS_SOAP",
    "NS_XRD",
    "SoapHeader",
    "SoapMessage",
    "check_echo",
    "client_xml",
    "fault_of",
    "get_wsdl_params",
    "hide_endpoints",
    "is_soap_content_type",
    "parse_header",
    "parse_message",
    "render_fault",
    "render_methods",
    "render_request",
    "render_response",
    "render_wsdl_response",
    "request_hash",
    "service_xml",
    "soap_part_of",
    "wsdl_attachment",
]

# The signed headers a SOAP message carries between security servers besides r1's (docs/soap.md section 3)
H_PROTOCOL_VERSION: Final = "x-road-protocol-version"
H_SERVICE_VERSION: Final = "x-road-service-version"


_REQUEST_HASH_RE = re.compile(rb"<(?:[\w.-]+:)?requestHash\b[^>]*?(?:/>|>.*?</(?:[\w.-]+:)?requestHash\s*>)", re.S)


def with_request_hash(body: bytes, response: SoapMessage, value: str) -> bytes:
    """The service's answer with PR-MESS 2.2's ``requestHash`` field (``algorithmId`` SHA-512) as the last field
    of its SOAP header, spliced into the bytes as received (a ``requestHash`` the service sent is replaced, as
    the provider's server must); the answer unchanged if it is a Fault or its header cannot be found in its
    bytes (an encoding other than an ASCII superset).
    """
    if response.fault is not None:
        return body
    prefix = response.envelope.prefix
    tag = f"{prefix}:Header" if prefix else "Header"
    field = (f'<xrd:requestHash xmlns:xrd="{NS_XRD}" algorithmId="{SHA512_URI}">{value}</xrd:requestHash>').encode()
    cleaned = _REQUEST_HASH_RE.sub(b"", body, count=1) if b"requestHash" in body else body
    close = cleaned.find(f"</{tag}".encode())
    if close >= 0:
        return cleaned[:close] + field + cleaned[close:]
    empty = re.search(rf"<{re.escape(tag)}\s*/>".encode(), cleaned)
    if empty is not None:
        return cleaned[: empty.start()] + f"<{tag}>".encode() + field + f"</{tag}>".encode() + cleaned[empty.end() :]
    body_tag = f"<{prefix}:Body" if prefix else "<Body"
    at = cleaned.find(body_tag.encode())
    if at < 0:
        return body
    return cleaned[:at] + f"<{tag}>".encode() + field + f"</{tag}>".encode() + cleaned[at:]


def check_request_hash(request_part: bytes, response: SoapMessage) -> None:
    """The answer's ``requestHash`` is the SHA-512 of our request's SOAP part (PR-MESS 2.2: the client's server
    verifies it). A Fault carries none.

    Raises:
        InconsistentHeaders: the field is missing, of another algorithm, or another request's hash.
    """
    if response.fault is not None:
        return
    fields = [f for f in response.header_fields if f.tag == _q(NS_XRD, "requestHash")]
    if len(fields) != 1:
        raise InconsistentHeaders(f"the answer carries {len(fields)} requestHash fields, not one (PR-MESS 2.2)")
    field = fields[0]
    if field.get("algorithmId") != SHA512_URI:
        raise InconsistentHeaders(f"the answer's requestHash uses {str(field.get('algorithmId'))[:80]!r}, not SHA-512")
    if "".join((field.text or "").split()) != request_hash(request_part):
        raise InconsistentHeaders("the answer's requestHash is not the hash of this request's SOAP part")
