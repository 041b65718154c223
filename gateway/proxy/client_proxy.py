"""The client side of a security server: information systems call it with X-Road's REST protocol r1 (I/O).

Per request, in order (docs/architecture.md section 4):

1. parse the r1 target and the X-Road headers;
2. require a valid global configuration;
3. the client must be hosted here, authenticated as its settings demand (plain HTTP, HTTPS, HTTPS with a
   registered certificate), with fewer than ``max_client_exchanges`` exchanges in progress here;
4. find the provider's security servers in the global configuration (``X-Road-Security-Server`` pins one);
5. read the body (bounded; spooled when over 1 MiB or chunked), give the request a fresh ``X-Road-Request-Id``,
   digest and sign it, stapling our signing certificate and its OCSP response;
6. start logging the request: its record commits while the request travels;
7. send it over pooled mutual TLS, fastest server first, failing over on connection errors;
8. verify the response: signature bound to our request, body digest, echoed ids, request hash;
9. wait until the request's record is durable, log the response durably, then return it.

No answer leaves before the request's record is durable, errors included; if it cannot be written, the answer
is ``LoggingFailed`` whatever else happened (fail closed; docs/messagelog.md section 11).

Metaservices: ``GET /listClients`` and, under ``/r1/.../{listMethods,allowedMethods,getOpenAPI}``, the
provider's answers, which travel like any other service call.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime
from urllib.parse import parse_qs

import structlog

from gateway.errors import (
    CLIENT_PROXY,
    SERVER_PROXY,
    ClientAuthenticationFailed,
    ClientNotRegistered,
    GatewayError,
    InconsistentResponse,
    InvalidRequest,
    InvalidSecurityServer,
    NotConfigured,
    PeerError,
    RelayedFault,
    RequestError,
    TooManyExchanges,
    UnknownMember,
)
from gateway.globalconf.model import GlobalConf, SecurityServer
from gateway.identifiers import ClientId, SecurityServerId, ServiceId, SubsystemId
from gateway.messagelog.record import Kind, LogRecord
from gateway.messagelog.store import Appended
from gateway.protocol import rest, signatures, soap
from gateway.proxy import http, observe, soap_client
from gateway.proxy.common import (
    REST_PREFIX,
    BodyAccount,
    SpillToSpool,
    body_hashes,
    body_sha256,
    header_pairs,
    lean_error_response,
    split_target,
    spools_body,
    unspooled,
)
from gateway.proxy.context import ProxyContext
from gateway.proxy.peers import is_connect_failure, wrap_send_failure
from gateway.proxy.spool import Spool
from gateway.serverconf import ClientInfo
from gateway.transparency.headers import Transparency, fields_of
from gateway.transparency.service import USAGE_SERVICES
from gateway.trust.keys import cert_sha256_hex

log = structlog.get_logger("gateway.proxy.client")

SIDE = CLIENT_PROXY

# Headers the client side never passes on from an information system: X-Road's own (re-emitted after
# validation) and the server-to-server profile's.
_DROP_FROM_CLIENT = rest.SERVER_SET_HEADERS | {
    rest.H_CLIENT, rest.H_ID, rest.H_USER_ID, rest.H_ISSUE, rest.H_SECURITY_SERVER, rest.H_REPRESENTED_PARTY,
}
# Headers of a provider's response that are for this hop only.
_DROP_FROM_RESPONSE = rest.TRANSPORT_HEADERS | {rest.H_CLIENT, rest.H_ID, rest.H_SERVICE, rest.H_REQUEST_ID,
                                                rest.H_REQUEST_HASH}
# The spelling of X-Road's response headers towards information systems, as in PR-REST's examples: HTTP
# header names are case-insensitive, but a system written for X-Road may look for exactly these.
_RESPONSE_NAMES = {
    rest.H_ID: "X-Road-Id", rest.H_CLIENT: "X-Road-Client", rest.H_SERVICE: "X-Road-Service",
    rest.H_REQUEST_ID: "X-Road-Request-Id", rest.H_REQUEST_HASH: "X-Road-Request-Hash", rest.H_ERROR: "X-Road-Error",
}


class RemoteFault(RelayedFault):
    """An error answered by the provider's security server (its ``X-Road-Error``), passed on unchanged.

    Its type comes off the wire already carrying the side that detected it (``Server.ServerProxy.AccessDenied``),
    so :meth:`at_side` names none.
    """

    whose_fault = "the provider's security server"

    def __init__(self, message: str, *, remote_type: str, remote_status: int) -> None:
        # an empty X-Road-Error reads as the provider side's internal error
        super().__init__(message, remote_type=remote_type or GatewayError.type_name(SERVER_PROXY),
                         remote_status=remote_status)

    @property
    def http_status(self) -> int:
        # X-Road's rule (sendErrorResponse) on what the peer sent: 500 for Server.*, else its 4xx (400 if odd)
        if self.remote_type.lower().startswith("server."):
            return 500
        return self.remote_status if 400 <= self.remote_status < 500 else 400


def check_is_auth(
    client: ClientInfo, *, tls: bool, peer_cert_der: bytes | None,
) -> None:
    """X-Road's information-system authentication for the client subsystem (pure).

    ``tls`` tells whether the information system connected over TLS; ``peer_cert_der`` is the certificate it
    presented there (DER), or ``None``. The handler reads both off the connection (:attr:`http.Request.tls`,
    :attr:`http.Request.peer_cert`, read once per connection after the handshake).

    Raises:
        ClientAuthenticationFailed: (``Server.ClientProxy.SslAuthenticationFailed``, HTTP 500) the connection
            does not meet the client's ``is_auth`` setting: ``https`` needs TLS, ``https-cert`` also a
            client certificate whose SHA-256 fingerprint is registered for the client.
    """
    if client.is_auth == "none":
        return
    if not tls:
        raise ClientAuthenticationFailed(f"client {client.id.typed()} must connect over HTTPS")
    if client.is_auth == "https":
        return
    if peer_cert_der is None:
        raise ClientAuthenticationFailed(f"client {client.id.typed()} must present its registered TLS certificate")
    if hashlib.sha256(peer_cert_der).hexdigest() not in client.is_cert_fingerprints:
        raise ClientAuthenticationFailed(
            f"the TLS certificate presented is not registered for client {client.id.typed()}",
        )


def providers(conf: GlobalConf, service: ServiceId, pinned: SecurityServerId | None) -> list[SecurityServer]:
    """The provider's security servers from the global configuration, or the pinned one.

    Raises:
        UnknownMember: (``Server.ClientProxy.UnknownMember``) no such member/subsystem, or no server hosts it.
        InvalidSecurityServer: (``Server.ClientProxy.InvalidSecurityServer``) the pinned server does not host
            the provider.
    """
    provider = service.subsystem
    if not conf.subsystem_exists(provider):
        what = "member" if not conf.member_exists(provider.member) else "subsystem"
        raise UnknownMember(f"{what} of service {service} is not registered in the global configuration")
    servers = list(conf.servers_for_client(provider))
    if not servers:
        raise UnknownMember(f"no security server hosts {provider.typed()}")
    if pinned is not None:
        servers = [s for s in servers if s.id == pinned]
        if not servers:
            raise InvalidSecurityServer(f"security server {pinned} does not host {provider.typed()}")
    return servers


def _xroad_headers(h: rest.XRoadRequestHeaders, service: ServiceId, request_id: str) -> list[tuple[str, str]]:
    out = [
        (rest.H_CLIENT, str(h.client)),
        (rest.H_SERVICE, str(service)),
        (rest.H_ID, h.message_id),
        (rest.H_REQUEST_ID, request_id),
    ]
    if h.user_id is not None:
        out.append((rest.H_USER_ID, h.user_id))
    if h.issue is not None:
        out.append((rest.H_ISSUE, h.issue))
    if h.security_server is not None:
        out.append((rest.H_SECURITY_SERVER, str(h.security_server)))
    if h.represented_party is not None:
        out.append((rest.H_REPRESENTED_PARTY, str(h.represented_party)))
    return out


def _record(
    ctx: ProxyContext, *, kind: Kind, h: rest.XRoadRequestHeaders, service: ServiceId, request_id: str,
    created: int, method: str, target: str, status: int | None, base: bytes, sig_input: str, sig: str,
    cert_der: bytes, ocsp_der: bytes, digest: str, body: bytes, body_logging: bool,
) -> LogRecord:
    return LogRecord(
        origin=ctx.origin, kind=kind,
        side="client", message_id=h.message_id, request_id=request_id, client=h.client, service=service,
        user_id=h.user_id, issue=h.issue, created=datetime.fromtimestamp(created, UTC), method=method,
        path=target, status=status, signature_base=base, signature_input=sig_input, signature=sig,
        signing_cert=cert_der, ocsp_response=ocsp_der, body_digest=digest,
        body=body if body_logging else None,
    )


_FAULT_QUOTE_BYTES = 64 * 1024  # bytes of an unsigned error answer's body read for its message


def _remote_fault(resp: http.ClientResponse, body: bytes, fields: dict[str, str]) -> RemoteFault:
    text = body[:_FAULT_QUOTE_BYTES].decode("utf-8", "replace")
    message = text
    try:
        message = str(json.loads(text).get("message", text))
    except (ValueError, AttributeError):
        pass
    return RemoteFault(message[:2000], remote_type=fields[rest.H_ERROR][:200], remote_status=resp.status)


def build_client_handler(ctx: ProxyContext) -> http.Handler:
    """The client-facing ports' handler for :class:`gateway.proxy.http.HttpServer` (plain HTTP and, on its own
    port, HTTPS with :func:`gateway.proxy.tls.client_facing_context`): ``/r<N>/...`` (any method),
    ``GET /listClients``, ``GET /healthz``; anything else is refused. Every error is answered as X-Road does,
    named as this side's."""

    async def handle(request: http.Request) -> http.Response:
        ex = observe.begin(ctx, "client", request.method)
        ids: list[tuple[ClientId, ServiceId]] = []  # the exchange's (client, service), once parsed
        response = await answer(request, ids, ex)
        observe.exchange_done(ctx, ex, response,
                              labels=observe.client_labels(ctx, *ids[0]) if ids else ("", ""),
                              request_bytes=observe.request_size(request.content_length,
                                                                 request.header("Transfer-Encoding")))
        return response

    async def answer(
        request: http.Request, ids: list[tuple[ClientId, ServiceId]], ex: observe.Exchange,
    ) -> http.Response:
        try:
            path, query = split_target(request.raw_path)
            if REST_PREFIX.match(path) is not None:
                if ctx.not_configured is not None:  # keys not active yet (runtime; docs/operations.md)
                    raise NotConfigured(ctx.not_configured)
                return await handle_rest(request, ctx, ids)
            # SOAP (PR-MESS) only once a request is not r1: the REST path pays nothing for it
            if request.method == "POST" and soap.is_soap_content_type(request.header("Content-Type")):
                if ctx.not_configured is not None:
                    raise NotConfigured(ctx.not_configured)
                return await soap_client.handle_soap(request, ctx, ids, relay=relay)
            if request.method in ("GET", "HEAD"):
                if path == "/listClients":
                    return list_clients(ctx, query, accept=request.header("Accept"))
                if path == "/wsdl":
                    return await soap_client.handle_wsdl(request, ctx, query, ids, relay=relay)
                if path == "/healthz":
                    ex.recorded = False  # a balancer's probe, every few seconds: no record, no log line
                    return health(ctx)
            raise RequestError(
                f"{request.method} {path[:200]} is not an X-Road REST request; use /r1/INSTANCE/CLASS/MEMBER/"
                "SUBSYSTEM/SERVICE[/path]",
            )
        except Exception as e:
            return lean_error_response(e, side=SIDE, method=request.method, raw_path=request.raw_path,
                                       remote=request.remote, accept=request.header("Accept"),
                                       request_id=ex.request_id)

    return handle


async def handle_rest(
    request: http.Request, ctx: ProxyContext, ids: list[tuple[ClientId, ServiceId]],
) -> http.Response:
    now = ctx.clock()
    # (1) parse
    raw_path, raw_query = split_target(request.raw_path)
    target = rest.parse_target(request.method, raw_path, raw_query, max_uri_bytes=ctx.limits.max_uri_bytes)
    pairs = header_pairs(request.raw_headers)
    h = rest.parse_request_headers(pairs, instance=ctx.server_id.instance)
    structlog.contextvars.bind_contextvars(message_id=h.message_id, client=str(h.client),
                                           service=str(target.service))
    ids.append((h.client, target.service))  # for the exchange's metrics
    observe.identified(client=h.client, service=target.service, message_id=h.message_id)
    try:
        # (2) a valid global configuration, and a message log timestamped within its grace period
        conf = ctx.conf()
        ctx.check_timestamping()
        # (3) the client is ours, authenticated as configured, and within its share of the server
        client_info = ctx.snapshot.client(h.client)
        if client_info.status != "registered":
            raise ClientNotRegistered(f"client {h.client.typed()} is {client_info.status} on this security server")
        check_is_auth(client_info, tls=request.tls, peer_cert_der=request.peer_cert)
        with _ClientSlot(ctx, h.client), ctx.bodies.account() as account:
            return await _exchange(request, ctx, now, conf, target, pairs, h, client_info, account)
    finally:
        structlog.contextvars.unbind_contextvars("message_id", "client", "service")


async def relay(
    request: http.Request, ctx: ProxyContext, h: rest.XRoadRequestHeaders, target: rest.RestTarget,
    pairs: list[tuple[str, str]], body: bytes, account: BodyAccount, *, extra_xroad: tuple[tuple[str, str], ...],
) -> http.Response:
    """Steps (2)-(9) for a message whose body is read already and whose X-Road headers came in it (a SOAP
    message, gateway/proxy/soap_client.py): it travels as ``POST`` on its service's r1 target."""
    now = ctx.clock()
    conf = ctx.conf()
    ctx.check_timestamping()
    client_info = ctx.snapshot.client(h.client)
    if client_info.status != "registered":
        raise ClientNotRegistered(f"client {h.client.typed()} is {client_info.status} on this security server")
    check_is_auth(client_info, tls=request.tls, peer_cert_der=request.peer_cert)
    with _ClientSlot(ctx, h.client):
        servers = providers(conf, target.service, h.security_server)
        body_256, body_512 = await body_hashes(body)
        return await _signed_exchange(request, ctx, now, conf, target, pairs, h, client_info, account, servers,
                                      body, None, body_256, body_512, extra_xroad=extra_xroad,
                                      request_target=target.raw_path)


class _ClientSlot:
    """One of the ``max_client_exchanges`` exchanges a client may have in progress at once on this server
    process, held while the exchange runs. Counted only once the client is authenticated, so that nobody can
    use up another client's share by naming it."""

    __slots__ = ("_client", "_running")

    def __init__(self, ctx: ProxyContext, client: ClientId) -> None:
        """Raises: TooManyExchanges: (``Client.TooManyRequests``, HTTP 429) the client's share is in use."""
        running = ctx.client_exchanges
        count = running.get(client, 0)
        if count >= ctx.limits.max_client_exchanges:
            raise TooManyExchanges(
                f"client {client.typed()} already has {count} exchanges in progress on this security server, "
                "the most it may have at once (max_client_exchanges); retry later",
            )
        running[client] = count + 1
        self._running = running
        self._client = client

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: object) -> None:
        left = self._running[self._client] - 1
        if left:
            self._running[self._client] = left
        else:
            del self._running[self._client]


async def _exchange(
    request: http.Request, ctx: ProxyContext, now: datetime, conf: GlobalConf, target: rest.RestTarget,
    pairs: list[tuple[str, str]], h: rest.XRoadRequestHeaders, client_info: ClientInfo, account: BodyAccount,
) -> http.Response:
    # (4) where the service lives; the transparency headers, checked (docs/transparency.md)
    servers = providers(conf, target.service, h.security_server)
    usage: Transparency | None = None
    tfields = fields_of(pairs)
    if tfields and ctx.transparency is not None:
        usage = ctx.transparency.parse(tfields, client=h.client, conf=conf, now=now)
    # (5) body, ids, digest, signature. A body declared at most the spool's memory threshold is read whole
    #     (the hot path); a larger or chunked one is spooled as it arrives, hashed on the way (docs/performance.md
    #     section 9). A large or chunked response is spooled either way (_send).
    spool: Spool | None = None
    body = b""
    if spools_body(request):
        spool = Spool(directory=ctx.spool_dir, max_bytes=ctx.limits.max_body_bytes, sha512=True,
                      what="request body", hold=account)
    try:
        if spool is None:
            body = await request.body(hold=account)  # bounded by max_body_bytes (the port's limits)
            # X-Road's request hash takes SHA-512 of the body (PR-REST 4.3); the Content-Digest is SHA-256
            # (RFC 9530)
            body_256, body_512 = await body_hashes(body)
        else:
            await spool.write_from(request.stream())  # bounded by max_body_bytes, the port's and the spool's
            body_256, body_512 = spool.sha256, (spool.sha512 if spool.size else None)
        return await _signed_exchange(request, ctx, now, conf, target, pairs, h, client_info, account, servers,
                                      body, spool, body_256, body_512, usage, tfields)
    finally:
        if spool is not None:
            spool.close()


async def _signed_exchange(
    request: http.Request, ctx: ProxyContext, now: datetime, conf: GlobalConf, target: rest.RestTarget,
    pairs: list[tuple[str, str]], h: rest.XRoadRequestHeaders, client_info: ClientInfo, account: BodyAccount,
    servers: list[SecurityServer], body: bytes, spool: Spool | None, body_256: bytes, body_512: bytes | None,
    usage: Transparency | None = None, tfields: dict[str, str] | None = None,
    *, extra_xroad: tuple[tuple[str, str], ...] = (), request_target: str | None = None,
) -> http.Response:
    # extra_xroad, request_target: a SOAP message's own signed headers and the r1 target it travels on
    # (gateway/proxy/soap_client.py)
    request_id = _new_request_id()
    observe.assigned(request_id)  # error answers carry it from here on
    xroad = _xroad_headers(h, target.service, request_id)
    xroad.extend(extra_xroad)
    out_headers = rest.end_to_end_headers(pairs, also_skip=_DROP_FROM_CLIENT) + xroad
    header_part = rest.request_header_part(target.method, target.raw_path, target.raw_query, out_headers)
    expected_hash = rest.request_hash(header_part, body_512)
    digest = signatures.content_digest_header(body_256)
    created = int(now.timestamp())
    own_ocsp = await ctx.own_ocsp(conf)
    covered = {name: value for name, value in xroad}
    covered[signatures.H_CONTENT_DIGEST] = digest
    if tfields:  # the purpose, basis and embargo are signed; the subjects are not (signatures.UNSIGNED_XROAD)
        covered.update((n, v) for n, v in tfields.items() if n not in signatures.UNSIGNED_XROAD)
    signed = await signatures.sign_request_async(
        method=target.method, path=target.raw_path, query=target.raw_query, headers=covered,
        signer=ctx.signer, created=created, ocsp=own_ocsp,
    )
    send_headers = [*out_headers, (signatures.H_CONTENT_DIGEST, digest), *signed.headers.items()]
    if request_target is None:
        request_target = request.raw_path  # path and query as received, which target holds split
    # (6) log the request: its record commits while the request travels, and every answer waits for it
    #     (docs/messagelog.md section 11); a spooled body is stored apart, read back from the spool
    # findUsage and its answer name a subject and its salts: never in the log (docs/transparency.md section 4)
    body_logging = ctx.body_logging and client_info.body_logging and target.service.service_code not in USAGE_SERVICES
    record = _record(
        ctx, kind="request", h=h, service=target.service, request_id=request_id, created=created,
        method=target.method, target=request_target, status=None, base=signed.signature_base,
        sig_input=signed.headers[signatures.H_SIGNATURE_INPUT], sig=signed.headers[signatures.H_SIGNATURE],
        cert_der=ctx.sign_cert_der, ocsp_der=own_ocsp, digest=digest, body=body,
        body_logging=body_logging and spool is None,
    )
    if spool is not None and body_logging:
        logged = ctx.messagelog.start_body_apart(record, spool.chunks())
    else:
        logged = ctx.messagelog.start(record)
    try:
        # One turn of the loop before the send: the writer takes the record now, and the work so far and the
        # send's are two callbacks rather than one of over a millisecond (docs/messagelog.md section 11).
        await asyncio.sleep(0)
        return await _send(ctx, servers, target, request_target, send_headers, body, spool, h, request_id,
                           expected_hash, signed, client_info, account, logged,
                           None if usage is None else (usage, own_ocsp))
    except Exception:
        # Any error answer waits for the request's record too; if that write failed, its error is the answer
        # (raised from here, with the exchange's own error as its context).
        await logged
        raise
    finally:
        if spool is not None and not logged.done():
            # the spool is closed when this returns: a record still reading its body is waited for first
            await asyncio.wait([logged])


async def _send(
    ctx: ProxyContext, servers: list[SecurityServer], target: rest.RestTarget, request_target: str,
    send_headers: list[tuple[str, str]], body: bytes, spool: Spool | None, h: rest.XRoadRequestHeaders,
    request_id: str, expected_hash: str, signed: signatures.SignedMessage, client_info: ClientInfo,
    account: BodyAccount, logged: asyncio.Future[Appended], usage: tuple[Transparency, bytes] | None = None,
) -> http.Response:
    # (7) send, fastest first, failing over while nothing has reached a server (but not once the request's
    #     record has failed: that is the answer now)
    ordered = await ctx.peers.order(servers)
    last_error: BaseException | None = None
    for server in ordered:
        if logged.done():
            logged.result()
        sink: Spool | None = None
        # the provider's response: spooled when it is large or chunked (a small one read whole, or read back
        # whole from its spool), whichever way the request went
        spill = SpillToSpool(ctx.spool_dir, max_bytes=ctx.limits.max_body_bytes, what="the provider's response",
                             hold=account)
        try:
            observe.sent(server.id)
            if spool is None:
                resp = await ctx.peers.request(server, target.method, request_target, send_headers, body,
                                               account=account, spill=spill)
                sink = spill.spool
            else:
                sink = Spool(directory=ctx.spool_dir, max_bytes=ctx.limits.max_body_bytes,
                             what="the provider's response", hold=account)
                resp = await ctx.peers.request_streamed(server, target.method, request_target, send_headers,
                                                        spool.chunks, length=spool.size, sink=sink)
            sink, whole = await unspooled(sink)
            if whole is not None:
                resp.body = whole
            observe.received()
        except Exception as e:
            spill.close()
            if sink is not None:
                sink.close()
            last_error = e
            if is_connect_failure(e):
                ctx.peers.forget_winner(server.id)
                log.warning("provider server unreachable, trying the next", server=str(server.id),
                            error=str(e)[:200])
                continue
            raise wrap_send_failure(e, server.id) from e
        try:
            return await _response(ctx, resp, sink, h, target, request_id, expected_hash, signed, client_info,
                                   request_target, logged, usage)
        except BaseException:
            if sink is not None:
                sink.close()
            raise
    assert last_error is not None
    if isinstance(last_error, GatewayError):
        raise last_error
    raise PeerError(
        f"no security server of {target.service.subsystem} could be reached: {last_error or type(last_error).__name__}",
    ) from last_error


def _new_request_id() -> str:
    return rest.uuid4_text()


async def _response(
    ctx: ProxyContext, resp: http.ClientResponse, sink: Spool | None, h: rest.XRoadRequestHeaders,
    target: rest.RestTarget, request_id: str, expected_hash: str, signed: signatures.SignedMessage,
    client_info: ClientInfo, request_target: str, logged: asyncio.Future[Appended],
    usage: tuple[Transparency, bytes] | None = None,
) -> http.Response:
    """Verify, log and answer the provider's response: its body is ``resp.body``, or in ``sink`` when it was
    spooled (the answer then streams from it, and closes it once sent)."""
    resp_pairs = header_pairs(resp.raw_headers)
    fields = signatures.fields_from_pairs(resp_pairs)
    # An error from the provider's server that it could not sign (it could not verify our request).
    if signatures.H_SIGNATURE not in fields and rest.H_ERROR in fields:
        raise _remote_fault(resp, await _head_of(sink) if sink is not None else resp.body, fields)
    # (8) verify: body digest, signature bound to our request, echoed ids, request hash (the body was read
    #     whole by the peer pool, or into the spool, bounded by max_body_bytes and held on the exchange's account)
    body = resp.body
    conf = ctx.conf()
    now = ctx.clock()
    verified = signatures.verify_response(
        status=resp.status, headers=fields, request_signature=signed.signature, now=now,
        max_skew_seconds=ctx.limits.max_clock_skew_seconds,
        resolve_cert=ctx.cert_resolver(conf, target.service.member),
    )
    signatures.verify_content_digest(fields.get(signatures.H_CONTENT_DIGEST),
                                     sink.sha256 if sink is not None else await body_sha256(body))
    expected = {
        rest.H_ID: h.message_id, rest.H_REQUEST_ID: request_id, rest.H_CLIENT: str(h.client),
        rest.H_SERVICE: str(target.service), rest.H_REQUEST_HASH: expected_hash,
    }
    for name, value in expected.items():
        if fields.get(name) != value:
            raise InconsistentResponse(
                f"response header {name} is {fields.get(name, '(missing)')[:120]!r}, expected {value!r}",
            )
    # (9) the request's record is durable (it committed while the request travelled; a failed write is the
    #     answer), then the response's: only then does the response leave
    await logged
    # findUsage and its answer name a subject and its salts: never in the log (docs/transparency.md section 4)
    body_logging = ctx.body_logging and client_info.body_logging and target.service.service_code not in USAGE_SERVICES
    record = _record(
        ctx, kind="response", h=h, service=target.service, request_id=request_id, created=verified.created,
        method=target.method, target=request_target, status=resp.status, base=verified.signature_base,
        sig_input=fields[signatures.H_SIGNATURE_INPUT], sig=fields[signatures.H_SIGNATURE],
        cert_der=verified.cert_der, ocsp_der=verified.ocsp_der, digest=fields[signatures.H_CONTENT_DIGEST],
        body=body, body_logging=body_logging and sink is None,
    )
    entry = None
    if usage is not None and ctx.transparency is not None:
        # the access record, committed with the response's (docs/transparency.md section 3)
        entry = ctx.transparency.entry(
            origin=ctx.origin, side="client", message_id=h.message_id, request_id=request_id, client=h.client,
            service=target.service, method=target.method, path=target.service_path, status=resp.status,
            created=now, request_hash=expected_hash, t=usage[0], user_id=h.user_id,
            signing_cert=ctx.sign_cert_der, ocsp_response=usage[1])
    usage_logged = None
    usage_index_rows = None if entry is None or ctx.transparency is None else ctx.transparency.index_rows(entry)
    if sink is not None and body_logging:
        await ctx.messagelog.append_body_apart(record, sink.chunks())
    elif entry is None:
        await ctx.messagelog.append(record)
    else:  # both queued in this turn of the loop: one group commit
        response_logged = ctx.messagelog.start(record)
        usage_logged = ctx.messagelog.start(entry.record, index_rows=usage_index_rows)
        await response_logged
    if entry is not None:  # its blind-index rows commit in its transaction
        await (usage_logged or ctx.messagelog.append(entry.record, index_rows=usage_index_rows))
    names = _RESPONSE_NAMES
    out = [(names.get(name.lower(), name), value)
           for name, value in rest.end_to_end_headers(resp_pairs, also_skip=_DROP_FROM_RESPONSE)]
    out.extend((names[name], value) for name, value in expected.items())
    if sink is not None:
        return http.Response(status=resp.status, reason=resp.reason, headers=out,
                             stream=sink.chunks_then_close(), length=sink.size)
    return http.Response(status=resp.status, reason=resp.reason, headers=out, body=body)


async def _head_of(spool: Spool) -> bytes:
    """The first bytes of a spooled body (what an error message may quote of it)."""
    async for chunk in spool.chunks(_FAULT_QUOTE_BYTES):
        return chunk
    return b""


def list_clients(ctx: ProxyContext, query: str | None, *, accept: str | None) -> http.Response:
    """``GET /listClients[?xRoadInstance=..]``: the members and subsystems of the federation (PR-MREST)."""
    conf = ctx.conf()
    instances = parse_qs(query or "", keep_blank_values=True).get("xRoadInstance")
    instance = instances[0] if instances else None
    if instance is not None and instance != conf.instance:
        raise InvalidRequest(f"unknown X-Road instance {instance[:40]!r}")
    clients: list[tuple[ClientId, str | None]] = []
    for member in conf.members:
        clients.append((member.id, member.name))
        for code in member.subsystems:
            sub: SubsystemId = member.id.subsystem(code)
            clients.append((sub, member.name))
    content_type, body = rest.render_list_clients(clients, accept=accept)
    return http.Response(status=200, headers=[("Content-Type", content_type)], body=body)


def health(ctx: ProxyContext) -> http.Response:
    """``GET /healthz``: 200 with a valid global configuration, else 503 (``degraded``)."""
    status = ctx.globalconf.status().to_dict()
    ok = ctx.globalconf.current is not None and not status.get("expired", True)
    body = json.dumps({"status": "ok" if ok else "degraded", "server": ctx.origin, "globalconf": status})
    return http.Response(status=200 if ok else 503, headers=[("Content-Type", "application/json; charset=utf-8")],
                         body=body.encode())


__all__ = ["build_client_handler", "cert_sha256_hex", "check_is_auth"]
