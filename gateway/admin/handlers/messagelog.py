"""Admin API handlers of the ``messagelog`` tag, for auditors: records, checkpoints, proofs, archive download
(I/O).

docs/messagelog.md ("auditors can get an inclusion proof for any record; get a consistency proof between two
checkpoints; export an archive"). The routes are declared in :data:`gateway.admin.routes.ROUTES` (role
``auditor`` only, every call audited, successful reads too) and wrapped by :mod:`gateway.admin.middleware`;
these are their handlers. What the checkpoint, proof and archive routes return is what ``gateway log
checkpoints``, ``prove-inclusion``, ``prove-consistency`` and ``export`` print or write, so an auditor can check
it the same way (``docs/auditing.md``): a proof is verified here before it is handed out, but the auditor
verifies it again against the signed, timestamped checkpoint, trusting nothing this server says.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.admin.context import AdminContext, Call
from gateway.admin.handlers.common import query_time
from gateway.admin.routes import MAX_LOG_INDEX
from gateway.admin.schema import page_body, parse_page
from gateway.errors import NotFound, RequestError
from gateway.messagelog import merkle
from gateway.messagelog.export import all_checkpoints, choose_range, write_range
from gateway.messagelog.record import resolved_view
from gateway.messagelog.store import MessageLogStore, SqlMessageLogStore, StoredCheckpoint

MAX_ORIGIN_LENGTH = 255  # characters; as gateway.messagelog.record
DEFAULT_CHECKPOINTS = 100  # checkpoints per page unless the caller asks
MAX_CHECKPOINTS = 1000  # checkpoints per page at most
STREAM_CHUNK = 2**20  # bytes read from the archive file per write to the connection
_NAME_RE = re.compile(r"[^A-Za-z0-9._-]")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _iso(t: datetime | None) -> str | None:
    """``t`` as RFC 3339 with ``Z``, converted to UTC first whatever zone the stored time carries."""
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def origin_of(request: web.Request, ctx: AdminContext) -> str:
    """The ``origin`` query parameter (default: this server's log).

    Raises:
        RequestError: not 1-255 printable ASCII characters.
    """
    origin = request.query.get("origin", ctx.origin)
    if not origin or len(origin) > MAX_ORIGIN_LENGTH or not all(0x21 <= ord(c) <= 0x7E for c in origin):
        raise RequestError(f"origin {origin[:80]!r} must be 1-{MAX_ORIGIN_LENGTH} printable ASCII characters")
    return origin


def _int(text: str, name: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > len(str(MAX_LOG_INDEX)):
        raise RequestError(f"{name} {text[:20]!r} is not a non-negative integer")
    return int(text)


def _query_int(request: web.Request, name: str, *, required: bool = False) -> int | None:
    """Raises: RequestError: missing (if required) or not a non-negative integer."""
    text = request.query.get(name)
    if text is None:
        if required:
            raise RequestError(f"query parameter {name} is required")
        return None
    return _int(text, f"query parameter {name}")


def _query_bool(request: web.Request, name: str) -> bool:
    """Raises: RequestError: not true or false."""
    text = request.query.get(name, "false")
    if text not in ("true", "false"):
        raise RequestError(f"query parameter {name} must be true or false, not {text[:20]!r}")
    return text == "true"


async def _checkpoint(store: MessageLogStore, origin: str, size: int | None) -> StoredCheckpoint:
    """The checkpoint of ``size`` (default: the newest).

    Raises:
        RequestError: 404 when there is none.
    """
    cp = await (store.latest_checkpoint(origin) if size is None else store.checkpoint(origin, size))
    if cp is None:
        raise NotFound(f"log {origin} has no checkpoint" + ("" if size is None else f" of size {size}"))
    return cp


def _summary(cp: StoredCheckpoint) -> dict[str, Any]:
    return {"size": cp.size, "root_hash": _b64(cp.root_hash), "created": _iso(cp.created),
            "timestamped": cp.stamped, "timestamp_time": _iso(cp.timestamp_time), "tsa": cp.tsa_name}


# ------------------------------------------------------------------------------------------------ records


async def get_transparency_counts(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    """Usage records per client and how many are embargoed now (docs/transparency.md section 4)."""
    state = ctx.transparency
    if state is None:
        return {"enabled": False, "clients": [], "index_failures": 0}
    counts = await state.index.counts(ctx.clock())
    # index rows commit with their records (docs/transparency.md section 3): none can fail alone any more
    return {"enabled": True, "index_failures": 0,
            "clients": [{"client": c.client, "records": c.records, "embargoed": c.embargoed} for c in counts]}


async def list_message_log_records(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    page = parse_page(request.query)
    origin = origin_of(request, ctx)
    total = await ctx.messagelog.size(origin)
    found = await ctx.messagelog.read(origin, start=page.offset, limit=page.limit) if page.offset < total else []
    call.details["records"] = [r.seq for r in found][:1000]
    # the records with their references resolved (blobs as base64 DER, the signature base as text); the exact
    # stored bytes, which the leaf hash is of, are exportMessageLogRecord's
    items = [
        {"origin": r.origin, "seq": r.seq, "leaf_hash": r.leaf_hash.hex(), "record": resolved_view(r.encoded, r.blobs)}
        for r in found
    ]
    return page_body(items, total=total, page=page)


async def export_message_log_record(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    seq, origin = _int(request.match_info["seq"], "record sequence number"), origin_of(request, ctx)
    found = await ctx.messagelog.read(origin, start=seq, limit=1)
    if not found or found[0].seq != seq:
        raise NotFound(f"origin {origin!r} has no record {seq}")
    return web.Response(body=found[0].encoded, content_type="application/json",
                        headers={"X-Leaf-Hash": found[0].leaf_hash.hex()})


# ------------------------------------------------------------------------------------- checkpoints, proofs

async def list_message_log_checkpoints(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    origin = origin_of(request, ctx)
    min_size = _query_int(request, "min_size") or 0
    limit = _query_int(request, "limit")
    limit = DEFAULT_CHECKPOINTS if limit is None else limit
    if not 1 <= limit <= MAX_CHECKPOINTS:
        raise RequestError(f"query parameter limit={limit} is not in [1, {MAX_CHECKPOINTS}]")
    found = await ctx.messagelog.checkpoints(origin, min_size=min_size, limit=limit + 1)
    more, found = len(found) > limit, found[:limit]
    call.details["checkpoints"] = [c.size for c in found]
    return {
        "origin": origin, "records": await ctx.messagelog.size(origin),
        "pruned_before": await ctx.messagelog.pruned_before(origin),
        "checkpoints": [_summary(c) for c in found], "next_min_size": found[-1].size + 1 if more else None,
    }


async def get_message_log_checkpoint(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    origin = origin_of(request, ctx)
    cp = await _checkpoint(ctx.messagelog, origin, _int(request.match_info["size"], "checkpoint size"))
    return {
        **_summary(cp), "origin": origin, "note": cp.note.decode("utf-8"),
        "timestamp_token": None if cp.timestamp_token is None else _b64(cp.timestamp_token),
        "tsa_certificate": None if cp.tsa_cert is None else _b64(cp.tsa_cert),
        "signing_certificate": _b64(cp.signing_cert),
    }


async def prove_message_log_inclusion(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    origin = origin_of(request, ctx)
    seq = _query_int(request, "seq", required=True)
    assert seq is not None
    cp = await _checkpoint(ctx.messagelog, origin, _query_int(request, "size"))
    if seq >= cp.size:
        raise RequestError(f"record {seq} is not in the checkpoint of size {cp.size}",
                           hint="ask for a later checkpoint, or wait for the next one")
    (leaf,) = await ctx.messagelog.leaf_hashes(origin, seq, seq + 1)
    proof = await ctx.messagelog.inclusion_proof(origin, seq, cp.size)
    merkle.verify_inclusion(leaf, seq, cp.size, proof, cp.root_hash)  # never hand out a wrong proof
    call.details["proof"] = {"seq": seq, "size": cp.size}
    return {
        "origin": origin, "seq": seq, "leaf_hash": _b64(leaf), "size": cp.size, "root_hash": _b64(cp.root_hash),
        "proof": [_b64(h) for h in proof], "checkpoint": cp.note.decode("utf-8"),
        "timestamp_token": None if cp.timestamp_token is None else _b64(cp.timestamp_token),
    }


async def prove_message_log_consistency(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    origin = origin_of(request, ctx)
    old = await _checkpoint(ctx.messagelog, origin, _query_int(request, "old", required=True))
    new = await _checkpoint(ctx.messagelog, origin, _query_int(request, "new"))
    if old.size > new.size:
        raise RequestError(f"old checkpoint {old.size} is larger than new checkpoint {new.size}")
    proof = await ctx.messagelog.consistency_proof(origin, old.size, new.size)
    merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    call.details["proof"] = {"old": old.size, "new": new.size}
    return {
        "origin": origin, "old_size": old.size, "old_root_hash": _b64(old.root_hash), "new_size": new.size,
        "new_root_hash": _b64(new.root_hash), "proof": [_b64(h) for h in proof],
        "old_checkpoint": old.note.decode("utf-8"), "new_checkpoint": new.note.decode("utf-8"),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchivePlan:
    """What an archive download will hold: the range, as ``gateway log export`` chooses it, and the signed
    global configuration this server trusts now."""

    origin: str
    start: int
    end: int
    selection: dict[str, Any]
    checkpoints: list[StoredCheckpoint]
    globalconfs: list[bytes]

    @property
    def records(self) -> int:
        return self.end - self.start

    def file_name(self) -> str:
        return f"messagelog-{_NAME_RE.sub('_', self.origin)}-{self.start}-{self.end}.zip"


async def plan_archive(request: web.Request, ctx: AdminContext) -> ArchivePlan:
    """Steps (1) and (2) of :func:`export_message_log_archive`, from the request's query parameters.

    Raises:
        RequestError: a malformed parameter; no checkpoint or no record in the range (404, 409).
    """
    origin = origin_of(request, ctx)
    store = ctx.messagelog
    cps = await all_checkpoints(store, origin)
    start, end, selection = await choose_range(
        store, origin, cps, start=_query_int(request, "start"), end=_query_int(request, "end"),
        from_time=query_time(request, "from"), to_time=query_time(request, "to"),
        engine=store.engine if isinstance(store, SqlMessageLogStore) else None,
        include_uncovered=_query_bool(request, "include_uncovered"),
    )
    cache = ctx.globalconf.cache_path
    envelopes = [await asyncio.to_thread(cache.read_bytes)] if cache.exists() else []
    return ArchivePlan(origin=origin, start=start, end=end, selection=selection, checkpoints=list(cps),
                       globalconfs=envelopes)


async def write_archive(plan: ArchivePlan, ctx: AdminContext, path: Path,
                        progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The archive of ``plan`` written to ``path``; what the audit entry says of it."""
    manifest = await write_range(ctx.messagelog, plan.origin, path, start=plan.start, end=plan.end,
                                 checkpoints=plan.checkpoints, globalconfs=plan.globalconfs,
                                 selection=plan.selection, now=ctx.clock(), progress=progress)
    return {"start": manifest.start, "end": manifest.end, "checkpoints": len(manifest.checkpoints),
            "bytes": (await asyncio.to_thread(path.stat)).st_size}


async def stream_file(request: web.Request, path: Path, name: str) -> web.StreamResponse:
    """``path`` as a zip download in :data:`STREAM_CHUNK` pieces."""
    response = web.StreamResponse(headers={
        "Content-Type": "application/zip", "Content-Disposition": f'attachment; filename="{name}"',
    })
    # Chunked, and the last chunk left to aiohttp: it ends the download after the middleware has written
    # the audit entry, so an auditor never holds an archive whose download is not in the audit log.
    response.enable_chunked_encoding()
    await response.prepare(request)
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, STREAM_CHUNK):
            await response.write(chunk)
    return response


async def export_message_log_archive(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    """The archive is written to a temporary file first (memory stays bounded, and an error is still a JSON
    answer), then streamed in :data:`STREAM_CHUNK` pieces (chunked transfer encoding) and removed."""
    # (1) the range, as `gateway log export` chooses it; (2) with the signed global configuration trusted now
    plan = await plan_archive(request, ctx)
    directory = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="gateway-archive-"))
    try:
        path = directory / "archive.zip"
        call.details["archive"] = await write_archive(plan, ctx, path)
        # (3) streamed to the auditor
        return await stream_file(request, path, plan.file_name())
    finally:
        await asyncio.to_thread(shutil.rmtree, directory, True)


__all__ = [
    "ArchivePlan",
    "export_message_log_archive",
    "export_message_log_record",
    "get_message_log_checkpoint",
    "get_transparency_counts",
    "list_message_log_checkpoints",
    "list_message_log_records",
    "origin_of",
    "plan_archive",
    "prove_message_log_consistency",
    "prove_message_log_inclusion",
    "stream_file",
    "write_archive",
]
