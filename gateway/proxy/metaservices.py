"""Metaservices answered by the provider's security server itself (PR-MREST): ``listMethods``,
``allowedMethods`` and ``getOpenAPI`` (I/O for ``getOpenAPI``, which fetches the service's description).

They travel like any other service call (signed, access-checked peer, logged on both sides); only the answer
comes from serverconf instead of a service. ``listMethods`` is open to every client, ``allowedMethods`` lists
what the calling client may call, ``getOpenAPI?serviceCode=X`` requires access to at least one endpoint of X.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import aiohttp

from gateway.errors import AccessDenied, RequestError, ServiceFailed, ServiceMissingUrl
from gateway.globalconf.model import GlobalConf
from gateway.identifiers import ClientId
from gateway.protocol import rest
from gateway.proxy.context import ProxyContext
from gateway.serverconf import ServiceInfo
from gateway.serverconf.access import Endpoint

META_SERVICES = frozenset({"listMethods", "allowedMethods", "getOpenAPI"})
MAX_OPENAPI_BYTES = 4 * 2**20  # bytes; an OpenAPI description larger than this is refused

Answer = tuple[int, str | None, list[tuple[str, str]], bytes]


def _service_type(service: ServiceInfo) -> Literal["OPENAPI", "REST", "WSDL"]:
    # A description URL ending in "wsdl" (?wsdl, .wsdl) describes a SOAP service (docs/soap.md section 4)
    if not service.openapi_url:
        return "REST"
    return "WSDL" if service.openapi_url.lower().endswith("wsdl") else "OPENAPI"


def _entry(service: ServiceInfo, endpoints: tuple[rest.Endpoint, ...]) -> rest.ServiceEntry:
    return rest.ServiceEntry(service=service.id, service_type=_service_type(service), endpoints=endpoints)


def _rest_endpoints(endpoints: Iterable[Endpoint]) -> tuple[rest.Endpoint, ...]:
    return tuple(rest.Endpoint(method=e.method, path=e.path) for e in endpoints)


async def answer(
    ctx: ProxyContext, conf: GlobalConf, client: ClientId, target: rest.RestTarget, query: str | None,
) -> Answer:
    """The metaservice's response as ``(status, reason, headers, body)``.

    Raises:
        RequestError: unknown service, access denied, missing ``serviceCode``.
        ServiceFailed: the OpenAPI description cannot be fetched.
    """
    code = target.service.service_code
    provider = target.service.subsystem
    snapshot = ctx.snapshot
    if target.method != "GET":
        raise RequestError(f"metaservice {code} answers GET only")
    if code == "getOpenAPI":
        return await _openapi(ctx, conf, client, target, query)
    groups = ctx.groups(conf)
    entries = []
    for service in snapshot.services_of(provider):
        if code == "listMethods":
            entries.append(_entry(service, _rest_endpoints(service.endpoints)))
        else:
            allowed = snapshot.policy.allowed_endpoints(client, service.id, groups=groups)
            if allowed:
                entries.append(_entry(service, _rest_endpoints(allowed)))
    content_type, body = rest.render_methods(entries)
    return 200, "OK", [("Content-Type", content_type)], body


async def _openapi(
    ctx: ProxyContext, conf: GlobalConf, client: ClientId, target: rest.RestTarget, query: str | None,
) -> Answer:
    from urllib.parse import parse_qs

    params = parse_qs(query or "", keep_blank_values=True)
    codes = params.get("serviceCode", [])
    if len(codes) != 1 or not codes[0]:
        raise RequestError("getOpenAPI needs exactly one serviceCode query parameter")
    service_id = target.service.subsystem.service(codes[0])
    service = ctx.snapshot.service(service_id)
    if not ctx.snapshot.policy.allowed_endpoints(client, service_id, groups=ctx.groups(conf)):
        raise AccessDenied(f"client {client.typed()} may not call service {service_id}")
    if not service.openapi_url:
        raise ServiceMissingUrl(f"service {service_id} has no OpenAPI description")
    try:
        async with ctx.service_session.get(
            service.openapi_url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=service.timeout_seconds),
        ) as resp:
            body = await resp.content.read(MAX_OPENAPI_BYTES + 1)
            if resp.status != 200 or len(body) > MAX_OPENAPI_BYTES:
                raise ServiceFailed(f"the OpenAPI description of {service_id} cannot be fetched (HTTP {resp.status})")
            content_type = resp.headers.get("Content-Type", "application/json")
    except (aiohttp.ClientError, TimeoutError) as e:
        raise ServiceFailed(
            f"the OpenAPI description of {service_id} cannot be fetched: {e or type(e).__name__}") from e
    return 200, "OK", [("Content-Type", content_type)], body
