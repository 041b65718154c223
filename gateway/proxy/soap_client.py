"""The client port's SOAP side: X-Road's message protocol v4.0 (PR-MESS) from information systems (I/O).

A ``POST`` that is not r1, with ``Content-Type: text/xml`` or ``multipart/related``, is a SOAP message:

1. read its body (bounded by ``max_body_bytes``, held on the body budget), take its SOAP part and parse it with
   the hardened parser (gateway/xmlsafe.py); validate X-Road's header fields (gateway/protocol/soap.py);
2. it then travels exactly as an r1 request does (client_proxy.relay: client registered and authenticated,
   provider found, signed, logged, sent over mutual TLS, the answer verified and logged), as
   ``POST /r1/{service}`` with the body as received (attachments included) and two more signed headers,
   ``X-Road-Protocol-Version`` and, for a versioned service, ``X-Road-Service-Version`` (docs/soap.md);
3. the answer goes back with its ``Content-Type`` only (PR-MESS 2.2); a security server's error is a SOAP Fault
   with X-Road's fault code (PR-MESS 2.5), HTTP 500.

``GET /wsdl?xRoadInstance=..&memberClass=..&memberCode=..&subsystemCode=..&serviceCode=..[&version=..]`` asks
the provider's ``getWsdl`` metaservice for the client named by ``X-Road-Client`` (or the ``client`` query
parameter, ``INSTANCE/CLASS/MEMBER[/SUBSYSTEM]``) and answers the WSDL itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, quote
from xml.sax.saxutils import escape

import structlog

from gateway.errors import CLIENT_PROXY, GatewayError, InconsistentHeaders, InvalidRequest, InvalidSoap, RequestError
from gateway.identifiers import ClientId, MemberId, ServiceId, parse_client
from gateway.protocol import rest, soap
from gateway.proxy import http, observe
from gateway.proxy.common import BodyAccount
from gateway.proxy.context import ProxyContext
from gateway.xmlsafe import XmlLimits

log = structlog.get_logger("gateway.proxy.soap")

Relay = Callable[..., Awaitable[http.Response]]
_XML = "text/xml; charset=utf-8"


def _limits(ctx: ProxyContext) -> XmlLimits:
    return XmlLimits(max_bytes=ctx.limits.max_body_bytes)


def _target(service: ServiceId) -> rest.RestTarget:
    path = "/r1/" + "/".join(quote(p, safe="") for p in service.parts())
    return rest.parse_target("POST", path, None)


def _fault_headers(fault_type: str) -> list[tuple[str, str]]:
    # X-Road-Error beside the Fault, as r1 sends it: this server's metrics, op-monitoring record and exchange log
    # line name the fault from it (gateway/proxy/observe.py); a SOAP client reads the Fault
    return [("Content-Type", _XML), ("X-Road-Error", fault_type[:200])]


def fault_response(e: Exception, *, request_id: str | None = None) -> http.Response:
    """Our error as a SOAP Fault (PR-MESS 2.5), HTTP 500, logged with its detail id."""
    detail = str(uuid.uuid4())
    if isinstance(e, GatewayError):
        err = e.at_side(CLIENT_PROXY)
        log.warning(
            "SOAP request refused",
            side=f"Server.{CLIENT_PROXY}",
            detail=detail,
            type=err.xroad_type,
            error=err.message,
            request_id=request_id,
        )
    else:
        log.exception("internal error", side=f"Server.{CLIENT_PROXY}", detail=detail, exc_info=e)
        err = GatewayError(f"internal error ({type(e).__name__})").at_side(CLIENT_PROXY)
    return http.Response(status=500, headers=_fault_headers(err.xroad_type), body=soap.fault_of(err, detail))


def _answer(resp: http.Response, request_part: bytes, limits: XmlLimits) -> http.Response:
    """The provider's answer as an information system gets it: a security server's error (``X-Road-Error``,
    signed) as a SOAP Fault; anything else with its ``Content-Type`` only (PR-MESS 2.2), once its
    ``requestHash`` is checked against our request's SOAP part (not for an answer streamed from a spool).

    Raises:
        InconsistentHeaders: the answer is not SOAP, or its ``requestHash`` is not our request's.
    """
    error = next((v for n, v in resp.headers if n.lower() == rest.H_ERROR), None)
    if error is not None:
        message, detail = error, str(uuid.uuid4())
        try:
            parsed = json.loads(resp.body)
            message, detail = str(parsed.get("message", error)), str(parsed.get("detail", detail))
        except (ValueError, AttributeError):
            pass
        return http.Response(
            status=500, headers=_fault_headers(error), body=soap.render_fault(error, message[:2000], detail[:100])
        )
    headers = [(n, v) for n, v in resp.headers if n.lower() == "content-type"]
    if resp.stream is not None:
        return http.Response(
            status=resp.status, reason=resp.reason, headers=headers, stream=resp.stream, length=resp.length
        )
    try:
        answered = soap.parse_message(headers[0][1] if headers else None, resp.body, limits=limits, what="SOAP answer")
    except RequestError as e:
        raise InconsistentHeaders(f"the provider's answer is not a SOAP message: {e.message}") from e
    soap.check_request_hash(request_part, answered)
    return http.Response(status=resp.status, reason=resp.reason, headers=headers, body=resp.body)


async def _send(
    request: http.Request,
    ctx: ProxyContext,
    ids: list[tuple[ClientId, ServiceId]],
    content_type: str,
    body: bytes,
    account: BodyAccount,
    relay: Relay,
    *,
    soap_action: str | None = None,
) -> tuple[http.Response, bytes]:
    # (1) the SOAP part, parsed safely; X-Road's header fields
    message = soap.parse_message(content_type, body, limits=_limits(ctx))
    if message.body_element is None:
        raise InvalidSoap("a SOAP request cannot be a Fault")
    header = soap.parse_header(message)
    ids.append((header.client, header.service))
    observe.identified(client=header.client, service=header.service, message_id=header.message_id)
    party = header.represented_party
    h = rest.XRoadRequestHeaders(
        client=header.client,
        message_id=header.message_id,
        message_id_generated=False,
        user_id=header.user_id,
        issue=header.issue,
        security_server=header.security_server,
        represented_party=None if party is None else rest.RepresentedParty(party_class=party[0], party_code=party[1]),
    )
    # (2) the r1 exchange, with the SOAP message's own signed headers
    pairs = [("Content-Type", content_type)]
    if soap_action is not None:
        pairs.append(("SOAPAction", soap_action))
    extra = [(soap.H_PROTOCOL_VERSION, header.protocol_version)]
    if header.service_version is not None:
        extra.append((soap.H_SERVICE_VERSION, header.service_version))
    structlog.contextvars.bind_contextvars(message_id=h.message_id, client=str(h.client), service=str(header.service))
    try:
        resp = await relay(request, ctx, h, _target(header.service), pairs, body, account, extra_xroad=tuple(extra))
        return resp, message.soap_part
    finally:
        structlog.contextvars.unbind_contextvars("message_id", "client", "service")


async def handle_soap(
    request: http.Request,
    ctx: ProxyContext,
    ids: list[tuple[ClientId, ServiceId]],
    *,
    relay: Relay,
) -> http.Response:
    """A SOAP message from an information system (``POST``, not r1); every error a SOAP Fault."""
    try:
        content_type = request.header("Content-Type") or ""
        with ctx.bodies.account() as account:
            body = await request.body(hold=account)  # bounded by max_body_bytes (the port's limits)
            resp, part = await _send(
                request, ctx, ids, content_type, body, account, relay, soap_action=request.header("SOAPAction")
            )
        # (3) the answer
        return _answer(resp, part, _limits(ctx))
    except Exception as e:
        return fault_response(e)


_WSDL_PARAMS = ("xRoadInstance", "memberClass", "memberCode", "subsystemCode", "serviceCode")


def wsdl_request(query: str | None, client_header: str | None) -> tuple[ClientId, ServiceId, str | None]:
    """The client, the service and its version that ``GET /wsdl?..`` asks for.

    Raises:
        InvalidRequest: a parameter is missing or repeated, or no client is named.
        BadIdentifier: a part holds a forbidden character.
    """
    params = parse_qs(query or "", keep_blank_values=True)
    values: dict[str, str] = {}
    for name in (*_WSDL_PARAMS, "version", "client"):
        got = params.get(name, [])
        if len(got) > 1:
            raise InvalidRequest(f"GET /wsdl takes one {name} parameter, not {len(got)}")
        if got:
            values[name] = got[0]
    missing = [n for n in _WSDL_PARAMS if not values.get(n)]
    if missing:
        raise InvalidRequest(f"GET /wsdl needs the parameters {', '.join(_WSDL_PARAMS)}; missing {', '.join(missing)}")
    member = MemberId(
        instance=values["xRoadInstance"], member_class=values["memberClass"], member_code=values["memberCode"]
    )
    service = member.subsystem(values["subsystemCode"]).service(values["serviceCode"])
    raw_client = client_header or values.get("client")
    if not raw_client:
        raise InvalidRequest("GET /wsdl needs the calling client: an X-Road-Client header or a client parameter")
    return parse_client(raw_client, encoded=False), service, values.get("version") or None


async def handle_wsdl(
    request: http.Request,
    ctx: ProxyContext,
    query: str | None,
    ids: list[tuple[ClientId, ServiceId]],
    *,
    relay: Relay,
) -> http.Response:
    """``GET /wsdl?..``: the provider's ``getWsdl`` answer's attachment, the WSDL itself (``text/xml``)."""
    try:
        client, service, version = wsdl_request(query, request.header("X-Road-Client"))
        version_xml = "" if version is None else f"<xrd:serviceVersion>{escape(version)}</xrd:serviceVersion>"
        body = soap.render_request(
            client=client,
            service=service.subsystem.service("getWsdl"),
            message_id=rest.uuid4_text(),
            body=f"<xrd:getWsdl><xrd:serviceCode>{escape(service.service_code)}</xrd:serviceCode>{version_xml}"
            "</xrd:getWsdl>",
        )
        with ctx.bodies.account() as account:
            resp, part = await _send(request, ctx, ids, _XML, body, account, relay)
        answer = _answer(resp, part, _limits(ctx))
        if answer.status != 200 or answer.stream is not None:
            return answer
        content_type = next((v for n, v in answer.headers if n.lower() == "content-type"), None)
        wsdl = soap.wsdl_attachment(content_type, answer.body)
        return http.Response(status=200, headers=[("Content-Type", _XML)], body=wsdl)
    except Exception as e:
        return fault_response(e)


__all__ = ["fault_response", "handle_soap", "handle_wsdl", "wsdl_request"]
