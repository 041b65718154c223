"""The audit log from the database: exported as an archive, and checked online (I/O).

docs/auditing.md section 7. :func:`export_audit` writes the audit log as an archive
(:mod:`gateway.admin.auditarchive`): every entry up to the latest checkpoint, re-encoded from its columns
exactly as its leaf was computed (so an entry changed in the database since is exported changed, and the
verifier names it), the stored leaf hashes, every checkpoint with its timestamp token, its signing
certificate, its OCSP response and its cosignatures, and the signed global configuration(s).
:func:`check_online` is ``gateway admin audit verify``: the same chain check on the database, each stored
checkpoint's signature checked with its stored certificate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from gateway.admin.auditarchive import ArchivedCheckpoint, write_archive
from gateway.admin.auditlog import ChainProblem, ChainResult, HeadRef, audit_origin, check_chain, encode_entry
from gateway.admin.store import AUDIT_READ, AdminStore, AuditCheckpoint
from gateway.errors import Conflict, TrustError
from gateway.identifiers import SecurityServerId
from gateway.messagelog.checkpoint import verify_checkpoint
from gateway.messagelog.merkle import leaf_hash


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditExport:
    entries: int
    checkpoints: int
    stamped: int
    cosignatures: int
    globalconfs: int


async def _all_entries(store: AdminStore) -> list[tuple[int, bytes, bytes]]:
    """``(seq, encoding, stored leaf)`` of every entry, in seq order."""
    out: list[tuple[int, bytes, bytes]] = []
    start = 0
    while True:
        page = await store.audit_chain(start, AUDIT_READ)
        out.extend((f.seq, encode_entry(f), stored) for f, stored in page)
        if len(page) < AUDIT_READ:
            return out
        start = page[-1][0].seq + 1


async def export_audit(
    store: AdminStore, path: str | Path, *, server_id: SecurityServerId, globalconfs: Sequence[bytes], now: datetime,
    include_uncovered: bool = False,
) -> AuditExport:
    """Write the audit log of ``server_id`` to an archive at ``path``: every entry up to the latest checkpoint,
    so that each is covered by a signed tree head (with ``include_uncovered``, the entries after it too; the
    verifier reports them as not covered).

    Raises:
        RequestError: 409 if there is no checkpoint yet and ``include_uncovered`` is not set.
        GatewayError: the database cannot be read.
        OSError: the file cannot be written.
    """
    entries = await _all_entries(store)
    cps = await store.audit_checkpoints()
    if not include_uncovered:
        if not cps:
            raise Conflict("the audit log has no checkpoint yet: wait for the server to make one "
                           "([server] checkpoint_interval_seconds) or export with --include-uncovered")
        entries = [e for e in entries if e[0] < cps[-1].size]
    cosigs: dict[int, list[bytes]] = {}
    for size, line in await store.audit_cosignatures():
        cosigs.setdefault(size, []).append(line.rstrip("\n").encode("utf-8"))
    write_archive(
        path, origin=audit_origin(server_id), exported_at=now, entries=[e for _, e, _ in entries],
        leaves=[leaf for _, _, leaf in entries],
        checkpoints=[ArchivedCheckpoint(note=c.note, timestamp=c.timestamp_token,
                                        cosignatures=tuple(cosigs.get(c.size, ()))) for c in cps],
        globalconfs=globalconfs, certificates=list(dict.fromkeys(c.signing_cert for c in cps)),
        ocsp_responses=list(dict.fromkeys(c.signing_ocsp for c in cps if c.signing_ocsp is not None)),
    )
    return AuditExport(entries=len(entries), checkpoints=len(cps), stamped=sum(1 for c in cps if c.stamped),
                       cosignatures=sum(len(v) for v in cosigs.values()), globalconfs=len(globalconfs))


@dataclass(frozen=True, slots=True, kw_only=True)
class OnlineCheck:
    chain: ChainResult
    checkpoints: tuple[AuditCheckpoint, ...]
    signature_problems: tuple[ChainProblem, ...]

    @property
    def problems(self) -> tuple[ChainProblem, ...]:
        return self.signature_problems + self.chain.problems

    @property
    def ok(self) -> bool:
        return not self.problems


def _signature_problem(cp: AuditCheckpoint, origin: str) -> ChainProblem | None:
    try:
        head = verify_checkpoint(cp.note, x509.load_der_x509_certificate(cp.signing_cert), origin=origin)
    except (TrustError, ValueError) as e:
        return ChainProblem(where=f"checkpoint {cp.size}", problem="checkpoint-signature",
                            message=f"the stored note does not verify with its stored certificate: "
                                    f"{getattr(e, 'message', e)}")
    if head.size != cp.size or head.root_hash != cp.root_hash:
        return ChainProblem(where=f"checkpoint {cp.size}", problem="checkpoint-signature",
                            message="the signed note names another size or root than the stored row")
    return None


async def check_online(store: AdminStore, server_id: SecurityServerId) -> OnlineCheck:
    """The chain check (:func:`gateway.admin.auditlog.check_chain`) on the database: each entry re-encoded
    from its columns against its stored leaf, the stored leaves against every stored checkpoint whose signed
    note verifies.

    Raises:
        GatewayError: the database cannot be read.
    """
    origin = audit_origin(server_id)
    entries = await _all_entries(store)
    cps = tuple(await store.audit_checkpoints())
    sig_problems = tuple(p for p in (_signature_problem(c, origin) for c in cps) if p is not None)
    bad = {p.where for p in sig_problems}
    heads = [HeadRef(size=c.size, root_hash=c.root_hash) for c in cps if f"checkpoint {c.size}" not in bad]
    chain = check_chain(((seq, leaf_hash(enc), stored) for seq, enc, stored in entries), heads)
    return OnlineCheck(chain=chain, checkpoints=cps, signature_problems=sig_problems)


__all__ = ["AuditExport", "OnlineCheck", "check_online", "export_audit"]
