"""X-Road's message protocol v4.0 (gateway/protocol/soap.py) and the hardened XML parser (gateway/xmlsafe.py):
the specification's own example messages (PR-MESS Annexes D-G, PR-META C.2, C.6) and hostile documents."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.errors import (
    DuplicateHeaderField,
    IdentifierError,
    InconsistentHeaders,
    InvalidProtocolVersion,
    InvalidSoap,
    InvalidXml,
    MissingHeaderField,
    UnsupportedMediaType,
)
from gateway.identifiers import MemberId
from gateway.protocol import soap
from gateway.xmlsafe import XmlLimits, parse_xml

VECTORS = Path(__file__).parent / "soap_vectors"
XML = "text/xml; charset=UTF-8"


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def mime_vector(name: str) -> tuple[str, bytes]:
    """An Annex F/G message: its Content-Type (unfolded) and body, CRLF line ends as on the wire."""
    text = (VECTORS / name).read_text()
    head, body = text.split("\n\n", 1)
    unfolded = re.sub(r"\n\s+", " ", head)
    content_type = next(
        line.split(":", 1)[1].strip() for line in unfolded.splitlines() if line.lower().startswith("content-type:")
    )
    return content_type, body.replace("\n", "\r\n").encode()


def test_annex_e1_request_is_accepted() -> None:
    message = soap.parse_message(XML, vector("pr-mess-E.1-request.xml"))
    h = soap.parse_header(message)
    member1 = MemberId(instance="EE", member_class="GOV", member_code="MEMBER1")
    assert h.client == member1.subsystem("SUBSYSTEM1")
    assert str(h.service) == "EE/GOV/MEMBER2/SUBSYSTEM2/exampleService"
    assert (h.service_version, h.message_id, h.user_id, h.issue, h.protocol_version) == (
        "v1",
        "4894e35d-bf0f-44a6-867a-8e51f1daa7e0",
        "EE12345678901",
        "12345",
        "4.0",
    )
    assert message.body_element is not None and message.body_element.tag == "{http://producer.x-road.eu}exampleService"


def test_annex_e2_response_echoes_e1() -> None:
    request = soap.parse_message(XML, vector("pr-mess-E.1-request.xml"))
    response = soap.parse_message(XML, vector("pr-mess-E.2-response.xml"))
    soap.check_echo(request, response)  # requestHash aside, the same fields in the same order


def test_annex_d2_business_fault_is_a_normal_response() -> None:
    request = soap.parse_message(XML, vector("pr-mess-E.1-request.xml"))
    response = soap.parse_message(XML, vector("pr-mess-D.2-business-fault.xml"))
    assert response.fault is None
    with pytest.raises(InconsistentHeaders, match="does not repeat the request's service"):
        soap.check_echo(request, response)  # D.2 answers service "test", E.1 asked for "exampleService"


def test_annex_d1_fault_is_a_fault() -> None:
    message = soap.parse_message(XML, vector("pr-mess-D.1-fault.xml"))
    assert message.fault is not None and message.fault.findtext("faultcode") == (
        "Server.ClientProxy.ServiceFailed.MissingBody"
    )


@pytest.mark.parametrize("name", ["pr-mess-F-attachment.mime", "pr-mess-G-mtom.mime"])
def test_annex_f_g_attachments_are_accepted(name: str) -> None:
    content_type, body = mime_vector(name)
    message = soap.parse_message(content_type, body)
    assert message.attachments == 1
    assert soap.parse_header(message).service.service_code == "exampleService"


@pytest.mark.parametrize("name", ["pr-meta-C.2-listMethods.xml", "pr-meta-C.6-getWsdl.xml"])
def test_pr_meta_requests_are_accepted(name: str) -> None:
    message = soap.parse_message(XML, vector(name))
    h = soap.parse_header(message)
    assert h.service.service_code in soap.META_SERVICES
    if h.service.service_code == "getWsdl":
        assert soap.get_wsdl_params(message) == ("getRandom", "v1")
        assert h.protocol_version == "4.x"  # PR-META's own example: major version 4


def test_fault_rendering_parses_back() -> None:
    body = soap.render_fault("Server.ClientProxy.UnknownMember", "no <such> member", "d-1")
    fault = soap.parse_message(XML, body).fault
    assert fault is not None
    assert [fault.findtext(n) for n in ("faultcode", "faultstring", "faultactor", "detail/faultDetail")] == [
        "Server.ClientProxy.UnknownMember",
        "no <such> member",
        "",
        "d-1",
    ]


E1 = vector("pr-mess-E.1-request.xml").decode()


def _e1(old: str, new: str) -> bytes:
    assert old in E1
    return E1.replace(old, new, 1).encode()


@pytest.mark.parametrize(
    ("body", "error", "match"),
    [
        (_e1("<xrd:id>4894e35d-bf0f-44a6-867a-8e51f1daa7e0</xrd:id>", ""), MissingHeaderField, "no X-Road field id"),
        (_e1("<xrd:protocolVersion>4.0</xrd:protocolVersion>", ""), MissingHeaderField, "protocolVersion"),
        (_e1(">4.0<", ">3.1<"), InvalidProtocolVersion, "'3.1'"),
        (
            _e1("<xrd:issue>12345</xrd:issue>", "<xrd:issue>1</xrd:issue><xrd:issue>2</xrd:issue>"),
            DuplicateHeaderField,
            "issue",
        ),
        (_e1('xrd:client id:objectType="SUBSYSTEM"', 'xrd:client id:objectType="MEMBER"'), InvalidSoap, "objectType"),
        (
            _e1("<id:memberCode>MEMBER1</id:memberCode>", "<id:memberCode>ME/MBER1</id:memberCode>"),
            IdentifierError,
            "forbidden character",
        ),
        (_e1("<id:serviceCode>exampleService</id:serviceCode>", ""), InvalidSoap, "serviceCode"),
        (_e1("<SOAP-ENV:Body>", "<SOAP-ENV:Body><a/>"), InvalidSoap, "exactly one element"),
        (
            _e1("http://schemas.xmlsoap.org/soap/envelope/", "http://www.w3.org/2003/05/soap-envelope"),
            InvalidSoap,
            "not a SOAP 1.1 envelope",
        ),
        (b"<not xml", InvalidXml, "not well-formed"),
    ],
)
def test_bad_requests_are_refused_precisely(body: bytes, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        soap.parse_header(soap.parse_message(XML, body))


def test_content_types() -> None:
    with pytest.raises(UnsupportedMediaType, match="application/json"):
        soap.parse_message("application/json", b"{}")
    with pytest.raises(InvalidSoap, match="no parts"):
        soap.parse_message('multipart/related; boundary="x"', b"garbage")
    content_type, body = mime_vector("pr-mess-F-attachment.mime")
    with pytest.raises(InvalidSoap, match="Content-Transfer-Encoding must be 8bit"):
        soap.parse_message(content_type, body.replace(b"8bit", b"base64", 1))
    with pytest.raises(InvalidSoap, match="no part with Content-ID"):
        soap.parse_message(content_type.replace("<rootpart>", "<other>"), body)


# ---- hostile XML ---------------------------------------------------------------------------------------------

XXE = b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"""
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10 if i > 1 else b"&lol;" * 10) for i in range(1, 10)
    )
    + b"]><lolz>&lol9;</lolz>"
)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (XXE, "document type declaration"),
        (LAUGHS, "document type declaration"),
        (b'<!doctype r SYSTEM "http://example.org/r.dtd"><r/>', "document type declaration"),
        (b"<r>&x;</r>", "not well-formed"),  # an undeclared entity: no DTD, so no entity exists
        (b"<a>" * 65 + b"</a>" * 65, "more than 64 levels deep"),
        (b'<r a="' + b"x" * 9000 + b'"/>', "attribute 'a' of the XML document is 9000 characters long"),
        (b"", "not well-formed|empty"),
    ],
)
def test_hostile_xml_is_refused(data: bytes, match: str) -> None:
    with pytest.raises(InvalidXml, match=match):
        parse_xml(data)


def test_size_limit() -> None:
    with pytest.raises(InvalidXml, match="at most 100 are allowed"):
        parse_xml(b"<r>" + b"x" * 200 + b"</r>", limits=XmlLimits(max_bytes=100))


def test_bom_is_allowed() -> None:
    assert parse_xml(b"\xef\xbb\xbf<r/>").tag == "r"


def test_hide_endpoints() -> None:
    wsdl = (
        b'<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/">'
        b'<service name="s"><port name="p" binding="b"><soap:address location="http://internal:8080/x"/></port>'
        b"</service></definitions>"
    )
    out = soap.hide_endpoints(wsdl)
    assert b"internal" not in out and soap.HIDDEN_ENDPOINT.encode() in out


def test_request_hash_is_spliced_into_the_answer_and_checked() -> None:
    request = vector("pr-mess-E.1-request.xml")
    answer = vector("pr-mess-E.2-response.xml")  # carries the spec's own requestHash: replaced
    parsed = soap.parse_message(XML, answer)
    spliced = soap.with_request_hash(answer, parsed, soap.request_hash(request))
    assert spliced.count(b"requestHash") == 2  # one element, open and close
    again = soap.parse_message(XML, spliced)
    soap.check_request_hash(request, again)
    soap.check_echo(soap.parse_message(XML, request), again)
    with pytest.raises(InconsistentHeaders, match="not the hash of this request"):
        soap.check_request_hash(request + b" ", again)
    with pytest.raises(InconsistentHeaders, match="0 requestHash fields"):
        soap.check_request_hash(request, soap.parse_message(XML, request))


def test_request_hash_goes_into_an_empty_or_missing_header() -> None:
    for answer in (
        b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Header/><e:Body><r/></e:Body>'
        b"</e:Envelope>",
        b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><r/></e:Body></e:Envelope>',
    ):
        spliced = soap.with_request_hash(answer, soap.parse_message(XML, answer), "aGFzaA==")
        fields = soap.parse_message(XML, spliced).header_fields
        assert [(f.tag, f.text) for f in fields] == [(f"{{{soap.NS_XRD}}}requestHash", "aGFzaA==")]
