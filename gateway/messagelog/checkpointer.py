"""The checkpointer: signs the message log's tree heads and has them timestamped (I/O, background task).

``docs/messagelog.md`` sections 7-9. One :class:`Checkpointer` per log origin (one
writer process). Each round (:meth:`Checkpointer.run_once`, run every second by :meth:`Checkpointer.run`):

1. **Ingest**: read the leaf hashes committed since the last round and append them to the in-memory
   incremental tree (:class:`~gateway.messagelog.merkle.MerkleTree`, ``O(log n)`` state). At start the tree
   is restored from the latest checkpoint's stored compact range plus the leaves after it, so start-up
   reads only what came after the last checkpoint.
2. **Checkpoint**: if there are new records and ``checkpoint_interval_seconds`` have passed since the last
   checkpoint, or ``checkpoint_max_records`` new records have arrived, sign a C2SP checkpoint of the
   current size with the server's signing key (:mod:`gateway.messagelog.checkpoint`) and store it.
3. **Timestamp**: if the newest checkpoint has no RFC 3161 token, ask the TSAs of the global configuration
   in their order of preference for one over ``SHA-256(note)``, check the answer
   (:func:`gateway.trust.timestamp.check_response`) and store the token. Then catch up older unstamped
   checkpoints (a few per round). If no TSA answers, the checkpoints wait and the next attempt is one
   interval later.

**Grace period.** ``unstamped_since`` is the time of the oldest record that no timestamped checkpoint covers
yet (at start: that record's ``created``; later: when the round first saw it). While it is older than the
grace period (``[server] timestamp_grace_seconds``, or the global configuration's parameter of that name,
default 4 h as X-Road), :meth:`Checkpointer.check_timestamping` raises ``TimestampingFailed`` and the proxies
refuse new exchanges; the first successful timestamp lifts it.

Time is injected: rounds take ``now``; tests call :meth:`~Checkpointer.run_once` with any clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import aiohttp
import structlog
from cryptography.hazmat.primitives import serialization

from gateway.errors import GatewayError, MessageLogError, PeerError, TimestampingFailed, TrustError
from gateway.globalconf.model import DEFAULT_TIMESTAMP_GRACE_SECONDS, GlobalConf, Tsa
from gateway.messagelog import merkle
from gateway.messagelog.checkpoint import Checkpoint, checkpoint_origin, sign_checkpoint
from gateway.messagelog.store import MAX_LEAF_READ, MessageLogStore, StoredCheckpoint
from gateway.protocol.signatures import Signer
from gateway.trust.ocsp_fetch import fetch_timestamp
from gateway.trust.timestamp import TimestampToken, build_request, check_response

log = structlog.get_logger("gateway.messagelog.checkpointer")

POLL_SECONDS = 1.0  # seconds between rounds of the background task (ingest is one indexed query)
CATCH_UP_PER_ROUND = 16  # older unstamped checkpoints stamped per round after the newest one


class TimestampFetcher(Protocol):
    """Sends a DER TimeStampReq to a TSA URL and returns the DER TimeStampResp (unchecked).

    Raises PeerError when the TSA cannot be reached or answers badly.
    """

    async def __call__(self, url: str, request: bytes, *, timeout_seconds: float) -> bytes: ...


class HttpTimestampFetcher:
    """:class:`TimestampFetcher` over HTTP (RFC 3161 section 3.4) with a shared aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def __call__(self, url: str, request: bytes, *, timeout_seconds: float) -> bytes:
        return await fetch_timestamp(self._session, url, request, timeout_seconds=timeout_seconds)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundResult:
    """What one round did (for logs and tests)."""

    size: int  # tree size after ingest
    checkpoint: StoredCheckpoint | None = None  # made in this round
    stamped: tuple[int, ...] = ()  # sizes of the checkpoints timestamped in this round
    stamp_error: str | None = None  # why timestamping failed in this round, if it was tried and failed


async def timestamp_note(
    note: bytes, tsas: Sequence[Tsa], fetch: TimestampFetcher, *, timeout_seconds: float,
) -> tuple[TimestampToken, Tsa]:
    """An RFC 3161 token over ``SHA-256(note)`` from the first of ``tsas`` (in order) that gives a valid one
    (checked: :func:`gateway.trust.timestamp.check_response`, with a fresh nonce); also used by the audit log's
    checkpointer (:mod:`gateway.admin.auditcheckpointer`).

    Raises:
        PeerError: no TSA is configured or none gave a valid token (the messages of each attempt).
    """
    if not tsas:
        raise PeerError("no timestamping authority in the global configuration")
    data_hash = hashlib.sha256(note).digest()
    errors = []
    for tsa in tsas:
        nonce = secrets.randbits(63)
        try:
            answer = await fetch(tsa.url, build_request(data_hash, nonce=nonce), timeout_seconds=timeout_seconds)
            return check_response(answer, data_hash=data_hash, tsa_cert=tsa.certificate, nonce=nonce), tsa
        except (PeerError, TrustError) as e:
            errors.append(f"{tsa.name}: {e.message}")
    raise PeerError("no TSA gave a valid timestamp: " + "; ".join(errors))


class Checkpointer:
    """Signed, timestamped checkpoints of one log origin (module docstring)."""

    def __init__(
        self,
        *,
        store: MessageLogStore,
        origin: str,
        signer: Signer,
        conf: Callable[[], GlobalConf | None],
        fetch: TimestampFetcher,
        interval_seconds: float = 60.0,
        max_records: int = 10_000,
        grace_seconds: int = 0,
        timeout_seconds: float = 10.0,
    ) -> None:
        if interval_seconds <= 0 or max_records < 1 or grace_seconds < 0 or timeout_seconds <= 0:
            raise ValueError("checkpoint interval, record count and timeouts must be positive")
        self.store = store
        self.origin = origin
        self.signer = signer
        self._conf = conf
        self._fetch = fetch
        self.interval = timedelta(seconds=interval_seconds)
        self.max_records = max_records
        self._grace_seconds = grace_seconds
        self.timeout_seconds = timeout_seconds
        self.tree = merkle.MerkleTree()
        self.latest: StoredCheckpoint | None = None
        self.stamped_size = 0  # size of the newest timestamped checkpoint
        self.unstamped_since: datetime | None = None
        self._last_checkpoint_time: datetime | None = None
        self._next_stamp_attempt: datetime | None = None
        self._lock = asyncio.Lock()
        self._started = False
        self._cert_der = signer.cert.public_bytes(serialization.Encoding.DER)

    def use_signer(self, signer: Signer) -> None:
        """Sign the next checkpoints with ``signer`` (a server that started without a signing key gets one)."""
        self.signer = signer
        self._cert_der = signer.cert.public_bytes(serialization.Encoding.DER)

    @property
    def grace(self) -> timedelta:
        """The grace period: the setting if set, else the global configuration's parameter."""
        if self._grace_seconds > 0:
            return timedelta(seconds=self._grace_seconds)
        conf = self._conf()
        seconds = DEFAULT_TIMESTAMP_GRACE_SECONDS if conf is None else conf.timestamp_grace_seconds
        return timedelta(seconds=seconds)

    # ---- start-up -------------------------------------------------------------------------------------------

    async def start(self, now: datetime) -> None:
        """Restore the tree and the timestamping state from the store.

        Raises:
            TrustError: the stored compact range does not give the stored root (the database was altered).
            MessageLogError: the store cannot be read.
        """
        async with self._lock:
            # (1) The tree as of the latest checkpoint, from its stored compact range, checked against its root.
            latest = await self.store.latest_checkpoint(self.origin)
            if latest is not None:
                tree = merkle.MerkleTree(size=latest.size, frontier=list(latest.frontier))
                if tree.root() != latest.root_hash:
                    raise TrustError(
                        f"message log {self.origin}: the stored tree state of checkpoint {latest.size} does not "
                        "match its root hash; the database was altered"
                    )
                self.tree = tree
                self._last_checkpoint_time = latest.created
            self.latest = latest
            if self._last_checkpoint_time is None:
                self._last_checkpoint_time = now  # the first interval counts from start-up
            # (2) The leaves after it.
            await self._ingest()
            # (3) What no timestamp covers yet: its age is what the grace period measures.
            stamped = await self.store.latest_checkpoint(self.origin, stamped_only=True)
            self.stamped_size = 0 if stamped is None else stamped.size
            self.unstamped_since = None
            if self.tree.size > self.stamped_size:
                first = await self.store.read(self.origin, start=self.stamped_size, limit=1)
                self.unstamped_since = first[0].decode().created if first else now
            self._started = True
            log.info("checkpointer started", origin=self.origin, size=self.tree.size,
                     latest_checkpoint=None if latest is None else latest.size, stamped=self.stamped_size)

    async def _ingest(self) -> int:
        size = await self.store.size(self.origin)
        while self.tree.size < size:
            end = min(size, self.tree.size + MAX_LEAF_READ)
            self.tree.extend(await self.store.leaf_hashes(self.origin, self.tree.size, end))
        return self.tree.size

    # ---- one round ------------------------------------------------------------------------------------------

    async def run_once(self, now: datetime, *, force: bool = False) -> RoundResult:
        """Ingest, checkpoint if due (or if ``force`` and there are new records), timestamp if due.

        Raises:
            MessageLogError: the store cannot be read or written.
            TrustError: the signer's key cannot sign checkpoints.
        """
        if not self._started:
            await self.start(now)
        async with self._lock:
            # (1) Ingest what was committed since the last round.
            before = self.tree.size
            await self._ingest()
            if self.tree.size > before and self.unstamped_since is None:
                self.unstamped_since = now
            # (2) Checkpoint if due.
            made = None
            last_size = 0 if self.latest is None else self.latest.size
            new = self.tree.size - last_size
            assert self._last_checkpoint_time is not None
            interval_over = now - self._last_checkpoint_time >= self.interval
            if new > 0 and (force or new >= self.max_records or interval_over):
                made = await self._make_checkpoint(now)
            # (3) Timestamp if something waits and the retry time has come.
            stamped: tuple[int, ...] = ()
            error = None
            waiting = self.latest is not None and self.latest.size > self.stamped_size
            if waiting and (force or self._next_stamp_attempt is None or now >= self._next_stamp_attempt):
                try:
                    stamped = await self._stamp_pending(now)
                    self._next_stamp_attempt = None
                except (PeerError, TrustError, MessageLogError) as e:
                    error = e.message
                    self._next_stamp_attempt = now + self.interval
                    log.warning("checkpoint timestamping failed; retrying later", origin=self.origin,
                                error=error, unstamped_since=str(self.unstamped_since),
                                retry_at=str(self._next_stamp_attempt))
            return RoundResult(size=self.tree.size, checkpoint=made, stamped=stamped, stamp_error=error)

    async def _make_checkpoint(self, now: datetime) -> StoredCheckpoint:
        root = self.tree.root()
        checkpoint = Checkpoint(origin=checkpoint_origin(self.origin), size=self.tree.size, root_hash=root)
        if hasattr(self.signer, "sign_async"):  # a PKCS#11 device (docs/tokens.md): its call off the event loop
            note = await asyncio.to_thread(sign_checkpoint, checkpoint, self.signer)
        else:
            note = sign_checkpoint(checkpoint, self.signer)
        assert self.tree.frontier is not None
        stored = StoredCheckpoint(
            origin=self.origin, size=self.tree.size, root_hash=root, note=note, signing_cert=self._cert_der,
            frontier=tuple(self.tree.frontier), created=now,
        )
        await self.store.add_checkpoint(stored)
        self.latest = stored
        self._last_checkpoint_time = now
        log.info("checkpoint signed", origin=self.origin, size=stored.size, root=root.hex()[:16])
        return stored

    async def _stamp_pending(self, now: datetime) -> tuple[int, ...]:
        assert self.latest is not None
        # (a) The newest first: it alone covers every record up to its size, which lifts the grace clock.
        newest = self.latest
        await self._stamp(newest)
        self.stamped_size = newest.size
        self.unstamped_since = None if self.tree.size <= newest.size else newest.created
        done = [newest.size]
        # (b) Then catch up older ones (their tokens show each tree head existed when it was made).
        older = await self.store.checkpoints(self.origin, limit=CATCH_UP_PER_ROUND, unstamped_only=True)
        for cp in older:
            if cp.size >= newest.size:
                continue
            try:
                await self._stamp(cp)
            except (PeerError, TrustError) as e:
                log.info("catching up timestamps paused", origin=self.origin, size=cp.size, error=e.message)
                break
            done.append(cp.size)
        return tuple(done)

    async def _stamp(self, cp: StoredCheckpoint) -> None:
        """Timestamp one checkpoint with the first TSA that gives a valid token.

        Raises:
            PeerError: no TSA is configured or none gave a valid token (the messages of each attempt).
        """
        conf = self._conf()
        tsas = () if conf is None else conf.timestamping_authorities
        token, tsa = await timestamp_note(cp.note, tsas, self._fetch, timeout_seconds=self.timeout_seconds)
        await self.store.set_timestamp(
            self.origin, cp.size, token=token.token_der, gen_time=token.gen_time, tsa_name=tsa.name,
            tsa_cert=tsa.certificate.public_bytes(serialization.Encoding.DER),
        )
        log.info("checkpoint timestamped", origin=self.origin, size=cp.size, tsa=tsa.name,
                 gen_time=token.gen_time.isoformat())

    # ---- the gate the proxies ask ----------------------------------------------------------------------------

    def check_timestamping(self, now: datetime) -> None:
        """Refuse exchanges once records have gone unstamped for longer than the grace period.

        Raises:
            TimestampingFailed: (a :class:`MessageLogError`; ``Server.<side>.TimestampingFailed`` as the
                proxy that asked answers it).
        """
        since = self.unstamped_since
        if since is not None and now - since > self.grace:
            raise TimestampingFailed(
                f"the message log has not been timestamped since {since.isoformat()} (grace period "
                f"{int(self.grace.total_seconds())} s): no timestamping authority answers",
            )

    # ---- background task -----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, clock: Callable[[], datetime]) -> None:
        """Rounds every second until ``stop`` is set; errors are logged and the next round tries again."""
        await run_rounds(self.run_once, stop, clock, interval=self.interval, what="checkpoint", origin=self.origin)


async def run_rounds(
    round_once: Callable[[datetime], Awaitable[object]], stop: asyncio.Event, clock: Callable[[], datetime], *,
    interval: timedelta, what: str, origin: str,
) -> None:
    """Call ``round_once(clock())`` every :data:`POLL_SECONDS` (or ``interval`` if shorter) until ``stop`` is set;
    an error is logged as "<what> round failed" and the next round tries again (the message log's and the audit
    log's checkpointers)."""
    poll = min(interval.total_seconds(), POLL_SECONDS)
    while not stop.is_set():
        try:
            await round_once(clock())
        except GatewayError as e:
            log.warning(f"{what} round failed", origin=origin, error=e.message)
        except Exception:
            log.exception(f"{what} round failed", origin=origin)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=poll)


__all__ = ["Checkpointer", "HttpTimestampFetcher", "RoundResult", "TimestampFetcher", "run_rounds", "timestamp_note"]
