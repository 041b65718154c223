"""The pusher: every new checkpoint of this server's logs goes to the witnesses of its policy (I/O, background task).

docs/witness.md section 4. c2sp.org/tlog-witness@v1.0.0, with the log's signing certificate in the request header
:data:`LOG_CERT_HEADER` (our extension: a witness cannot know an X.509 log key from the note alone). Each round
(:meth:`Pusher.run_once`, every ``interval_seconds`` by :meth:`Pusher.run`):

1. the witness policy of this server is read from the global configuration in force now
   (:meth:`GlobalConf.witness_policy`): a change takes effect at the next round, without restart; no policy, no
   pushes;
2. for each log (a :class:`~gateway.witness.source.CheckpointSource`: one per message-log origin of this process,
   and the audit log) its newest signed checkpoint is taken, and sent to every witness of the policy that has not
   cosigned it yet and whose back-off has run out, all witnesses at once, each within ``timeout_seconds``:
   ``old <size>`` is what that witness last cosigned for this origin (kept in memory per (origin, witness),
   0 at start), then the consistency proof from that size, a blank line and the note;
3. the answer (:func:`judge_answer`, pure): 200 with cosignature lines, each verified against the policy's key
   for that witness (a line from any other key is ignored; none by its key, or one that does not verify, is a
   failure); 409 with ``text/x.tlog.size``: the witness knows another size, which becomes ``old`` and the
   checkpoint is sent once more in the same round; anything else is a failure;
4. the verified cosignatures are kept with the checkpoint (``add_cosignatures``, durably); a failure backs that
   witness off: ``backoff_min_seconds`` doubled per consecutive failure up to ``backoff_max_seconds``, with
   jitter (a random share of up to a quarter), so that a witness that is down costs one attempt per back-off;
5. the witnessing lag of each log (:meth:`Pusher.lag_seconds`): ``now`` minus the creation time of the oldest
   checkpoint newer than the newest one that reached the policy's quorum (for a source without a ``created``
   method: when the pusher first saw it), 0 when the newest checkpoint has its quorum (or there is no policy).
   It is the metric ``gateway_witness_lag_seconds{origin}`` and a readiness warning past ``[witness]
   lag_warning_seconds`` (gateway.server.health).

Nothing here is on the exchange path: the task only reads the log through its source and never holds anything
the proxies wait for.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

import structlog

from gateway.errors import GatewayError, TrustError
from gateway.globalconf.model import GlobalConf, Witness, WitnessPolicy
from gateway.identifiers import SecurityServerId
from gateway.messagelog import checkpoint as cp
from gateway.messagelog.store import MessageLogStore
from gateway.trust.cosignature import Cosignature, parse_line, verify
from gateway.witness.source import CheckpointSource, SignedCheckpoint

log = structlog.get_logger("gateway.witness.pusher")

LOG_CERT_HEADER = "X-Gateway-Log-Certificate"  # base64 DER of the note's signing certificate (docs/witness.md)
SIZE_CONTENT_TYPE = "text/x.tlog.size"  # c2sp.org/tlog-witness: a 409's body, the witness's known size
MAX_ANSWER_BYTES = 64 * 2**10  # bytes; a few cosignature lines (c2sp.org/tlog-witness)
MAX_PROOF_HASHES = 63  # c2sp.org/tlog-witness: at most 63 lines of proof

Outcome = Literal["cosigned", "conflict", "refused", "bad_answer", "unreachable"]
OUTCOMES: tuple[Outcome, ...] = ("cosigned", "conflict", "refused", "bad_answer", "unreachable")

_SIZE_RE = re.compile(rb"(0|[1-9][0-9]{0,19})\n")


# ---- pure core ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessAnswer:
    """What a witness answered to ``add-checkpoint`` (status, content type, body), as the transport read it."""

    status: int
    content_type: str | None
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Judgement:
    """What :func:`judge_answer` made of an answer."""

    outcome: Outcome
    cosignatures: tuple[Cosignature, ...] = ()  # verified, when cosigned
    known_size: int | None = None  # the witness's size, on a conflict
    error: str = ""


def request_body(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    """The body of ``POST <prefix>/add-checkpoint`` (c2sp.org/tlog-witness@v1.0.0 "add-checkpoint").

    Raises:
        TrustError: a proof with more than 63 hashes, or a proof with ``old_size`` 0.
    """
    if len(proof) > MAX_PROOF_HASHES:
        raise TrustError(f"witness: a consistency proof has at most {MAX_PROOF_HASHES} hashes, not {len(proof)}")
    if old_size == 0 and proof:
        raise TrustError("witness: a proof from size 0 must be empty")
    lines = [f"old {old_size}".encode()] + [base64.b64encode(h) for h in proof]
    return b"\n".join(lines) + b"\n\n" + note


def judge_answer(answer: WitnessAnswer, note_text: bytes, witness: Witness) -> Judgement:
    """Step 3 of the module docstring: the answer of ``witness`` to our checkpoint whose text is ``note_text``.

    Never raises: a bad answer is a judgement too.
    """
    status = answer.status
    if status == 200:
        try:
            text = answer.body.decode("utf-8")
        except UnicodeDecodeError:
            return Judgement(outcome="bad_answer", error="the cosignature lines are not UTF-8")
        cosigs: list[Cosignature] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line:
                continue
            try:
                c = parse_line(line)
            except TrustError as e:
                return Judgement(outcome="bad_answer", error=f"line {n}: {e.message}")
            if c.name != witness.key.name or c.key_id != witness.key.key_id:
                continue  # another key of the witness (c2sp.org/signed-note: unknown keys are ignored)
            try:
                verify(c, note_text, witness.key)
            except TrustError as e:
                return Judgement(outcome="bad_answer", error=e.message)
            cosigs.append(c)
        if not cosigs:
            return Judgement(outcome="bad_answer",
                             error=f"no cosignature by the policy's key {witness.key.vkey} in the answer")
        return Judgement(outcome="cosigned", cosignatures=tuple(cosigs))
    if status == 409:
        ctype = (answer.content_type or "").split(";", 1)[0].strip().lower()
        match = _SIZE_RE.fullmatch(answer.body)
        if ctype != SIZE_CONTENT_TYPE or match is None:
            return Judgement(outcome="bad_answer",
                             error=f"a 409 answer must be {SIZE_CONTENT_TYPE} with the witness's size and a newline")
        return Judgement(outcome="conflict", known_size=int(match.group(1)))
    reason = answer.body[:300].decode("utf-8", "replace").strip()
    return Judgement(outcome="refused", error=f"HTTP {status}" + (f": {reason}" if reason else ""))


def backoff_seconds(failures: int, *, low: float, high: float, jitter: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures: ``low * 2**(failures-1)`` capped at ``high``,
    plus ``jitter`` (0..1) times a quarter of it."""
    if failures <= 0:
        return 0.0
    base: float = min(high, low * 2.0 ** min(failures - 1, 62))
    return base + base * 0.25 * jitter


def quorum_reached(policy: WitnessPolicy, cosigned_by: Mapping[str, Cosignature]) -> bool:
    """Whether the witnesses of ``policy`` among ``cosigned_by`` (verified, by witness name) make its quorum."""
    keys = policy.keys()
    return sum(1 for name, c in cosigned_by.items() if name in keys and keys[name].key_id == c.key_id) \
        >= policy.quorum


# ---- the seams ----------------------------------------------------------------------------------------------


class WitnessTransport(Protocol):
    """Sends one ``add-checkpoint`` request to a witness and returns its answer.

    Raises:
        PeerError: the witness cannot be reached, its TLS certificate is refused, or it does not answer in time.
    """

    async def add_checkpoint(self, witness: Witness, body: bytes, *, log_certificate: bytes,
                             timeout_seconds: float) -> WitnessAnswer: ...


class PushObserver(Protocol):
    """Where the pusher reports each push (:class:`gateway.ops.metrics.ServerMetrics` fits)."""

    def witness_pushed(self, witness: str, outcome: str) -> None: ...


class MessageLogSource:
    """:class:`~gateway.witness.source.CheckpointSource` over one origin of the message-log store."""

    def __init__(self, store: MessageLogStore, log_origin: str) -> None:
        self.store = store
        self.log_origin = log_origin

    @property
    def origin(self) -> str:
        return cp.checkpoint_origin(self.log_origin)

    async def latest(self) -> SignedCheckpoint | None:
        found = await self.store.latest_checkpoint(self.log_origin)
        if found is None:
            return None
        return SignedCheckpoint(size=found.size, note=found.note, signing_cert=found.signing_cert)

    async def created(self, size: int) -> datetime | None:
        """When the checkpoint of ``size`` was made (for the lag)."""
        found = await self.store.checkpoint(self.log_origin, size)
        return None if found is None else found.created

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        if old_size == 0:
            return []
        return await self.store.consistency_proof(self.log_origin, old_size, new_size)

    async def add_cosignatures(self, size: int, cosignatures: Sequence[Cosignature]) -> None:
        await self.store.add_cosignatures(self.log_origin, size, cosignatures)


# ---- the task ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PushSettings:
    """The ``[witness]`` settings the pusher uses (gateway.settings.WitnessSettings)."""

    interval_seconds: float = 5.0  # seconds between rounds
    timeout_seconds: float = 10.0  # seconds for one push (connect, send, answer)
    backoff_min_seconds: float = 5.0  # seconds after a witness's first failure
    backoff_max_seconds: float = 600.0  # seconds; the longest back-off

    def __post_init__(self) -> None:
        if self.interval_seconds <= 0 or self.timeout_seconds <= 0 or self.backoff_min_seconds <= 0:
            raise ValueError("witness interval, timeout and back-off must be positive")
        if self.backoff_max_seconds < self.backoff_min_seconds:
            raise ValueError("witness backoff_max_seconds must be at least backoff_min_seconds")


@dataclass(slots=True, kw_only=True)
class WitnessState:
    """What the pusher knows of one witness for one log (mutable, in memory)."""

    size: int = 0  # the size this witness last cosigned (or told us in a 409)
    cosigned: dict[int, Cosignature] = field(default_factory=dict)  # its verified cosignature per size (recent)
    failures: int = 0  # consecutive
    next_attempt: float = 0.0  # monotonic seconds
    last_outcome: str = ""
    last_error: str = ""


@dataclass(slots=True, kw_only=True)
class LogState:
    """What the pusher knows of one log (mutable, in memory)."""

    quorum_size: int = 0  # the largest checkpoint size that reached the quorum
    pending_size: int | None = None  # the oldest checkpoint seen newer than quorum_size
    pending_since: datetime | None = None  # when that checkpoint was made (or first seen)
    witnesses: dict[str, WitnessState] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class PushResult:
    """One push of one round (for logs and tests)."""

    origin: str
    witness: str
    size: int
    outcome: Outcome
    error: str = ""


class Pusher:
    """Pushes the checkpoints of ``sources`` to the witnesses of this server's policy (module docstring)."""

    def __init__(
        self, *, sources: Sequence[CheckpointSource], server_id: SecurityServerId,
        conf: Callable[[], GlobalConf | None], transport: WitnessTransport, settings: PushSettings = PushSettings(),
        clock: Callable[[], datetime], monotonic: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random, observer: PushObserver | None = None,
    ) -> None:
        self.sources = list(sources)
        self.server_id = server_id
        self._conf = conf
        self._transport = transport
        self.settings = settings
        self._clock = clock
        self._monotonic = monotonic
        self._jitter = jitter
        self.observer = observer
        self.logs: dict[str, LogState] = {s.origin: LogState() for s in self.sources}
        self._lock = asyncio.Lock()  # one round at a time (the task's and a caller's, e.g. a test or a command)

    def add_source(self, source: CheckpointSource) -> None:
        """Push one more log's checkpoints too (the audit log, once it is open)."""
        self.sources.append(source)
        self.logs.setdefault(source.origin, LogState())

    def policy(self) -> WitnessPolicy | None:
        conf = self._conf()
        return None if conf is None else conf.witness_policy(self.server_id)

    def lag_seconds(self, now: datetime) -> dict[str, float]:
        """The witnessing lag of each log (step 5), 0 without a policy."""
        if self.policy() is None:
            return {origin: 0.0 for origin in self.logs}
        return {origin: 0.0 if st.pending_since is None else max(0.0, (now - st.pending_since).total_seconds())
                for origin, st in self.logs.items()}

    async def run_once(self) -> list[PushResult]:
        """One round (steps 1-5 of the module docstring); what each push did.

        Raises:
            GatewayError: a source could not be read (the other logs' pushes are made first).
        """
        async with self._lock:
            return await self._round()

    async def _round(self) -> list[PushResult]:
        # (1) the policy in force now
        policy = self.policy()
        if policy is None:
            for st in self.logs.values():
                st.pending_since = st.pending_size = None
            return []
        results: list[PushResult] = []
        failed: list[GatewayError] = []
        for source in list(self.sources):
            try:
                results += await self._push_log(source, policy)
            except GatewayError as e:
                log.warning("witness round failed for a log", origin=source.origin, error=e.message)
                failed.append(e)
        if failed:
            raise failed[0]
        return results

    async def _push_log(self, source: CheckpointSource, policy: WitnessPolicy) -> list[PushResult]:
        st = self.logs.setdefault(source.origin, LogState())
        # (2) the newest checkpoint, to every witness that lacks its cosignature and whose back-off is over
        latest = await source.latest()
        if latest is None:
            return []
        if latest.size > st.quorum_size and st.pending_size is None:
            st.pending_size = latest.size
            created = await _created(source, latest.size)
            st.pending_since = created or self._clock()
        now = self._monotonic()
        due = []
        for witness in policy.witnesses:
            ws = st.witnesses.setdefault(witness.name, WitnessState())
            if latest.size in ws.cosigned or now < ws.next_attempt:
                continue
            due.append((witness, ws))
        results = list(await asyncio.gather(*(self._push(source, latest, w, ws) for w, ws in due)))
        # (4) the verified cosignatures, with the checkpoint; kept in memory only once they are stored
        cosigned = [ws for r, (_, ws) in zip(results, due, strict=True) if r.outcome == "cosigned"]
        if cosigned:
            try:
                await source.add_cosignatures(latest.size, [ws.cosigned[latest.size] for ws in cosigned])
            except GatewayError:
                for ws in cosigned:  # pushed again next round (the witness answers 200 again: same tree)
                    del ws.cosigned[latest.size]
                raise
        # (5) the quorum, and the lag
        cosigned_by = {w.name: st.witnesses[w.name].cosigned[latest.size] for w in policy.witnesses
                       if latest.size in st.witnesses[w.name].cosigned}
        if latest.size <= st.quorum_size or quorum_reached(policy, cosigned_by):
            st.quorum_size = max(st.quorum_size, latest.size)
            st.pending_size = st.pending_since = None
        for ws in st.witnesses.values():  # keep the cosignatures of the newest checkpoints only
            for size in [s for s in ws.cosigned if s < latest.size]:
                del ws.cosigned[size]
        return results

    async def _push(self, source: CheckpointSource, latest: SignedCheckpoint, witness: Witness,
                    ws: WitnessState) -> PushResult:
        text = cp.parse_note(latest.note).text
        judgement = Judgement(outcome="unreachable")
        for _attempt in range(2):  # a 409 corrects `old` and the checkpoint goes once more
            old = ws.size
            if old > latest.size:
                judgement = Judgement(
                    outcome="conflict", known_size=old,
                    error=f"the witness has size {old} of {source.origin}, more than our newest checkpoint "
                          f"{latest.size} (was the log restored from a backup?)")
                break
            try:
                proof = await source.consistency_proof(old, latest.size) if old else []
            except GatewayError as e:  # our own log, not the witness: the back-off applies all the same
                judgement = Judgement(outcome="unreachable", error=f"the consistency proof from {old}: {e.message}")
                break
            try:
                body = request_body(old, proof, latest.note)
                async with asyncio.timeout(self.settings.timeout_seconds):
                    answer = await self._transport.add_checkpoint(
                        witness, body, log_certificate=latest.signing_cert,
                        timeout_seconds=self.settings.timeout_seconds)
            except TimeoutError:
                judgement = Judgement(outcome="unreachable",
                                      error=f"no answer within {self.settings.timeout_seconds:g} s")
                break
            except GatewayError as e:
                judgement = Judgement(outcome="unreachable", error=e.message)
                break
            # (3) the answer
            judgement = judge_answer(answer, text, witness)
            if judgement.outcome != "conflict":
                break
            assert judgement.known_size is not None
            log.info("witness knows another size", origin=source.origin, witness=witness.name,
                     ours=ws.size, theirs=judgement.known_size)
            ws.size = judgement.known_size
        return self._settle(source, latest, witness, ws, judgement)

    def _settle(self, source: CheckpointSource, latest: SignedCheckpoint, witness: Witness, ws: WitnessState,
                judgement: Judgement) -> PushResult:
        ws.last_outcome = judgement.outcome
        ws.last_error = judgement.error
        if judgement.outcome == "cosigned":
            ws.size = latest.size
            ws.cosigned[latest.size] = judgement.cosignatures[0]
            ws.failures = 0
            ws.next_attempt = 0.0
        else:
            ws.failures += 1
            delay = backoff_seconds(ws.failures, low=self.settings.backoff_min_seconds,
                                    high=self.settings.backoff_max_seconds, jitter=self._jitter())
            ws.next_attempt = self._monotonic() + delay
            log.warning("witness push failed; backing off", origin=source.origin, witness=witness.name,
                        size=latest.size, outcome=judgement.outcome, error=judgement.error,
                        failures=ws.failures, retry_in=round(delay, 1))
        if self.observer is not None:
            self.observer.witness_pushed(witness.name, judgement.outcome)
        return PushResult(origin=source.origin, witness=witness.name, size=latest.size,
                          outcome=judgement.outcome, error=judgement.error)

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds every ``interval_seconds`` until ``stop`` is set; errors are logged and the next round tries
        again."""
        while not stop.is_set():
            try:
                await self.run_once()
            except GatewayError as e:
                log.warning("witness round failed", error=e.message)
            except Exception:
                log.exception("witness round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.interval_seconds)


async def _created(source: CheckpointSource, size: int) -> datetime | None:
    created = getattr(source, "created", None)  # optional: a source that knows when its checkpoints were made
    if created is None:
        return None
    when = await created(size)
    return when if isinstance(when, datetime) else None


__all__ = [
    "LOG_CERT_HEADER",
    "OUTCOMES",
    "SIZE_CONTENT_TYPE",
    "Judgement",
    "LogState",
    "MessageLogSource",
    "PushObserver",
    "PushResult",
    "PushSettings",
    "Pusher",
    "WitnessAnswer",
    "WitnessState",
    "WitnessTransport",
    "backoff_seconds",
    "judge_answer",
    "quorum_reached",
    "request_body",
]
