"""The server side of a security server: peer security servers call it over mutual TLS (I/O).

Per request, in order (docs/architecture.md section 4):

1. the peer: its TLS certificate is registered for a security server in the global configuration, chains
   to a trusted CA and is good according to OCSP (checked per request from a per-certificate cache);
2. parse the r1 target and the client; the calling server must host that client;
3. verify the signature (the client member's stapled signing certificate and OCSP response), refuse a
   ``created`` outside the allowed skew and a request id already seen (replay);
4. read the body (bounded; spooled when over 1 MiB or chunked) and check it against the signed ``Content-Digest``;
5. check that we can sign the answer (our signing certificate is good according to a fresh OCSP response),
   then log the request durably (fail closed);
6. the service must exist here and the client must be allowed to call this endpoint (default deny);
7. call the service at the normalised path that the access rules saw (redirects passed back, never followed);
8. sign the response (bound to the request's signature) with the request hash and the service's own
   ``X-Road-*`` headers, log it, return it.

Once the request is logged (step 5), every answer, errors included, is signed and logged, so both parties'
logs show what happened. An error before the request could be verified is answered unsigned with ``X-Road-Error``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache

import structlog

from gateway.errors import (
    SERVER_PROXY,
    GatewayError,
    MalformedSignature,
    MissingSignature,
    NotConfigured,
    PayloadTooLarge,
    PeerError,
    RequestError,
    ServiceFailed,
    SslAuthenticationFailed,
    UnknownService,
)
from gateway.identifiers import ClientId, member_of, parse_client
from gateway.messagelog.record import Kind, LogRecord
from gateway.protocol import rest, signatures, soap
from gateway.proxy import http, metaservices, observe, soap_server
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
from gateway.proxy.metaservices import META_SERVICES
from gateway.proxy.spool import Spool
from gateway.transparency import declared
from gateway.transparency import service as transparency
from gateway.transparency.headers import Transparency
from gateway.transparency.records import UsageEntry
from gateway.transparency.service import USAGE_SERVICES
from gateway.witness.service import PREFIX as WITNESS_PREFIX

log = structlog.get_logger("gateway.proxy.server")

SIDE = SERVER_PROXY

# What a service gets: end-to-end headers and X-Road's headers, never the server-to-server profile's.
_DROP_TO_SERVICE = rest.TRANSPORT_HEADERS
# What a service may not set on its response: the security server's own headers.
_DROP_FROM_SERVICE = rest.SERVER_SET_HEADERS | {rest.H_CLIENT, rest.H_ID}
# A peer sends the same few X-Road-Client values again and again; errors are not cached.
_parse_client = lru_cache(maxsize=4096)(parse_client)
WITNESS_PATHS = f"{WITNESS_PREFIX}/"  # served by the witness endpoint when [witness] enabled (docs/witness.md)



def build_server_handler(ctx: ProxyContext) -> http.Handler:
    """The server-to-server port's handler for :class:`gateway.proxy.http.HttpServer`; serve it only with
    :func:`gateway.proxy.tls.peer_server_context`. Every error is answered as X-Road does, named as this side's."""

    async def handle(request: http.Request) -> http.Response:
        witness = ctx.witness  # the witness endpoint, not an exchange (docs/witness.md section 1)
        if witness is not None and request.raw_path.startswith(WITNESS_PATHS):
            reply = await witness.handle(request)
            return http.Response(status=reply.status, headers=reply.headers, body=reply.body)
        ex = observe.begin(ctx, "server", request.method)
        response = await answer(request, ex)
        observe.exchange_done(ctx, ex, response, labels=observe.server_labels(response.headers),
                              request_bytes=observe.request_size(request.content_length,
                                                                 request.header("Transfer-Encoding")))
        return response

    async def answer(request: http.Request, ex: observe.Exchange) -> http.Response:
        try:
            if REST_PREFIX.match(request.raw_path) is None:
                raise RequestError(f"{request.method} {split_target(request.raw_path)[0][:200]} "
                                   "is not an X-Road request")
            if ctx.not_configured is not None:  # keys not active yet (runtime; docs/operations.md)
                raise NotConfigured(ctx.not_configured)
            with ctx.bodies.account() as account:
                spool = None
                if spools_body(request):
                    spool = Spool(directory=ctx.spool_dir, max_bytes=ctx.limits.max_body_bytes, sha512=True,
                                  what="request body", hold=account)
                try:
                    return await _handle(request, ctx, account, spool)
                finally:
                    if spool is not None:
                        spool.close()
        except Exception as e:
            return lean_error_response(e, side=SIDE, method=request.method, raw_path=request.raw_path,
                                       remote=request.remote, accept=request.header("Accept"),
                                       request_id=ex.request_id)

    return handle


async def _handle(
    request: http.Request, ctx: ProxyContext, account: BodyAccount, spool: Spool | None,
) -> http.Response:
    """One exchange; a request body over the spool's threshold (or chunked) comes through ``spool``; a service's
    answer over it (or chunked) is spooled and streamed back (docs/performance.md section 9)."""
    now = ctx.clock()
    # (1) the calling security server (its certificate, read once per connection after the handshake)
    peer_id = await ctx.check_peer(request.peer_cert, expected=None)
    observe.identified(peer_server=peer_id)
    # (2) target, client; the peer must host the client
    raw_path, raw_query = split_target(request.raw_path)
    target = rest.parse_target(request.method, raw_path, raw_query, max_uri_bytes=ctx.limits.max_uri_bytes)
    pairs = header_pairs(request.raw_headers)
    fields = signatures.fields_from_pairs(pairs)
    raw_client = fields.get(rest.H_CLIENT)
    if raw_client is None:
        raise MissingSignature("the request carries no X-Road-Client header")
    client = _parse_client(raw_client)
    observe.identified(client=client, service=target.service)  # as claimed; verified in step (3)
    conf = ctx.conf()
    ctx.check_timestamping()  # our log timestamped within its grace period
    peer = conf.server(peer_id)
    if peer is None or client not in peer.clients:
        raise SslAuthenticationFailed(
            f"security server {peer_id} does not host client {client.typed()} in the global configuration",
        )
    if fields.get(rest.H_SERVICE) != str(target.service):
        raise MalformedSignature("X-Road-Service does not match the request path")
    # (3) signature, time, replay
    verified = signatures.verify_request(
        method=target.method, path=target.raw_path, query=target.raw_query, headers=fields, now=now,
        max_skew_seconds=ctx.limits.max_clock_skew_seconds,
        resolve_cert=ctx.cert_resolver(conf, member_of(client)),
    )
    request_id = fields[rest.H_REQUEST_ID]
    observe.assigned(request_id)  # verified: error answers carry it from here on
    observe.identified(message_id=fields[rest.H_ID])
    ctx.replay.check_and_add(request_id, verified.created, now)
    # (4) body against its digest
    body = b""
    if spool is None:
        body = await request.body(hold=account)  # bounded by max_body_bytes (the server's limits)
        body_256, body_512 = await body_hashes(body)
    else:
        await spool.write_from(request.stream())  # bounded by max_body_bytes, the port's and the spool's
        body_256, body_512 = spool.sha256, (spool.sha512 if spool.size else None)
    signatures.verify_content_digest(fields.get(signatures.H_CONTENT_DIGEST), body_256)
    message_id = fields[rest.H_ID]
    request_target = request.raw_path  # path and query as received, which target holds split
    provider = ctx.snapshot.clients.get(target.service.subsystem)
    body_logging = ctx.body_logging and (provider.body_logging if provider is not None else True)
    if target.service.service_code in USAGE_SERVICES:
        body_logging = False  # a subject identifier and its salts: never in the log (docs/transparency.md section 4)
    user_id = fields.get(rest.H_USER_ID)
    issue = fields.get(rest.H_ISSUE)

    def record(kind: Kind, created: int, status: int | None, base: bytes, sig_input: str, sig: str,
               cert_der: bytes, ocsp_der: bytes, digest: str, data: bytes | None) -> LogRecord:
        return LogRecord(
            origin=ctx.origin, kind=kind,
            side="server", message_id=message_id, request_id=request_id, client=client,
            service=target.service, user_id=user_id, issue=issue, created=datetime.fromtimestamp(created, UTC),
            method=target.method, path=request_target, status=status, signature_base=base,
            signature_input=sig_input, signature=sig, signing_cert=cert_der, ocsp_response=ocsp_der,
            body_digest=digest, body=data if body_logging else None,
        )

    # (5) we must be able to sign the answer (a fresh, good OCSP response for our signing certificate)
    # before anything is logged or reaches the service; then log the verified request
    own_ocsp = await ctx.own_ocsp(conf)
    signer, sign_cert_der = ctx.signer, ctx.sign_cert_der  # the pair own_ocsp answered for (keys may switch)
    # A spooled body is stored apart, read back from the spool; either way the record is durable before the
    # service gets a byte (docs/messagelog.md section 11).
    request_record = record(
        "request", verified.created, None, verified.signature_base, fields[signatures.H_SIGNATURE_INPUT],
        fields[signatures.H_SIGNATURE], verified.cert_der, verified.ocsp_der, fields[signatures.H_CONTENT_DIGEST],
        body if spool is None else None,
    )
    if spool is not None and body_logging:
        await ctx.messagelog.append_body_apart(request_record, spool.chunks())
    else:
        await ctx.messagelog.append(request_record)
    header_part = rest.request_header_part(target.method, target.raw_path, target.raw_query, pairs)
    request_hash = rest.request_hash(header_part, body_512)  # PR-REST 4.3
    # (6)-(7) access, then the service; any refusal from here on is answered signed
    error_type: str | None = None
    answer: Spool | None = None  # the service's answer, when it was spooled
    resp_body = b""
    usage: Transparency | None = None  # docs/transparency.md: the disclosure record's data, when there is one
    try:
        code = target.service.service_code
        if soap.H_PROTOCOL_VERSION in fields:  # a SOAP message (PR-MESS): gateway/proxy/soap_server.py
            status, reason, resp_pairs, resp_body = await soap_server.answer(
                ctx, conf, client, target, fields, pairs, body if spool is None else spool, account,
                call=_call_service,
            )
        elif code in META_SERVICES:
            status, reason, resp_pairs, resp_body = await metaservices.answer(ctx, conf, client, target,
                                                                              target.raw_query)
        elif code in USAGE_SERVICES and ctx.transparency is not None and not target.service_path:
            subsystem = target.service.subsystem
            if subsystem not in ctx.snapshot.clients:
                raise UnknownService(f"{subsystem.typed()} is not a client of this security server")
            status, reason, resp_pairs, resp_body = await transparency.answer(
                ctx.transparency, ctx.messagelog, conf, client, subsystem, code, target.method,
                body if spool is None else b"", ctx.clock(), own_ocsp)
        else:
            service = ctx.snapshot.service(target.service)
            if ctx.transparency is not None:
                usage = ctx.transparency.parse(fields, client=client, conf=conf, now=now)
            ctx.snapshot.policy.check(client, target.service, target.method, target.service_path,
                                      groups=ctx.groups(conf))
            if ctx.transparency is not None and (service.data_subject is not None or service.purpose_required):
                usage = declared.apply(service, usage, target.service_path, target.raw_query,
                                       body if spool is None else None)
            status, reason, resp_pairs, resp_body, answer = await _call_service(
                ctx, service.url, service.timeout_seconds, target, pairs, body if spool is None else spool, account,
            )
    except GatewayError as e:
        if answer is not None:
            answer.close()
            answer = None
        # Answered (and logged, and recorded signed in the message log) here rather than by the middleware:
        # name our side first, as the middleware would, so that every record carries the wire's type.
        error_type = e.at_side(SIDE).xroad_type
        detail = str(uuid.uuid4())
        status, headers, resp_body = rest.render_error(e, accept=request.header("Accept"), detail=detail)
        reason = None
        resp_pairs = list(headers)
        log.warning("request refused", side=f"Server.{SIDE}", detail=detail, type=e.xroad_type, error=e.message,
                    message_id=message_id, request_id=request_id, client=str(client), service=str(target.service))
    # (8) sign, log, answer
    try:
        entry = None
        if usage is not None and ctx.transparency is not None:
            # the disclosure record, committed with the response's (docs/transparency.md section 3)
            entry = ctx.transparency.entry(
                origin=ctx.origin, side="server", message_id=message_id, request_id=request_id, client=client,
                service=target.service, method=target.method, path=target.service_path, status=status,
                created=ctx.clock(), request_hash=request_hash, t=usage, user_id=user_id,
                signing_cert=sign_cert_der, ocsp_response=own_ocsp)
        return await _answer(ctx, request, client, target, message_id, request_id, request_hash, verified,
                             signer, sign_cert_der, own_ocsp, record, status, reason, resp_pairs, resp_body,
                             answer, error_type, body_logging, entry)
    except BaseException:
        if answer is not None:
            answer.close()
        raise


async def _answer(
    ctx: ProxyContext, request: http.Request, client: ClientId, target: rest.RestTarget, message_id: str,
    request_id: str, request_hash: str, verified: signatures.VerifiedSignature, signer: signatures.Signer,
    sign_cert_der: bytes, own_ocsp: bytes, record: Callable[..., LogRecord], status: int, reason: str | None,
    resp_pairs: list[tuple[str, str]], resp_body: bytes, answer: Spool | None, error_type: str | None,
    body_logging: bool, usage: UsageEntry | None = None,
) -> http.Response:
    """Step (8): sign the answer (its body ``resp_body``, or in ``answer`` when spooled), log it, return it (a
    spooled one streamed from ``answer``, which the stream closes once sent)."""
    if answer is not None:
        digest = answer.content_digest
    else:
        digest = signatures.content_digest_header(await body_sha256(resp_body))
    xroad = {
        rest.H_CLIENT: str(client), rest.H_SERVICE: str(target.service), rest.H_ID: message_id,
        rest.H_REQUEST_ID: request_id, rest.H_REQUEST_HASH: request_hash, signatures.H_CONTENT_DIGEST: digest,
    }
    if error_type is not None:
        # Our own refusal carries X-Road-Error (PR-REST 4.6), signed like every other x-road-* header;
        # end_to_end_headers below drops it from resp_pairs, as it drops one a service might set.
        xroad[rest.H_ERROR] = error_type
    passed = rest.end_to_end_headers(resp_pairs, also_skip=_DROP_FROM_SERVICE)
    for name, value in passed:
        # A service's own X-Road-* headers (X-Road-UserId echoed, X-Road-Custom...) travel signed: the
        # profile covers every x-road-* header present (docs/protocol.md 2.3). Repeated ones are combined
        # with ", " as the verifier combines them (RFC 9421 2.1).
        lname = name.lower()
        if lname.startswith("x-road-"):
            xroad[lname] = f"{xroad[lname]}, {value}" if lname in xroad else value
    created = int(ctx.clock().timestamp())
    signed = await signatures.sign_response_async(
        status=status, headers=xroad, request_signature=verified.signature, signer=signer,
        created=created, ocsp=own_ocsp,
    )
    response_record = record(
        "response", created, status, signed.signature_base, signed.headers[signatures.H_SIGNATURE_INPUT],
        signed.headers[signatures.H_SIGNATURE], sign_cert_der, own_ocsp, digest,
        resp_body if answer is None else None,
    )
    usage_logged = None
    usage_index_rows = None if usage is None or ctx.transparency is None else ctx.transparency.index_rows(usage)
    if answer is not None and body_logging:
        await ctx.messagelog.append_body_apart(response_record, answer.chunks())
    elif usage is None:
        await ctx.messagelog.append(response_record)
    else:  # both queued in this turn of the loop: one group commit (docs/transparency.md section 3)
        logged = ctx.messagelog.start(response_record)
        usage_logged = ctx.messagelog.start(usage.record, index_rows=usage_index_rows)
        await logged
    if usage is not None:  # its blind-index rows commit in its transaction
        await (usage_logged or ctx.messagelog.append(usage.record, index_rows=usage_index_rows))
    out = [(name, value) for name, value in passed if not name.lower().startswith("x-road-")]
    out.extend(xroad.items())
    out.extend(signed.headers.items())
    if answer is not None:
        return http.Response(status=status, reason=reason, headers=out, stream=answer.chunks_then_close(),
                             length=answer.size)
    return http.Response(status=status, reason=reason, headers=out, body=resp_body)


async def _call_service(
    ctx: ProxyContext, base_url: str, timeout_seconds: float, target: rest.RestTarget,
    pairs: list[tuple[str, str]], body: bytes | Spool, account: BodyAccount,
) -> tuple[int, str | None, list[tuple[str, str]], bytes, Spool | None]:
    """Call the service: base URL + service path + query, end-to-end and X-Road headers, no redirects. A spooled
    ``body`` is sent from its spool. The answer's body is returned whole, or, when it is chunked or declared
    over the spool's threshold and does not fit it, as a spool (then the returned bytes are empty; the caller
    closes it).

    Raises:
        PeerError: ``ServiceFailed`` (too large), ``NetworkError`` (unreachable, timed out).
        Overloaded: the body budget is full (see ``BodyBudget``).
    """
    # The service gets the path that the access rules were checked on (rest.normalise_path), never the raw
    # one: with "/admin/../persons/1" a rule for /persons/* matches, while a service routing on the raw
    # path would serve /admin/. The normal form is equivalent under RFC 3986 (unreserved escapes decoded,
    # dot segments resolved), plus "//" collapsed. An empty path stays empty; the query stays raw.
    path = rest.normalise_path(target.service_path) if target.service_path else ""
    query = "" if target.raw_query is None else "?" + target.raw_query
    headers = rest.end_to_end_headers(pairs, also_skip=_DROP_TO_SERVICE)
    spill = SpillToSpool(ctx.spool_dir, max_bytes=ctx.limits.max_body_bytes, what="the service's response",
                         hold=account)
    sink: Spool | None = None
    started = time.perf_counter()
    try:
        try:
            observe.sent()
            if isinstance(body, Spool):
                sink = Spool(directory=ctx.spool_dir, max_bytes=ctx.limits.max_body_bytes,
                             what="the service's response", hold=account)
                resp = await ctx.services.request_streamed(base_url, target.method, path + query, headers,
                                                           body.chunks, length=body.size, sink=sink,
                                                           timeout_seconds=timeout_seconds)
            else:
                resp = await ctx.services.request(base_url, target.method, path + query, headers, body,
                                                  timeout_seconds=timeout_seconds, hold=account, spill=spill)
                sink = spill.spool
        except http.ResponseTooLarge as e:
            raise ServiceFailed(f"the service's response is larger than the maximum of {e.limit} bytes") from e
        except PayloadTooLarge as e:  # from the spool: the answer passed max_body_bytes
            raise ServiceFailed(f"the service's response is larger than the maximum of "
                                f"{ctx.limits.max_body_bytes} bytes") from e
        except TimeoutError as e:
            # PR-REST 4.6 example 2: an unreachable or silent service is a NetworkError of the server proxy
            raise PeerError(f"service {target.service} did not answer within {timeout_seconds:g} s") from e
        except http.HttpClientError as e:
            raise PeerError(f"service {target.service} cannot be reached: {e}") from e
        sink, whole = await unspooled(sink)
        observe.received()
    except BaseException:
        spill.close()
        if sink is not None:
            sink.close()
        raise
    ctx.metrics.service_wait.labels(str(target.service)).observe(time.perf_counter() - started)
    return resp.status, resp.reason, header_pairs(resp.raw_headers), resp.body if whole is None else whole, sink


__all__ = ["RequestError", "build_server_handler"]
