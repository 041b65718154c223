"""Signed, timestamped checkpoints of the admin audit log, and the audit log as a witnessed log (I/O).

docs/witness.md section 7, docs/auditing.md section 7. The audit log (:mod:`gateway.admin.auditlog`) is a log
origin of its own, ``<server id>/audit``. The server process (worker 0, which serves the admin API) runs one
:class:`AuditCheckpointer`; each round (:meth:`AuditCheckpointer.run_once`, every second):

1. **Ingest**: the leaf hashes of the entries written since the last round (by this process or a CLI
   process) go into the in-memory tree; at start the tree is restored from the latest checkpoint's stored
   compact range, checked against its root.
2. **Checkpoint**: if there are new entries and ``interval_seconds`` have passed since the last checkpoint,
   a C2SP checkpoint of the tree is signed with the server's signing key, exactly as the message log's
   (:func:`gateway.messagelog.checkpoint.sign_checkpoint`), and stored with the signing certificate and a
   good OCSP response for it (an offline verifier has no other source of it: the audit log has no records
   that staple one).
3. **Timestamp**: the newest unstamped checkpoint, then a few older ones, get an RFC 3161 token from the
   TSAs of the global configuration (:func:`gateway.messagelog.checkpointer.timestamp_note`).

Unlike the message log, an audit log that is not timestamped stops nothing: the admin API keeps working and
the checkpoints wait for a TSA (``gateway admin audit verify`` shows how many are unstamped).

:class:`AuditLogSource` is the audit log as a :class:`gateway.witness.source.CheckpointSource`, for the pusher
that sends checkpoints to the witnesses of the server's witness policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from cryptography.hazmat.primitives import serialization

from gateway.admin.auditlog import audit_origin
from gateway.admin.store import AUDIT_READ, AdminStore, AuditCheckpoint
from gateway.errors import GatewayError, PeerError, TrustError
from gateway.globalconf.model import GlobalConf
from gateway.identifiers import SecurityServerId
from gateway.messagelog import merkle
from gateway.messagelog.checkpoint import Checkpoint, sign_checkpoint
from gateway.messagelog.checkpointer import TimestampFetcher, run_rounds, timestamp_note
from gateway.protocol.signatures import Signer
from gateway.trust.cosignature import Cosignature
from gateway.witness.source import SignedCheckpoint

log = structlog.get_logger("gateway.admin.auditcheckpointer")

CATCH_UP_PER_ROUND = 16  # older unstamped checkpoints stamped per round after the newest one

OwnOcsp = Callable[[], Awaitable[bytes | None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRound:
    """What one round did (for logs and tests)."""

    size: int
    checkpoint: AuditCheckpoint | None = None
    stamped: tuple[int, ...] = ()
    stamp_error: str | None = None


async def read_leaves(store: AdminStore, start: int, end: int) -> list[bytes]:
    """The stored leaf hashes ``start`` .. ``end - 1``, page by page.

    Raises:
        TrustError: fewer entries than the range (entries were removed from the database).
    """
    out: list[bytes] = []
    while start + len(out) < end:
        page = await store.audit_leaves(start + len(out), end)
        if not page:
            raise TrustError(f"the audit log has no entry {start + len(out)} (entries were removed)")
        out.extend(page)
    return out


class AuditCheckpointer:
    """Signed, timestamped checkpoints of the audit log (module docstring)."""

    def __init__(
        self,
        *,
        store: AdminStore,
        server_id: SecurityServerId,
        signer: Callable[[], Signer],
        conf: Callable[[], GlobalConf | None],
        fetch: TimestampFetcher,
        own_ocsp: OwnOcsp | None = None,
        can_sign: Callable[[], bool] | None = None,
        interval_seconds: float = 60.0,
        timeout_seconds: float = 10.0,
    ) -> None:
        """``signer`` gives the signing key in use now (it changes when a certificate is activated);
        ``own_ocsp`` a good OCSP response for its certificate (None: the checkpoint is stored without);
        ``can_sign`` says whether to try signing now (False while a PKCS#11 device is known to be unavailable:
        the checkpoint waits for the next round rather than touching the device; the key watch probes it)."""
        if interval_seconds <= 0 or timeout_seconds <= 0:
            raise ValueError("checkpoint interval and timeout must be positive")
        self.store = store
        self.origin = audit_origin(server_id)
        self._signer = signer
        self._conf = conf
        self._fetch = fetch
        self._own_ocsp = own_ocsp
        self._can_sign = can_sign or (lambda: True)
        self.interval = timedelta(seconds=interval_seconds)
        self.timeout_seconds = timeout_seconds
        self.tree = merkle.MerkleTree()
        self.latest: AuditCheckpoint | None = None
        self._last_checkpoint_time: datetime | None = None
        self._next_stamp_attempt: datetime | None = None
        self._lock = asyncio.Lock()
        self._started = False

    async def start(self, now: datetime) -> None:
        """Restore the tree from the latest checkpoint and the entries after it.

        Raises:
            TrustError: the stored compact range does not give the stored root (the database was altered).
            GatewayError: the database cannot be read.
        """
        async with self._lock:
            latest = await self.store.latest_audit_checkpoint()
            tree = merkle.MerkleTree()
            if latest is not None:
                tree = merkle.MerkleTree(size=latest.size, frontier=list(latest.frontier))
                if tree.root() != latest.root_hash:
                    raise TrustError(f"audit log {self.origin}: the stored tree state of checkpoint {latest.size} "
                                     "does not match its root hash; the database was altered")
                self._last_checkpoint_time = latest.created
            self.tree, self.latest = tree, latest
            if self._last_checkpoint_time is None:
                self._last_checkpoint_time = now
            await self._ingest()
            self._started = True
            log.info("audit checkpointer started", origin=self.origin, size=self.tree.size,
                     latest_checkpoint=None if latest is None else latest.size)

    async def _ingest(self) -> None:
        size = await self.store.audit_size()
        while self.tree.size < size:
            end = min(size, self.tree.size + AUDIT_READ)
            self.tree.extend(await read_leaves(self.store, self.tree.size, end))

    async def run_once(self, now: datetime, *, force: bool = False) -> AuditRound:
        """Ingest, checkpoint if due (or if ``force`` and there are new entries), timestamp if due.

        Raises:
            TrustError: the signer's key cannot sign checkpoints, or entries were removed.
            GatewayError: the database cannot be read or written.
        """
        if not self._started:
            await self.start(now)
        async with self._lock:
            # (1) ingest
            await self._ingest()
            # (2) checkpoint if due
            made = None
            last = 0 if self.latest is None else self.latest.size
            assert self._last_checkpoint_time is not None
            due = force or now - self._last_checkpoint_time >= self.interval
            if self.tree.size > last and due and self._can_sign():
                made = await self._make_checkpoint(now)
            # (3) timestamp if something waits
            stamped: tuple[int, ...] = ()
            error = None
            waiting = self.latest is not None and not self.latest.stamped
            if waiting and (force or self._next_stamp_attempt is None or now >= self._next_stamp_attempt):
                try:
                    stamped = await self._stamp_pending()
                    self._next_stamp_attempt = None
                except (PeerError, TrustError) as e:
                    error = e.message
                    self._next_stamp_attempt = now + self.interval
                    log.warning("audit checkpoint timestamping failed; retrying later", origin=self.origin,
                                error=error)
            return AuditRound(size=self.tree.size, checkpoint=made, stamped=stamped, stamp_error=error)

    async def _make_checkpoint(self, now: datetime) -> AuditCheckpoint:
        signer = self._signer()
        head = Checkpoint(origin=self.origin, size=self.tree.size, root_hash=self.tree.root())
        if hasattr(signer, "sign_async"):  # a PKCS#11 device: its call off the event loop
            note = await asyncio.to_thread(sign_checkpoint, head, signer)
        else:
            note = sign_checkpoint(head, signer)
        ocsp = None
        if self._own_ocsp is not None:
            try:
                ocsp = await self._own_ocsp()
            except GatewayError as e:
                log.warning("no OCSP response for the audit checkpoint's signing certificate", error=e.message)
        assert self.tree.frontier is not None
        stored = AuditCheckpoint(
            size=head.size, root_hash=head.root_hash, note=note,
            signing_cert=signer.cert.public_bytes(serialization.Encoding.DER), signing_ocsp=ocsp,
            frontier=tuple(self.tree.frontier), created=now,
        )
        if not await self.store.add_audit_checkpoint(stored):
            existing = await self.store.audit_checkpoint(head.size)  # made by another process meanwhile
            stored = existing if existing is not None else stored
        self.latest = stored
        self._last_checkpoint_time = now
        log.info("audit checkpoint signed", origin=self.origin, size=stored.size, root=head.root_hash.hex()[:16])
        return stored

    async def _stamp_pending(self) -> tuple[int, ...]:
        assert self.latest is not None
        newest = self.latest
        await self._stamp(newest)
        done = [newest.size]
        for cp in await self.store.audit_checkpoints(unstamped_only=True, limit=CATCH_UP_PER_ROUND):
            if cp.size >= newest.size:
                continue
            try:
                await self._stamp(cp)
            except (PeerError, TrustError) as e:
                log.info("catching up audit timestamps paused", size=cp.size, error=e.message)
                break
            done.append(cp.size)
        self.latest = await self.store.audit_checkpoint(newest.size) or newest
        return tuple(done)

    async def _stamp(self, cp: AuditCheckpoint) -> None:
        conf = self._conf()
        tsas = () if conf is None else conf.timestamping_authorities
        token, tsa = await timestamp_note(cp.note, tsas, self._fetch, timeout_seconds=self.timeout_seconds)
        await self.store.set_audit_timestamp(cp.size, token=token.token_der, gen_time=token.gen_time,
                                             tsa_name=tsa.name)
        log.info("audit checkpoint timestamped", size=cp.size, tsa=tsa.name, gen_time=token.gen_time.isoformat())

    async def run(self, stop: asyncio.Event, clock: Callable[[], datetime]) -> None:
        """Rounds every second until ``stop`` is set; errors are logged and the next round tries again."""
        await run_rounds(self.run_once, stop, clock, interval=self.interval, what="audit checkpoint",
                         origin=self.origin)


class AuditLogSource:
    """The audit log as a :class:`gateway.witness.source.CheckpointSource` (for the witness pusher)."""

    def __init__(self, store: AdminStore, server_id: SecurityServerId) -> None:
        self._store = store
        self._origin = audit_origin(server_id)

    @property
    def origin(self) -> str:
        return self._origin

    async def latest(self) -> SignedCheckpoint | None:
        cp = await self._store.latest_audit_checkpoint()
        return None if cp is None else SignedCheckpoint(size=cp.size, note=cp.note, signing_cert=cp.signing_cert)

    async def created(self, size: int) -> datetime | None:
        """When the checkpoint of ``size`` was made (the pusher's witnessing lag)."""
        cp = await self._store.audit_checkpoint(size)
        return None if cp is None else cp.created

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """Raises: TrustError: sizes not ``0 <= old <= new``, or entries missing from the database."""
        ranges = merkle.consistency_ranges(old_size, new_size)
        if not ranges:
            return []
        leaves = await read_leaves(self._store, 0, new_size)
        return merkle.consistency_proof(leaves, old_size, new_size)

    async def add_cosignatures(self, size: int, cosignatures: Sequence[Cosignature]) -> None:
        await self._store.add_audit_cosignatures(size, cosignatures)


def audit_log_source(store: AdminStore, server_id: SecurityServerId) -> AuditLogSource:
    """The audit log of ``server_id`` in ``store``, for the runtime to hand to the witness pusher."""
    return AuditLogSource(store, server_id)


__all__ = ["AuditCheckpointer", "AuditLogSource", "AuditRound", "audit_log_source", "read_leaves"]
