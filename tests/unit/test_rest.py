"""gateway.protocol.rest: the X-Road REST r1 client-facing protocol (pure)."""

from __future__ import annotations

import base64
import hashlib
import json
import xml.etree.ElementTree as ET

import pytest

from gateway.errors import (
    SERVER_PROXY,
    GatewayError,
    IdentifierError,
    InvalidSignatureValue,
    PayloadTooLarge,
    PeerError,
    RequestError,
    UriTooLong,
)
from gateway.identifiers import MemberId, SecurityServerId, ServiceId, SubsystemId
from gateway.protocol import rest

BR, IM = "Client.BadRequest", "Client.InvalidHttpMethod"
RE, IE = RequestError, IdentifierError


def parse_xml(body: bytes) -> ET.Element:
    return ET.fromstring(body)  # noqa: S314 - our own output, not untrusted input


# --------------------------------------------------------------------------------------------------------
# Request target
# --------------------------------------------------------------------------------------------------------


def test_pr_rest_example_request() -> None:
    # PR-REST 4.1: GET /r1/INSTANCE/CLASS2/MEMBER2/SUBSYSTEM2/BARSERVICE/v1/bar/zyggy?quu=1
    path = "/r1/INSTANCE/CLASS2/MEMBER2/SUBSYSTEM2/BARSERVICE/v1/bar/zyggy"
    target = rest.parse_target("GET", path, "quu=1")
    assert target.service == ServiceId(
        instance="INSTANCE", member_class="CLASS2", member_code="MEMBER2", subsystem_code="SUBSYSTEM2",
        service_code="BARSERVICE",
    )
    assert target.service_path == "/v1/bar/zyggy"
    assert target.forward_target == "/v1/bar/zyggy?quu=1"
    headers = rest.parse_request_headers(
        [("X-Road-Client", "INSTANCE/CLASS1/MEMBER1/SUBSYSTEM1")], instance="INSTANCE",
    )
    assert headers.client == SubsystemId(
        instance="INSTANCE", member_class="CLASS1", member_code="MEMBER1", subsystem_code="SUBSYSTEM1",
    )


@pytest.mark.parametrize(
    ("method", "path", "query", "service_code", "service_path", "forward"),
    [
        ("POST", "/r1/DEV/GOV/1/sub/svc", None, "svc", "", ""),
        ("PUT", "/r1/DEV/GOV/1/sub/svc/", None, "svc", "/", "/"),
        ("DELETE", "/r1/DEV/GOV/1/sub/svc/a%20b/c", "x=%2F&y", "svc", "/a%20b/c", "/a%20b/c?x=%2F&y"),
        ("PATCH", "/r1/DEV/GOV/1/sub/BAR%28x%29", "", "BAR(x)", "", "?"),
        ("OPTIONS", "/r1/DEV/GOV/1/sub/listMethods", None, "listMethods", "", ""),
        ("HEAD", "/r1/DEV/GOV/1/sub/svc/%2E%2E/admin", None, "svc", "/%2E%2E/admin", "/%2E%2E/admin"),
        ("TRACE", "/r1/DEV/GOV/1/sub/svc//x", None, "svc", "//x", "//x"),
    ],
)
def test_parse_target_good(
    method: str, path: str, query: str | None, service_code: str, service_path: str, forward: str,
) -> None:
    target = rest.parse_target(method, path, query)
    assert target.method == method
    assert target.service.service_code == service_code
    assert target.service_path == service_path  # kept raw for forwarding
    assert target.forward_target == forward
    assert target.raw_path == path


@pytest.mark.parametrize(
    ("method", "path", "query", "exc", "code", "status", "fragment"),
    [
        ("CONNECT", "/r1/A/B/C/D/E", None, RE, IM, 400, "'CONNECT' is not supp"),
        ("get", "/r1/A/B/C/D/E", None, RE, IM, 400, "'get' is not supported"),
        ("GET", "/r2/A/B/C/D/E", None, RE, BR, 400,
         "unsupported protocol version 'r2'; this security server supports r1"),
        ("GET", "/r10/A/B/C/D/E", None, RE, BR, 400, "unsupported protocol version"),
        ("GET", "/v1/A/B/C/D/E", None, RE, BR, 400, "invalid protocol version 'v1'"),
        ("GET", "/r1/A/B/C/D", None, RE, BR, 400, "does not match /r1/{INSTANCE}"),
        ("GET", "r1/A/B/C/D/E/F", None, RE, BR, 400, "does not match"),
        ("GET", "/r1/A/B/C/D%2FX/E", None, IE, BR, 400,
         "invalid service identifier in the request path: service identifier part subsystem_code 'D/X' "
         "contains a forbidden character '/'"),
        ("GET", "/r1/A/B/C/D/E%252F", None, IE, BR, 400,
         "'E%2F' contains a forbidden character '%'"),
        ("GET", "/r1/A/B/C/D/E%5Cx", None, IE, BR, 400, "forbidden character '\\\\'"),
        ("GET", "/r1/A/B/C/D/E%00", None, IE, BR, 400, "control character U+0000"),
        ("GET", "/r1/A//C/D/E", None, IE, BR, 400, "part member_class is empty"),
        ("GET", "/r1/A/B/C/../E", None, IE, BR, 400, "may not be '..'"),
        ("GET", "/r1/A/B/C/%2E%2E/E", None, IE, BR, 400, "may not be '..'"),
        ("GET", "/r1/A/B/C/D/E%C3", None, IE, BR, 400, "not valid UTF-8"),
        ("GET", "/r1/A/B/C/D/E%G1", None, RE, BR, 400, "malformed percent-escape"),
        ("GET", "/r1/A/B/C/D/E%4", None, RE, BR, 400, "malformed percent-escape"),
        ("GET", "/r1/A/B/C/D/E x", None, RE, BR, 400, "contains a space, control"),
        ("GET", "/r1/A/B/C/D/E\x00", None, RE, BR, 400, "control character"),
        ("GET", "/r1/A/B/C/D/E/\u00e4", None, RE, BR, 400, "non-ASCII"),
        ("GET", "/r1/A/B/C/D/E", "a=\r\n", RE, BR, 400, "control character"),
        ("GET", "/r1/A/B/C/D/E?x", None, RE, BR, 400, "may not contain '?' or '#'"),
        ("GET", "/r1/A/B/C/D/E/" + "x" * 8200, None, RE, BR, 414,
         "request URI is 8214 bytes long; at most 8192 are allowed"),
        ("GET", "/r1/A/B/C/D/E", "q=" + "x" * 8190, RE, BR, 414, "at most 8192"),
    ],
)
def test_parse_target_refused(
    method: str, path: str, query: str | None, exc: type[Exception], code: str, status: int, fragment: str,
) -> None:
    with pytest.raises(exc) as info:
        rest.parse_target(method, path, query)
    err = info.value
    assert isinstance(err, RequestError)
    assert err.xroad_type == code
    assert err.status == status
    assert fragment in err.message


def test_parse_target_uri_limit_is_a_parameter() -> None:
    with pytest.raises(RequestError, match="request URI is 21 bytes long; at most 20 are allowed") as info:
        rest.parse_target("GET", "/r1/A/B/C/D/E/abcdefg", None, max_uri_bytes=20)
    assert info.value.status == 414


# --------------------------------------------------------------------------------------------------------
# Path normalisation
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("", "/"),
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("/a/./b", "/a/b"),
        ("/a/b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/%2E%2E/b", "/b"),
        ("/a/%2e/b", "/a/b"),
        ("/%61%62%7E", "/ab~"),
        ("/a%20b", "/a%20b"),
        ("/a%3fb", "/a%3Fb"),
        ("//a///b", "/a/b"),
        ("/a/%25b", "/a/%25b"),
        ("/a/..b/.c", "/a/..b/.c"),
    ],
)
def test_normalise_path(raw: str, normal: str) -> None:
    assert rest.normalise_path(raw) == normal


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("/..", "climbs above its root"),
        ("/a/../..", "climbs above its root"),
        ("/a/%2E%2E/%2e%2e/admin", "climbs above its root"),
        ("/a/%2Fb", "forbidden encoded character %2F"),
        ("/a/%2fb", "forbidden encoded character %2F"),
        ("/a/%5Cb", "forbidden encoded character %5C"),
        ("/a/%00", "forbidden encoded character %00"),
        ("/a/%1f", "forbidden encoded character %1F"),
        ("/a/%7F", "forbidden encoded character %7F"),
        ("/a\\b", "may not contain '\\'"),
        ("/a/%252e%252e/admin", "double-encoded"),
        ("/a/%252F", "double-encoded"),
        ("/a/%255c", "double-encoded"),
        ("/a/%2500", "double-encoded"),
        ("/a/..;/admin", "dot segment with parameters"),
        ("/a/.;x/b", "dot segment with parameters"),
        ("/a/%2E%2E;/admin", "dot segment with parameters"),
        ("/a/%G0", "malformed percent-escape"),
        ("/a/%", "malformed percent-escape"),
        ("/a b", "space, control character"),
        ("/a\tb", "space, control character"),
        ("/\u00e9", "non-ASCII"),
        ("a/b", "must start with '/'"),
    ],
)
def test_normalise_path_refused(raw: str, fragment: str) -> None:
    with pytest.raises(RequestError) as info:
        rest.normalise_path(raw)
    assert info.value.xroad_type == "Client.BadRequest"
    assert fragment in info.value.message


# --------------------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------------------


def test_headers_all_fields_and_last_one_wins() -> None:
    pairs = [
        ("x-road-client", "DEV/GOV/1/first"),
        ("X-Road-Id", "msg-1"),
        ("X-ROAD-CLIENT", "DEV/COM/2"),
        ("X-Road-UserId", "EE12345678901"),
        ("X-Road-Issue", "MT324223MSD"),
        ("X-Road-Security-Server", "DEV/GOV/9/ss1"),
        ("X-Road-Represented-Party", "COM/777"),
        ("Content-Type", "application/json"),
    ]
    h = rest.parse_request_headers(pairs, instance="DEV", new_id=lambda: "unused")
    assert h.client == MemberId(instance="DEV", member_class="COM", member_code="2")
    assert (h.message_id, h.message_id_generated) == ("msg-1", False)
    assert (h.user_id, h.issue) == ("EE12345678901", "MT324223MSD")
    assert h.security_server == SecurityServerId(
        instance="DEV", member_class="GOV", member_code="9", server_code="ss1",
    )
    assert h.represented_party == rest.RepresentedParty(party_class="COM", party_code="777")
    assert str(h.represented_party) == "COM/777"


def test_headers_generate_message_id() -> None:
    h = rest.parse_request_headers([("X-Road-Client", "DEV/GOV/1")], instance="DEV", new_id=lambda: "uuid-1")
    assert (h.message_id, h.message_id_generated) == ("DEV-uuid-1", True)
    assert (h.user_id, h.issue, h.security_server, h.represented_party) == (None, None, None, None)
    default = rest.parse_request_headers([("X-Road-Client", "DEV/GOV/1")], instance="DEV")
    assert default.message_id.startswith("DEV-") and len(default.message_id) == 4 + 36


def test_represented_party_code_only() -> None:
    h = rest.parse_request_headers(
        [("X-Road-Client", "DEV/GOV/1"), ("X-Road-Represented-Party", "777")], instance="DEV",
    )
    assert h.represented_party == rest.RepresentedParty(party_class=None, party_code="777")


@pytest.mark.parametrize(
    ("pairs", "exc", "code", "fragment"),
    [
        ([], RequestError, "Client.BadRequest", "X-Road-Client header is missing"),
        ([("X-Road-Id", "x")], RequestError, "Client.BadRequest", "X-Road-Client header is missing"),
        ([("X-Road-Client", "DEV/GOV")], IdentifierError, "Client.InvalidClientIdentifier",
         "X-Road-Client header is invalid: client identifier 'DEV/GOV' must be"),
        ([("X-Road-Client", "DEV/GOV/1/a/b")], IdentifierError, "Client.InvalidClientIdentifier", "must be"),
        ([("X-Road-Client", "DEV/GOV/%2F")], IdentifierError, "Client.InvalidClientIdentifier",
         "forbidden character '/'"),
        ([("X-Road-Client", "DEV/GOV/a;b")], IdentifierError, "Client.InvalidClientIdentifier",
         "forbidden character ';'"),
        ([("X-Road-Client", "DEV/GOV/1"), ("X-Road-Id", "x" * 256)], RequestError, "Client.BadRequest",
         "X-Road-Id header is 256 characters long; at most 255 are allowed"),
        ([("X-Road-Client", "DEV/GOV/1"), ("X-Road-Id", "a\x01b")], RequestError, "Client.BadRequest",
         "X-Road-Id header may hold printable ASCII characters only"),
        ([("X-Road-Client", "DEV/GOV/1"), ("X-Road-UserId", "\u00e4")], RequestError, "Client.BadRequest",
         "X-Road-UserId header may hold printable ASCII"),
        ([("X-Road-Client", "DEV/GOV/1"), ("X-Road-Issue", "i" * 300)], RequestError, "Client.BadRequest",
         "X-Road-Issue header is 300 characters long"),
        ([("X-Road-Client", "DEV/GOV/1"), ("X-Road-Security-Server", "DEV/GOV/1")], IdentifierError,
         "Client.BadRequest", "X-Road-Security-Server header is invalid"),
        ([("X-Road-Client", "DEV/GOV/1"), ("X-Road-Represented-Party", "a/b/c")], RequestError,
         "Client.BadRequest", "must be CODE or CLASS/CODE"),
        ([("X-Road-Client", "DEV/GOV/1"), ("X-Road-Represented-Party", "a/%25")], IdentifierError,
         "Client.BadRequest", "forbidden character '%'"),
    ],
)
def test_headers_refused(
    pairs: list[tuple[str, str]], exc: type[Exception], code: str, fragment: str,
) -> None:
    with pytest.raises(exc) as info:
        rest.parse_request_headers(pairs, instance="DEV")
    assert isinstance(info.value, RequestError)
    assert info.value.xroad_type == code
    assert fragment in info.value.message


def test_end_to_end_headers() -> None:
    pairs = [
        ("Host", "ss"), ("Accept", "a"), ("Connection", "keep-alive, X-Private"), ("X-Private", "p"),
        ("Set-Cookie", "1"), ("Transfer-Encoding", "chunked"), ("Set-Cookie", "2"), ("User-Agent", "u"),
        ("X-Road-Request-Id", "forged"), ("Authorization", "Bearer t"), ("Content-Length", "3"),
        ("Expect", "100-continue"), ("Keep-Alive", "5"), ("TE", "trailers"), ("Signature", "x"),
    ]
    assert rest.end_to_end_headers(pairs, also_skip=rest.SERVER_SET_HEADERS) == [
        ("Accept", "a"), ("Set-Cookie", "1"), ("Set-Cookie", "2"), ("Authorization", "Bearer t"),
    ]
    assert ("X-Road-Request-Id", "forged") in rest.end_to_end_headers(pairs)
    assert rest.connection_named(pairs) == frozenset({"keep-alive", "x-private"})


# --------------------------------------------------------------------------------------------------------
# Header parts and request hash
# --------------------------------------------------------------------------------------------------------

# Reference section 2.7: message.xml of valid-non-batch-rest.asice (X-Road test fixture), CRLF line ends.
RESPONSE_PART_VECTOR = (
    b"200\r\nOK\r\nContent-Type:application/json\r\nmock-response:true\r\n"
    b"Matched-Stub-Id:ef2dae0e-5673-46f1-80f9-f07177c7ce6a\r\n"
    b"x-road-id:DEV-d75ea6fd-d24b-48ec-a320-53675c40fb86\r\nx-road-client:DEV/COM/4422/TestClient\r\n"
    b"x-road-service:DEV/COM/1234/TestService/mock1\r\nx-road-request-id:78b890f3-b1eb-45b2-a512-beec5d7ead23\r\n"
    b"x-road-request-hash:7zmQ9CwnVrEWzWnCyXbXkQYGR+A7/i6e61JgWMLaEI8Bj1QWdrUVGijBBdyDdhcgOpfY8Sid1RhvRbs+aFbOhw==\r\n"
)


def test_response_header_part_matches_xroad_vector() -> None:
    headers = [
        ("Content-Type", "application/json"),
        ("mock-response", "true"),
        ("Matched-Stub-Id", "ef2dae0e-5673-46f1-80f9-f07177c7ce6a"),
        ("x-road-id", "DEV-d75ea6fd-d24b-48ec-a320-53675c40fb86"),
        ("x-road-client", "DEV/COM/4422/TestClient"),
        ("x-road-service", "DEV/COM/1234/TestService/mock1"),
        ("x-road-request-id", "78b890f3-b1eb-45b2-a512-beec5d7ead23"),
        ("Content-Length", "99"),  # hop-by-hop: never in a header part
    ]
    part = rest.response_header_part(200, "OK", headers)
    # X-Road adds the request hash last; ours leaves it out of the part it hashes, so append it here.
    expected_prefix, hash_line = RESPONSE_PART_VECTOR.rsplit(b"x-road-request-hash:", 1)
    assert part == expected_prefix
    assert part + b"x-road-request-hash:" + hash_line == RESPONSE_PART_VECTOR


def test_request_header_part_format() -> None:
    part = rest.request_header_part(
        "GET", "/r1/INSTANCE/CLASS2/MEMBER2/SUBSYSTEM2/BARSERVICE/v1/bar/zyggy", "quu=1",
        [("Host", "ss"), ("X-Road-Client", "INSTANCE/CLASS1/MEMBER1/SUBSYSTEM1"), ("Accept", "a, b"),
         ("Signature", "xroad=:AA==:"), ("X-Road-Id", "DEV-1"), ("x-road-request-id", "r-1"),
         ("X-Road-Request-Hash", "forged"), ("X-Binary", "caf\udcc3\udca9")],
    )
    assert part == (
        b"GET\r\n/r1/INSTANCE/CLASS2/MEMBER2/SUBSYSTEM2/BARSERVICE/v1/bar/zyggy?quu=1\r\n"
        b"X-Road-Client:INSTANCE/CLASS1/MEMBER1/SUBSYSTEM1\r\nAccept:a, b\r\nX-Road-Id:DEV-1\r\n"
        b"x-road-request-id:r-1\r\nX-Binary:caf\xc3\xa9\r\n"
    )
    assert rest.request_header_part("POST", "/r1/A/B/C/D/E", None, []) == b"POST\r\n/r1/A/B/C/D/E\r\n"
    assert rest.request_header_part("POST", "/r1/A/B/C/D/E", "", []) == b"POST\r\n/r1/A/B/C/D/E?\r\n"


@pytest.mark.parametrize(
    "headers",
    [[("X-A", "a\r\nX-Injected: 1")], [("X-A", "a\nb")], [("X-\r\nA", "a")], [("X-A:B", "a")]],
)
def test_header_part_refuses_line_breaks(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(RequestError, match="contains a line break or a colon in its name"):
        rest.request_header_part("GET", "/r1/A/B/C/D/E", None, headers)
    with pytest.raises(RequestError, match="contains a line break or a colon in its name"):
        rest.response_header_part(200, "OK", headers)


def test_request_hash() -> None:
    hdr = b"POST\r\n/r1/A/B/C/D/E\r\nX-Road-Client:A/B/C\r\n"
    body = b'{"a": 1}' * 1000
    hasher = rest.BodyHasher()
    for i in range(0, len(body), 777):
        hasher.update(body[i:i + 777])
    assert hasher.size == len(body)
    digest = hasher.digest_or_none()
    assert digest == hashlib.sha512(body).digest()
    expected = base64.b64encode(
        hashlib.sha512(hashlib.sha512(hdr).digest() + hashlib.sha512(body).digest()).digest()
    ).decode()
    assert rest.request_hash(hdr, digest) == expected
    empty = rest.BodyHasher()
    empty.update(b"")
    assert empty.digest_or_none() is None
    assert rest.request_hash(hdr, None) == base64.b64encode(hashlib.sha512(hdr).digest()).decode()
    assert len(base64.b64decode(rest.request_hash(hdr, None))) == 64


# --------------------------------------------------------------------------------------------------------
# Errors and metaservices
# --------------------------------------------------------------------------------------------------------


def test_render_error_json_like_pr_rest_example() -> None:
    err = PeerError("Connect to 10.139.178.1:8080 failed").at_side(SERVER_PROXY)
    status, headers, body = rest.render_error(err, accept=None, detail="9bc95b6e-2f1d-4a41-a7e6-11eda7d734d5")
    assert status == 500
    assert headers == [
        ("Content-Type", "application/json;charset=utf-8"),
        ("X-Road-Error", "Server.ServerProxy.NetworkError"),
    ]
    assert list(json.loads(body).items()) == [
        ("type", "Server.ServerProxy.NetworkError"),
        ("message", "Connect to 10.139.178.1:8080 failed"),
        ("detail", "9bc95b6e-2f1d-4a41-a7e6-11eda7d734d5"),
    ]


class _ServerFaultOfTheRequest(RequestError):
    """A refusal of the request that X-Road types Server.* (like AccessDenied): its class says HTTP 500."""

    status = 500
    prefix = "Server"
    fault = "X"


@pytest.mark.parametrize(
    ("err", "status", "xroad_type"),
    [
        (RequestError("bad"), 400, "Client.BadRequest"),
        (UriTooLong("long"), 414, "Client.BadRequest"),
        (PayloadTooLarge("big"), 413, "Client.BadRequest"),
        (IdentifierError("id"), 400, "Client.InvalidClientIdentifier"),
        (InvalidSignatureValue("sig").at_side(SERVER_PROXY), 500,
         "Server.ServerProxy.InvalidSignatureValue"),
        (PeerError("down").at_side(SERVER_PROXY), 500, "Server.ServerProxy.NetworkError"),
        (GatewayError("boom").at_side(SERVER_PROXY), 500, "Server.ServerProxy.InternalError"),
        (_ServerFaultOfTheRequest("odd").at_side("ClientProxy"), 500, "Server.ClientProxy.X"),
    ],
)
def test_render_error_status(err: GatewayError, status: int, xroad_type: str) -> None:
    got_status, headers, _ = rest.render_error(err, accept="application/json", detail="d")
    assert (got_status, dict(headers)["X-Road-Error"]) == (status, xroad_type)


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "application/json;charset=utf-8"),
        ("", "application/json;charset=utf-8"),
        ("application/json", "application/json;charset=utf-8"),
        ("text/xml", "text/xml;charset=utf-8"),
        ("application/xml", "application/xml;charset=utf-8"),
        ("text/*", "text/xml;charset=utf-8"),
        ("TEXT/XML; charset=utf-8", "text/xml;charset=utf-8"),
        ("application/json, text/xml", "application/json;charset=utf-8"),
        ("text/xml, application/json", "text/xml;charset=utf-8"),
        ("application/json;q=0.5, text/xml", "text/xml;charset=utf-8"),
        ("text/xml;q=0, application/json;q=0.1", "application/json;charset=utf-8"),
        ("*/*", "application/json;charset=utf-8"),
        ("image/png", "application/json;charset=utf-8"),
        ("text/xml;q=bogus", "application/json;charset=utf-8"),
    ],
)
def test_render_error_negotiation(accept: str | None, content_type: str) -> None:
    _, headers, body = rest.render_error(RequestError("x"), accept=accept, detail="d")
    assert dict(headers)["Content-Type"] == content_type
    if content_type.startswith("application/json"):
        assert json.loads(body)["type"] == "Client.BadRequest"
    else:
        assert parse_xml(body).find("type") is not None


def test_render_error_xml_escapes() -> None:
    err = RequestError("a <b> & \"c\" \x01")
    _, _, body = rest.render_error(err, accept="text/xml", detail="<id>")
    root = parse_xml(body)
    assert root.tag == "error"
    assert [(c.tag, c.text) for c in root] == [
        ("type", "Client.BadRequest"), ("message", 'a <b> & "c" \ufffd'), ("detail", "<id>"),
    ]


CLIENTS: list[tuple[MemberId | SubsystemId, str | None]] = [
    (MemberId(instance="AA", member_class="GOV", member_code="TS1OWNER"), "TS1 Owner"),
    (MemberId(instance="AA", member_class="ENT", member_code="CLIENT1").subsystem("sub"), "Client <One>"),
    (MemberId(instance="AA", member_class="ENT", member_code="NONAME"), None),
]


def test_list_clients_json() -> None:
    content_type, body = rest.render_list_clients(CLIENTS, accept="application/json")
    assert content_type == "application/json;charset=utf-8"
    assert json.loads(body) == {"member": [
        {"id": {"member_class": "GOV", "member_code": "TS1OWNER", "object_type": "MEMBER",
                "xroad_instance": "AA"}, "name": "TS1 Owner"},
        {"id": {"member_class": "ENT", "member_code": "CLIENT1", "subsystem_code": "sub",
                "object_type": "SUBSYSTEM", "xroad_instance": "AA"}, "name": "Client <One>"},
        {"id": {"member_class": "ENT", "member_code": "NONAME", "object_type": "MEMBER",
                "xroad_instance": "AA"}},
    ]}


@pytest.mark.parametrize("accept", [None, "text/xml", "*/*"])
def test_list_clients_xml(accept: str | None) -> None:
    content_type, body = rest.render_list_clients(CLIENTS, accept=accept)
    assert content_type == "text/xml;charset=utf-8"
    xrd, idn = "{http://x-road.eu/xsd/xroad.xsd}", "{http://x-road.eu/xsd/identifiers}"
    root = parse_xml(body)
    assert root.tag == f"{xrd}clientList"
    members = root.findall(f"{xrd}member")
    assert len(members) == 3
    sub = members[1].find(f"{xrd}id")
    assert sub is not None
    assert sub.get(f"{idn}objectType") == "SUBSYSTEM"
    assert [(c.tag.removeprefix(idn), c.text) for c in sub] == [
        ("xRoadInstance", "AA"), ("memberClass", "ENT"), ("memberCode", "CLIENT1"), ("subsystemCode", "sub"),
    ]
    assert members[1].findtext(f"{xrd}name") == "Client <One>"
    assert members[2].find(f"{xrd}name") is None


def test_render_methods_pr_mrest_shape() -> None:
    provider = SubsystemId.parse("INSTANCE/CLASS2/MEMBER2/SUBSYSTEM2")
    content_type, body = rest.render_methods([
        rest.ServiceEntry(service=provider.service("payloadgen"), service_type="OPENAPI", endpoints=(
            rest.Endpoint(method="PUT", path="/pet"), rest.Endpoint(method="GET", path="/pet/*"),
        )),
        rest.ServiceEntry(service=provider.service("kore"), service_type="REST"),
    ])
    assert content_type == "application/json;charset=utf-8"
    data = json.loads(body)
    assert list(data["service"][0]) == [
        "member_class", "member_code", "object_type", "service_code", "service_type", "subsystem_code",
        "xroad_instance", "endpoint_list",
    ]
    common = {"member_class": "CLASS2", "member_code": "MEMBER2", "object_type": "SERVICE"}
    where = {"subsystem_code": "SUBSYSTEM2", "xroad_instance": "INSTANCE"}
    assert data == {"service": [
        {**common, "service_code": "payloadgen", "service_type": "OPENAPI", **where,
         "endpoint_list": [{"method": "PUT", "path": "/pet"}, {"method": "GET", "path": "/pet/*"}]},
        {**common, "service_code": "kore", "service_type": "REST", **where, "endpoint_list": []},
    ]}
