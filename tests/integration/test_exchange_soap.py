"""SOAP (X-Road message protocol v4.0) through a real federation: a real SOAP client library (zeep) built from
the WSDL that ``GET /wsdl`` fetches through both servers calls the demo's ``getPerson``; the spec's example
message shapes, attachments, metaservices, X-Road faults, hostile XML; both message logs, exported, verify
offline and match (``gateway log export | verify | match`` as processes)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from lxml import etree

from gateway.dev.demo import Federation, start_federation
from gateway.identifiers import SubsystemId
from gateway.messagelog.record import LogRecord
from gateway.protocol import soap
from gateway.server.runtime import SecurityServer
from gateway.serverconf.access import AccessRule

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

GATEWAY = Path(sys.executable).parent / "gateway"
CONSUMER = SubsystemId.parse("DEV/GOV/1001/consumer")
REGISTRY = SubsystemId.parse("DEV/GOV/1002/registry")
GET_PERSON = REGISTRY.service("getPerson")
ECHO = REGISTRY.service("echo")  # the test's own SOAP service (below), granted
BAD_ECHO = REGISTRY.service("badEcho")  # answers with a header that does not echo the request's
HIDDEN = REGISTRY.service("hidden")  # provided, not granted
TNS = "http://gateway.example/persons"
XML = "text/xml; charset=utf-8"


@dataclass
class Probe:
    """The test's SOAP service: answers a valid echo (or, as ``badEcho``, a changed one), and keeps what came."""

    received: list[tuple[str, bytes, str | None]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        content_type = request.headers.get("Content-Type", "")
        self.received.append((content_type, body, request.headers.get("SOAPAction")))
        message = soap.parse_message(content_type, body)
        answer = soap.render_response(message, '<p:echoResponse xmlns:p="urn:p"><p:ok>yes</p:ok></p:echoResponse>')
        if request.path.endswith("/bad"):
            message_id = soap.parse_header(message).message_id.encode()
            answer = answer.replace(b">" + message_id + b"<", b">changed-" + message_id + b"<", 1)
        return web.Response(body=answer, content_type="text/xml")


@dataclass
class Env:
    fed: Federation
    probe: Probe

    @property
    def ss1(self) -> SecurityServer:
        return self.fed.server("ss1")

    @property
    def ss2(self) -> SecurityServer:
        return self.fed.server("ss2")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    d = tmp_path_factory.mktemp("soap")
    probe = Probe()
    app = web.Application()
    app.router.add_post("/echo", probe.handle)
    app.router.add_post("/echo/bad", probe.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fed = await start_federation(d / "demo", server_overrides={"checkpoint_interval_seconds": 3600.0})
    try:
        store = fed.server("ss2").store
        for service, path in ((ECHO, "/echo"), (BAD_ECHO, "/echo/bad"), (HIDDEN, "/echo")):
            await store.add_service(service, url=f"http://127.0.0.1:{port}{path}")
        for service in (ECHO, BAD_ECHO):
            await store.grant(AccessRule(subject=CONSUMER, service=service))
        await fed.server("ss2").reload_serverconf()
        yield Env(fed=fed, probe=probe)
    finally:
        await fed.close()
        await runner.cleanup()


def envelope(
    service: str, body: str, *, message_id: str, version: str | None = "v1", extra: str = "", protocol: str = "4.0"
) -> bytes:
    """A request shaped as PR-MESS Annex E.1, with the federation's identifiers."""
    code = service.rsplit("/", 1)[1]
    version_xml = "" if version is None else f"<id:serviceVersion>{version}</id:serviceVersion>"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns1="{TNS}"
        xmlns:xrd="http://x-road.eu/xsd/xroad.xsd" xmlns:id="http://x-road.eu/xsd/identifiers">
    <SOAP-ENV:Header>
        <xrd:client id:objectType="SUBSYSTEM">
            <id:xRoadInstance>DEV</id:xRoadInstance><id:memberClass>GOV</id:memberClass>
            <id:memberCode>1001</id:memberCode><id:subsystemCode>consumer</id:subsystemCode>
        </xrd:client>
        <xrd:service id:objectType="SERVICE">
            <id:xRoadInstance>DEV</id:xRoadInstance><id:memberClass>GOV</id:memberClass>
            <id:memberCode>1002</id:memberCode><id:subsystemCode>registry</id:subsystemCode>
            <id:serviceCode>{code}</id:serviceCode>{version_xml}
        </xrd:service>
        <xrd:id>{message_id}</xrd:id>
        <xrd:userId>EE12345678901</xrd:userId>
        <xrd:issue>12345</xrd:issue>
        <xrd:protocolVersion>{protocol}</xrd:protocolVersion>{extra}
    </SOAP-ENV:Header>
    <SOAP-ENV:Body>{body}</SOAP-ENV:Body>
</SOAP-ENV:Envelope>""".encode()


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes
    error: str | None = None  # X-Road-Error

    def message(self) -> soap.SoapMessage:
        return soap.parse_message(self.content_type, self.body)

    def fault(self) -> tuple[str, str]:
        fault = self.message().fault
        assert fault is not None, self.body
        return fault.findtext("faultcode"), fault.findtext("faultstring")


async def post(env: Env, body: bytes, *, content_type: str = XML, soap_action: str | None = None) -> Reply:
    headers = {"Content-Type": content_type}
    if soap_action is not None:
        headers["SOAPAction"] = soap_action
    async with aiohttp.ClientSession() as http, http.post(env.ss1.client_url + "/", data=body, headers=headers) as resp:
        return Reply(
            resp.status, resp.headers.get("Content-Type", ""), await resp.read(), resp.headers.get("X-Road-Error")
        )


async def records(ss: SecurityServer, message_id: str) -> list[LogRecord]:
    stored = await ss.messagelog.read(str(ss.server_id), start=0, limit=10_000)
    return [r for r in (s.decode() for s in stored) if r.message_id == message_id]


def person_code(env: Env) -> str:
    csv_path = env.fed.workdir / "registries" / "persons.csv"
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    return lines[1].split(",")[0]


# ---------------------------------------------------------------------------------------------- zeep, end to end


async def test_zeep_from_the_wsdl_through_both_servers(env: Env) -> None:
    import zeep
    from zeep.transports import Transport

    wsdl_url = (
        f"{env.ss1.client_url}/wsdl?xRoadInstance=DEV&memberClass=GOV&memberCode=1002"
        f"&subsystemCode=registry&serviceCode=getPerson&client={CONSUMER}"
    )
    code = person_code(env)

    def call() -> object:
        client = zeep.Client(wsdl_url, transport=Transport(timeout=30))
        service = client.create_service(f"{{{TNS}}}personsBinding", env.ss1.client_url + "/")
        header = etree.fromstring(envelope(str(GET_PERSON), "", message_id="zeep-1", version=None)).find(
            "{http://schemas.xmlsoap.org/soap/envelope/}Header"
        )
        return service.getPerson(personalCode=code, _soapheaders=list(header))

    answer = await asyncio.to_thread(call)
    assert answer.personal_code == code  # type: ignore[attr-defined]
    assert answer.first_name  # type: ignore[attr-defined]
    # the WSDL zeep read hides the service's own address (PR-META 4)
    async with aiohttp.ClientSession() as http, http.get(wsdl_url) as resp:
        wsdl = await resp.read()
    assert resp.status == 200 and soap.HIDDEN_ENDPOINT.encode() in wsdl
    assert b"127.0.0.1" not in wsdl
    # the getPerson exchange is in both logs, request and response, with the SOAP bytes
    for ss in (env.ss1, env.ss2):
        recs = await records(ss, "zeep-1")
        assert [(r.kind, r.service) for r in recs] == [("request", GET_PERSON), ("response", GET_PERSON)]
        assert recs[0].body is not None and code.encode() in recs[0].body


async def test_annex_e_request_and_its_echo(env: Env) -> None:
    sent = envelope(str(ECHO), "<ns1:echo><x>foo</x></ns1:echo>", message_id="e1")
    reply = await post(env, sent, soap_action="urn:echo")
    assert reply.status == 200, reply.body
    assert reply.content_type.startswith("text/xml")
    request = soap.parse_message(XML, sent)
    soap.check_echo(request, reply.message())
    # the provider's server added the request's hash (PR-MESS 2.2, as Annex E.2 shows it)
    soap.check_request_hash(sent, reply.message())
    assert reply.message().header_fields[-1].tag == f"{{{soap.NS_XRD}}}requestHash"
    content_type, body, action = env.probe.received[-1]
    assert (content_type, action) == (XML, "urn:echo")
    assert b"<x>foo</x>" in body


async def test_attachment_travels_untouched(env: Env) -> None:
    soap_part = envelope(str(ECHO), "<ns1:echo><a>cid:data.bin</a></ns1:echo>", message_id="f1")
    body = (
        b"--MIME_boundary\r\nContent-Type: text/xml; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        b"Content-ID: <rootpart>\r\n\r\n" + soap_part + b"\r\n--MIME_boundary\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-ID: <data.bin>\r\n\r\nVGhpcyBpcyBhdHRhY2htZW50Lg0K\r\n--MIME_boundary--\r\n"
    )
    content_type = 'multipart/related; type="text/xml"; start="<rootpart>"; boundary="MIME_boundary"'
    reply = await post(env, body, content_type=content_type)
    assert reply.status == 200, reply.body
    assert env.probe.received[-1][:2] == (content_type, body)  # byte for byte, attachment included
    # both logs hold the whole MIME message: its digest covers the attachment
    for ss in (env.ss1, env.ss2):
        recs = await records(ss, "f1")
        assert recs[0].body == body


# ---------------------------------------------------------------------------------------------- metaservices


async def test_list_and_allowed_methods(env: Env) -> None:
    def codes(reply: Reply, name: str) -> list[str]:
        body = reply.message().body_element
        assert body is not None and body.tag == f"{{{soap.NS_XRD}}}{name}Response", reply.body
        return sorted(s.findtext(f"{{{soap.NS_ID}}}serviceCode") for s in body)

    listed = await post(env, envelope(f"{REGISTRY}/listMethods", "<xrd:listMethods/>", message_id="lm", version=None))
    assert listed.status == 200, listed.body
    assert codes(listed, "listMethods") == ["badEcho", "companies", "echo", "getPerson", "hidden", "persons"]
    allowed = await post(
        env, envelope(f"{REGISTRY}/allowedMethods", "<xrd:allowedMethods/>", message_id="am", version=None)
    )
    assert codes(allowed, "allowedMethods") == ["badEcho", "companies", "echo", "getPerson", "persons"]


async def test_get_wsdl_answers_the_wsdl_attached(env: Env) -> None:
    body = "<xrd:getWsdl><xrd:serviceCode>getPerson</xrd:serviceCode></xrd:getWsdl>"
    reply = await post(env, envelope(f"{REGISTRY}/getWsdl", body, message_id="gw", version=None))
    assert reply.status == 200, reply.body
    assert reply.content_type.startswith("multipart/related")
    message = reply.message()
    assert message.attachments == 1 and message.body_element is not None
    assert message.body_element.findtext(f"{{{soap.NS_XRD}}}serviceCode") == "getPerson"
    assert b"wsdl:definitions" in soap.wsdl_attachment(reply.content_type, reply.body)


# ---------------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("make", "code", "text"),
    [
        (lambda: envelope(str(HIDDEN), "<ns1:x/>", message_id="d1"), "Server.ServerProxy.AccessDenied", "may not"),
        (
            lambda: envelope(str(BAD_ECHO), "<ns1:x/>", message_id="d2"),
            "Server.ServerProxy.InconsistentResponse",
            "does not repeat the request's id",
        ),
        (
            lambda: envelope(str(ECHO), "<ns1:x/>", message_id="d3", protocol="3.1"),
            "Client.InvalidProtocolVersion",
            "'3.1'",
        ),
        (
            lambda: envelope(str(ECHO), "<ns1:x/>", message_id="d4").replace(b"<xrd:id>d4</xrd:id>", b""),
            "Client.MissingHeaderField",
            "no X-Road field id",
        ),
        (
            lambda: envelope(f"{REGISTRY}/nosuch", "<ns1:x/>", message_id="d5"),
            "Server.ServerProxy.UnknownService",
            "nosuch",
        ),
        (
            lambda: (
                envelope("DEV/GOV/9999/none/x", "<ns1:x/>", message_id="d6")
                .replace(b"1002", b"9999")
                .replace(b"registry", b"none")
            ),
            "Server.ClientProxy.UnknownMember",
            "not registered",
        ),
        (
            lambda: b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
            "Client.InvalidXml",
            "DTD",
        ),
        (lambda: b"<a>" * 100 + b"</a>" * 100, "Client.InvalidXml", "levels deep"),
        (lambda: b'<r a="' + b"x" * 10000 + b'"/>', "Client.InvalidXml", "attribute 'a'"),
    ],
)
async def test_errors_are_x_road_faults(env: Env, make: object, code: str, text: str) -> None:
    reply = await post(env, make())  # type: ignore[operator]
    assert reply.status == 500, reply.body
    got_code, got_text = reply.fault()
    assert got_code == code == reply.error, got_text
    assert text in got_text


async def test_information_system_authentication_as_for_rest(env: Env) -> None:
    await env.ss1.store.update_client(CONSUMER, is_auth="https")
    await env.ss1.reload_serverconf()
    try:
        reply = await post(env, envelope(str(ECHO), "<ns1:echo/>", message_id="auth"))  # plain HTTP
    finally:
        await env.ss1.store.update_client(CONSUMER, is_auth="none")
        await env.ss1.reload_serverconf()
    assert reply.status == 500
    assert reply.fault() == (
        "Server.ClientProxy.SslAuthenticationFailed",
        "client SUBSYSTEM:DEV/GOV/1001/consumer must connect over HTTPS",
    )
    assert await records(env.ss1, "auth") == []  # refused before anything is signed or logged


async def test_provider_fault_passes_through(env: Env) -> None:
    body = "<ns1:getPerson><ns1:personalCode>00000000000</ns1:personalCode></ns1:getPerson>"
    reply = await post(env, envelope(str(GET_PERSON), body, message_id="pf", version=None))
    assert reply.status == 500
    assert reply.fault() == ("Client.NotFound", "no person with personal code '00000000000'")
    assert reply.error is None  # the service's own Fault, not a security server's
    for ss in (env.ss1, env.ss2):  # the service's fault is the signed, logged answer
        assert [(r.kind, r.status) for r in await records(ss, "pf")] == [("request", None), ("response", 500)]


# ---------------------------------------------------------------------------------------------- the logs


async def gateway(*args: str | Path) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = await asyncio.create_subprocess_exec(
        str(GATEWAY), *map(str, args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=environ
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_logs_verify_offline_and_match(env: Env, tmp_path: Path) -> None:
    reply = await post(env, envelope(str(ECHO), "<ns1:echo/>", message_id="last"))
    assert reply.status == 200
    paths = {code: tmp_path / f"{code}.zip" for code in ("ss1", "ss2")}
    for ss in (env.ss1, env.ss2):
        assert ss.checkpointer is not None
        await ss.checkpointer.run_once(ss.clock() + timedelta(hours=2))
    # the two servers' exports, then their verifications, side by side (each command is a process)
    exports = await asyncio.gather(
        *(
            gateway("-c", env.fed.workdir / f"{code}.toml", "log", "export", "--out", path)
            for code, path in paths.items()
        )
    )
    assert all(rc == 0 for rc, _ in exports), exports
    verified = await asyncio.gather(
        *(gateway("log", "verify", path, "--anchor", env.fed.anchor_path) for path in paths.values())
    )
    for rc, out in verified:
        assert rc == 0, out
        assert out.rstrip().endswith("RESULT: OK, everything verifies")
    rc, out = await gateway("log", "match", paths["ss1"], paths["ss2"])
    assert rc == 0, out
    assert out.rstrip().endswith("RESULT: OK, both sides agree")
