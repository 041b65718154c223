"""The server side's SOAP part: a SOAP message (PR-MESS) that a peer security server relays (I/O).

A request between security servers is SOAP when its signed ``X-Road-Protocol-Version`` header is present
(docs/soap.md). server_proxy has then verified the peer, the signature, the replay window and the body's digest,
and logged the request; this module answers it, in order:

1. parse the SOAP part (hardened parser) and its X-Road header; the signed r1 headers must name the same client,
   service and message id as the SOAP header does;
2. a metaservice (``listMethods``, ``allowedMethods``, ``getWsdl``) is answered here (PR-META 3, 4);
3. otherwise the client must be allowed to call the service code (any version: PR-MESS 3.1);
4. call the service at its registered URL with the body as received (Content-Type and SOAPAction kept);
5. the service's answer must be a SOAP message whose header echoes the request's (PR-MESS 2.2); a Fault passes
   through as the service's answer. Only its Content-Type is kept;
6. the answer's header gets ``requestHash``: SHA-512 of the request's SOAP part (PR-MESS 2.2), spliced into the
   service's bytes (a ``requestHash`` the service sent is replaced); the signature covers the answer as sent.

What this raises, server_proxy answers signed (``X-Road-Error``), and the client side turns into a SOAP Fault.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp

from gateway.errors import (
    AccessDenied,
    MalformedSignature,
    RequestError,
    ServiceFailed,
    ServiceMissingUrl,
)
from gateway.globalconf.model import GlobalConf
from gateway.identifiers import ClientId
from gateway.protocol import rest, soap
from gateway.proxy.common import BodyAccount
from gateway.proxy.context import ProxyContext
from gateway.proxy.spool import Spool
from gateway.xmlsafe import XmlLimits

Answer = tuple[int, str | None, list[tuple[str, str]], bytes]
CallService = Callable[..., Awaitable[tuple[int, str | None, list[tuple[str, str]], bytes, Spool | None]]]
MAX_WSDL_BYTES = 4 * 2**20  # bytes; a WSDL larger than this is refused


async def _whole(spool: Spool) -> bytes:
    return b"".join([chunk async for chunk in spool.chunks()])


def _content_type(pairs: list[tuple[str, str]]) -> str | None:
    return next((v for n, v in pairs if n.lower() == "content-type"), None)


async def answer(
    ctx: ProxyContext,
    conf: GlobalConf,
    client: ClientId,
    target: rest.RestTarget,
    fields: dict[str, str],
    pairs: list[tuple[str, str]],
    body: bytes | Spool,
    account: BodyAccount,
    *,
    call: CallService,
) -> Answer:
    """The answer to a SOAP request as ``(status, reason, headers, body)``.

    Raises:
        RequestError: the SOAP message is malformed (``Client.InvalidXml``, ``Client.InvalidSoap``,
            ``Client.MissingHeaderField``...), or access is denied, or the service is unknown.
        TrustError: ``MalformedSignature``, the signed headers do not name what the SOAP header names.
        PeerError: the service failed, or its answer is not SOAP or does not echo the request's header.
    """
    limits = XmlLimits(max_bytes=ctx.limits.max_body_bytes)
    # (1) the SOAP message and its header, against the signed headers
    data = body if isinstance(body, bytes) else await _whole(body)
    request = soap.parse_message(_content_type(pairs), data, limits=limits)
    header = soap.parse_header(request)
    if (
        header.client != client
        or header.service != target.service
        or header.message_id != fields.get(rest.H_ID)
        or header.protocol_version != fields.get(soap.H_PROTOCOL_VERSION)
        or header.service_version != fields.get(soap.H_SERVICE_VERSION)
    ):
        raise MalformedSignature("the signed X-Road headers do not name what the SOAP message's header names")
    # (2) metaservices
    code = target.service.service_code
    if code in soap.META_SERVICES:
        status, reason, headers, answer_body = await _meta(ctx, conf, client, target, request, code)
        answered = soap.parse_message(_content_type(headers), answer_body, limits=limits)
        return (
            status,
            reason,
            headers,
            soap.with_request_hash(answer_body, answered, soap.request_hash(request.soap_part)),
        )
    # (3) access: the service code, whatever its version (PR-MESS 3.1)
    service = ctx.snapshot.service(target.service)
    try:
        ctx.snapshot.policy.check(client, target.service, "POST", "", groups=ctx.groups(conf))
    except AccessDenied as e:  # named without r1's method and path, which a SOAP caller never sent
        raise AccessDenied(f"client {client.typed()} may not call service {target.service}") from e
    # (4) the service
    status, reason, resp_pairs, resp_body, spooled = await call(
        ctx,
        service.url,
        service.timeout_seconds,
        target,
        pairs,
        body,
        account,
    )
    if spooled is not None:
        try:
            resp_body = await _whole(spooled)
        finally:
            spooled.close()
    # (5) a SOAP answer that echoes the request's header
    content_type = _content_type(resp_pairs)
    try:
        response = soap.parse_message(content_type, resp_body, limits=limits, what="service's SOAP response")
    except RequestError as e:
        raise ServiceFailed(f"the service's answer (HTTP {status}) is not a SOAP message: {e.message}") from e
    soap.check_echo(request, response)
    # (6) PR-MESS 2.2: the provider's server adds the request's hash to the answer's header
    resp_body = soap.with_request_hash(resp_body, response, soap.request_hash(request.soap_part))
    return status, reason, [("Content-Type", content_type or "text/xml")], resp_body


async def _meta(
    ctx: ProxyContext,
    conf: GlobalConf,
    client: ClientId,
    target: rest.RestTarget,
    request: soap.SoapMessage,
    code: str,
) -> Answer:
    provider = target.service.subsystem
    snapshot = ctx.snapshot
    groups = ctx.groups(conf)
    if code == "getWsdl":
        wanted, version = soap.get_wsdl_params(request)
        service_id = provider.service(wanted)
        service = snapshot.service(service_id)
        if not snapshot.policy.allowed_endpoints(client, service_id, groups=groups):
            raise AccessDenied(f"client {client.typed()} may not call service {service_id}")
        if not service.openapi_url:
            raise ServiceMissingUrl(f"service {service_id} has no registered WSDL URL")
        wsdl = await _fetch(ctx, service.openapi_url, service.timeout_seconds, str(service_id))
        content_type, body = soap.render_wsdl_response(request, wanted, version, soap.hide_endpoints(wsdl))
        return 200, "OK", [("Content-Type", content_type)], body
    services = [
        s.id
        for s in snapshot.services_of(provider)
        if s.id.service_code not in soap.META_SERVICES
        and (code == "listMethods" or snapshot.policy.allowed_endpoints(client, s.id, groups=groups))
    ]
    return 200, "OK", [("Content-Type", "text/xml; charset=utf-8")], soap.render_methods(request, code, services)


async def _fetch(ctx: ProxyContext, url: str, timeout_seconds: float, what: str) -> bytes:
    try:
        async with ctx.service_session.get(
            url,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
        ) as resp:
            body = await resp.content.read(MAX_WSDL_BYTES + 1)
            if resp.status != 200 or len(body) > MAX_WSDL_BYTES:
                raise ServiceFailed(
                    f"the WSDL of {what} cannot be fetched (HTTP {resp.status}, at most {MAX_WSDL_BYTES} bytes)"
                )
    except (aiohttp.ClientError, TimeoutError) as e:
        raise ServiceFailed(f"the WSDL of {what} cannot be fetched: {e or type(e).__name__}") from e
    return body


__all__ = ["answer"]
