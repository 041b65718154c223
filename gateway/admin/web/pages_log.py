"""The message log for auditors: search, one record with its signature, certificate and OCSP response, its
inclusion proof checked here against the signed checkpoint, and archive downloads (I/O).

The checks on a record's page are made by this page itself, from what the API operations hand out, in order:

1. the record's leaf hash is computed from its stored bytes (``exportMessageLogRecord``), RFC 9162 section 2.1.1;
2. the inclusion proof (``proveMessageLogInclusion``) leads from that leaf to the checkpoint's root hash
   (RFC 9162 section 2.1.3.2);
3. the checkpoint's signed note verifies with the certificate that signed it, and names that size and root
   (:func:`gateway.messagelog.checkpoint.verify_checkpoint`);
4. whether an RFC 3161 timestamp token is attached to the checkpoint, and by which TSA.

An auditor who trusts nothing this server says verifies a downloaded archive offline with ``gateway log verify``.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.x509 import ocsp

from gateway.admin.context import CALL
from gateway.admin.handlers.messagelog import origin_of
from gateway.admin.schema import MAX_LIMIT
from gateway.admin.web.guard import Form, page
from gateway.admin.web.nav import nav_for
from gateway.admin.web.ops import FormError, User, authorize, context, note_error, run_op
from gateway.admin.web.render import Column, render, table
from gateway.errors import GatewayError, RequestError
from gateway.messagelog import merkle
from gateway.messagelog.checkpoint import checkpoint_origin, verify_checkpoint
from gateway.messagelog.search import RecordQuery, search_records

SEARCH_FIELDS = {"from": "From (UTC)", "to": "To (UTC)", "client": "Client", "service": "Service",
                 "message_id": "Message id (X-Road-Id)", "request_id": "Request id (X-Road-Request-Id)",
                 "origin": "Log origin"}
ARCHIVE_FIELDS = {"from": "From (UTC)", "to": "To (UTC)"}
LOG = "/ui/messagelog"


def form_time(values: Any, name: str) -> datetime | None:
    """A time from a form: ``YYYY-MM-DDTHH:MM[:SS]`` (a browser's datetime-local field) is taken as UTC; an
    RFC 3339 time with a zone is converted to UTC.

    Raises:
        RequestError: 400 naming the field when it is not such a time.
    """
    text = str(values.get(name, "")).strip()
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise RequestError(f"body.{name} {text[:40]!r} is not a time such as 2026-01-02T03:04 (UTC)") from e
    return (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).astimezone(UTC)


def _text(values: Any, name: str) -> str | None:
    value = str(values.get(name, "")).strip()
    return value or None


def _origin(request: web.Request) -> str:
    """The ``origin`` query parameter, checked as the API checks it (default: this server's log).

    Raises:
        RequestError: not 1-255 printable ASCII characters.
    """
    return origin_of(request, context(request))


@page
async def messagelog(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    return await _log_page(request, user)


async def _log_page(request: web.Request, user: User, err: FormError | None = None,
                    status: int = 200) -> web.Response:
    ctx = context(request)
    q = request.query
    origin = context(request).origin
    rows: list[dict[str, Any]] = []
    total = 0
    try:
        authorize(request, user, "listMessageLogRecords", query={k: v for k, v in q.items() if v})
        origin = _origin(request)
        query = RecordQuery(since=form_time(q, "from"), until=form_time(q, "to"), client=_text(q, "client"),
                            service=_text(q, "service"), message_id=_text(q, "message_id"),
                            request_id=_text(q, "request_id"))
        found, total = await search_records(ctx.messagelog, origin, query, offset=0, limit=MAX_LIMIT)
    except GatewayError as e:
        if err is not None or e.status == 403:
            raise
        note_error(request, e)
        err, status = FormError.of("search", e, q, SEARCH_FIELDS), e.status
        found = []
    request[CALL].details["records"] = [r.seq for r in found][:1000]
    for r in found:
        rec = r.decode()
        rows.append({"seq": r.seq, "created": rec.created, "kind": rec.kind, "side": rec.side,
                     "client": str(rec.client), "service": str(rec.service), "message_id": rec.message_id,
                     "request_id": rec.request_id, "status": rec.status})
    t = table(request, rows, (
        Column(key="seq", label="No."), Column(key="created", label="Time (UTC)"), Column(key="kind", label="Kind"),
        Column(key="side", label="Side"), Column(key="client", label="Client"), Column(key="service", label="Service"),
        Column(key="message_id", label="Message id"), Column(key="request_id", label="Request id"),
        Column(key="status", label="Status"),
    ), caption="Records found", default_sort="seq", default_desc=True, total=total)
    usage = [] if ctx.transparency is None else await ctx.transparency.index.counts(ctx.clock())
    return render("messagelog.html", status=status, user=user, nav=nav_for(user, "messagelog"),
                  title="Message log", t=t, err=err, q=q, origin=origin, usage=usage)


def _cert_facts(b64: str | None) -> dict[str, Any] | None:
    if not b64:
        return None
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(b64))
    except ValueError as e:
        return {"error": f"not a certificate: {e}"}
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "serial": format(cert.serial_number, "x"), "not_before": cert.not_valid_before_utc,
            "not_after": cert.not_valid_after_utc}


def _ocsp_facts(b64: str | None) -> dict[str, Any] | None:
    if not b64:
        return None
    try:
        resp = ocsp.load_der_ocsp_response(base64.b64decode(b64))
        if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            return {"status": resp.response_status.name.lower()}
        return {"status": resp.certificate_status.name.lower(), "produced_at": resp.produced_at_utc,
                "this_update": resp.this_update_utc, "next_update": resp.next_update_utc,
                "responder": resp.responder_name.rfc4514_string() if resp.responder_name is not None else "by key"}
    except ValueError as e:
        return {"error": f"not an OCSP response: {e}"}


async def _proof_steps(request: web.Request, user: User, origin: str, seq: int, encoded: bytes) -> dict[str, Any]:
    """Steps (1)-(4) of the module docstring; each as (what, passed, detail)."""
    ctx = context(request)
    steps: list[tuple[str, bool, str]] = []
    leaf = merkle.leaf_hash(encoded)  # (1)
    steps.append(("Leaf hash computed from the stored record", True, leaf.hex()))
    try:
        proof = await run_op(request, user, "proveMessageLogInclusion", query={"origin": origin, "seq": str(seq)})
    except GatewayError as e:
        return {"steps": steps, "verified": False, "pending": e.message}
    size, root = int(proof["size"]), base64.b64decode(proof["root_hash"])
    path = [base64.b64decode(h) for h in proof["proof"]]
    try:  # (2)
        if base64.b64decode(proof["leaf_hash"]) != leaf:
            raise RequestError("the server's leaf hash differs from the stored record's")
        merkle.verify_inclusion(leaf, seq, size, path, root)
        steps.append((f"Inclusion proof ({len(path)} hashes) leads to the root of checkpoint {size}", True,
                      proof["root_hash"]))
    except GatewayError as e:
        steps.append(("Inclusion proof", False, e.message))
        return {"steps": steps, "verified": False, "pending": None}
    authorize(request, user, "getMessageLogCheckpoint")
    cp = await ctx.messagelog.checkpoint(origin, size)
    try:  # (3)
        if cp is None:
            raise RequestError(f"checkpoint {size} is not stored")
        signer = x509.load_der_x509_certificate(cp.signing_cert)
        head = verify_checkpoint(cp.note, signer, origin=checkpoint_origin(origin))
        if head.size != size or head.root_hash != root:
            raise RequestError("the signed checkpoint names another size or root hash")
        steps.append(("Checkpoint signature verifies", True, f"signed by {signer.subject.rfc4514_string()}"))
    except (GatewayError, ValueError) as e:
        steps.append(("Checkpoint signature", False, getattr(e, "message", str(e))))
        return {"steps": steps, "verified": False, "pending": None}
    stamped = cp.timestamp_token is not None  # (4)
    steps.append(("Checkpoint timestamped (RFC 3161)", stamped,
                  f"{cp.tsa_name}, {cp.timestamp_time:%Y-%m-%d %H:%M:%S} UTC" if stamped and cp.timestamp_time
                  else "not yet: the next timestamp will cover it"))
    return {"steps": steps, "verified": True, "pending": None, "note": cp.note.decode("utf-8", "replace")}


@page
async def record(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    origin = _origin(request)
    seq_text = request.match_info["seq"]
    if not seq_text.isascii() or not seq_text.isdigit() or len(seq_text) > 18:
        raise RequestError(f"record number {seq_text[:20]!r} is not a whole number")
    seq = int(seq_text)
    exported = await run_op(request, user, "exportMessageLogRecord", query={"origin": origin})
    listed = await run_op(request, user, "listMessageLogRecords",
                          query={"origin": origin, "offset": str(seq), "limit": "1"})
    items = [i for i in listed["items"] if i["seq"] == seq]
    if not items or not isinstance(exported, web.Response) or not isinstance(exported.body, bytes):
        raise RequestError(f"origin {origin!r} has no record {seq}")
    view = items[0]["record"] or {}
    checks = await _proof_steps(request, user, origin, seq, exported.body)
    return render("record.html", user=user, nav=nav_for(user, "messagelog"), title=f"Record {seq} of {origin}",
                  seq=seq, origin=origin, view=view, cert=_cert_facts(view.get("signing_cert")),
                  ocsp=_ocsp_facts(view.get("ocsp_response")), checks=checks)


@page
async def archive(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    q = request.query
    query = {"origin": _origin(request)}
    try:
        for name in ("from", "to"):
            t = form_time(q, name)
            if t is not None:
                query[name] = t.strftime("%Y-%m-%dT%H:%M:%SZ")
        if q.get("include_uncovered") == "true":
            query["include_uncovered"] = "true"
        response = await run_op(request, user, "exportMessageLogArchive", query=query)
    except GatewayError as e:
        if e.status == 403:
            raise
        note_error(request, e)
        return await _log_page(request.clone(rel_url=request.rel_url.with_path(LOG)), user,
                               FormError.of("archive", e, q, ARCHIVE_FIELDS), e.status)
    assert isinstance(response, web.StreamResponse)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/messagelog", messagelog)
    app.router.add_get("/messagelog/archive", archive)
    app.router.add_get("/messagelog/records/{seq}", record)


__all__ = ["add_routes", "form_time"]
