"""The pusher's logic with a fake source and in-memory C2SP witnesses: request bodies, 409 correction, back-off,
cosignature verification, quorum and lag (gateway.witness.pusher; docs/witness.md section 4)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.errors import MessageLogError, PeerError, TrustError
from gateway.globalconf.model import Witness, WitnessPolicy
from gateway.identifiers import SecurityServerId
from gateway.messagelog import checkpoint as cp
from gateway.messagelog import merkle
from gateway.trust.cosignature import Cosignature, WitnessKey, cosign
from gateway.witness.pusher import (
    LOG_CERT_HEADER,
    SIZE_CONTENT_TYPE,
    Pusher,
    PushSettings,
    WitnessAnswer,
    backoff_seconds,
    judge_answer,
    request_body,
)
from gateway.witness.source import SignedCheckpoint

SS1 = SecurityServerId.parse("DEV/GOV/1001/ss1")
SS2 = SecurityServerId.parse("DEV/GOV/1002/ss2")
SS3 = SecurityServerId.parse("DEV/GOV/1003/ss3")
ORIGIN = cp.checkpoint_origin(str(SS1))
T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def fake_note(text: bytes) -> bytes:
    """A signed note with a placeholder log signature (the pusher does not check the log's own signature)."""
    sig = cp.NoteSignature(key_name=ORIGIN, key_id=b"\x01\x02\x03\x04", signature=b"\x00" * 8)
    return cp.SignedNote(text=text, signatures=(sig,)).encode()


class FakeLog:
    """A CheckpointSource over a list of leaves, with checkpoints made by :meth:`checkpoint`."""

    def __init__(self) -> None:
        self.leaves: list[bytes] = []
        self.checkpoints: list[SignedCheckpoint] = []
        self.made: dict[int, datetime] = {}
        self.kept: dict[int, list[Cosignature]] = {}
        self.fail_with: Exception | None = None

    @property
    def origin(self) -> str:
        return ORIGIN

    def checkpoint(self, records: int, when: datetime) -> SignedCheckpoint:
        self.leaves += [merkle.leaf_hash(f"r{len(self.leaves) + i}".encode()) for i in range(records)]
        size = len(self.leaves)
        text = cp.Checkpoint(origin=ORIGIN, size=size, root_hash=merkle.root(self.leaves)).text()
        c = SignedCheckpoint(size=size, note=fake_note(text), signing_cert=b"cert-der")
        self.checkpoints.append(c)
        self.made[size] = when
        return c

    async def latest(self) -> SignedCheckpoint | None:
        return self.checkpoints[-1] if self.checkpoints else None

    async def created(self, size: int) -> datetime | None:
        return self.made.get(size)

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return merkle.consistency_proof(self.leaves, old_size, new_size) if old_size else []

    async def add_cosignatures(self, size: int, cosignatures: Sequence[Cosignature]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        mine = self.kept.setdefault(size, [])
        mine += [c for c in cosignatures if all(c.name != k.name for k in mine)]


@dataclass
class MemoryWitness:
    """c2sp.org/tlog-witness@v1.0.0 in memory: sizes and roots per origin, consistency proofs checked."""

    name: str
    key: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)
    known: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    down: bool = False
    wrong_key: bool = False  # answers with a cosignature by another key under its name
    bodies: list[bytes] = field(default_factory=list)

    @property
    def public(self) -> WitnessKey:
        return WitnessKey.of_private_key(self.name, self.key)

    def answer(self, body: bytes) -> WitnessAnswer:
        self.bodies.append(body)
        head, _, note = body.partition(b"\n\n")
        lines = head.split(b"\n")
        old = int(lines[0].removeprefix(b"old "))
        proof = [base64.b64decode(h) for h in lines[1:]]
        text = cp.parse_note(note).text
        c = cp.parse_checkpoint(text)
        size, root = self.known.get(c.origin, (0, merkle.root([])))
        if old != size:
            return WitnessAnswer(status=409, content_type=SIZE_CONTENT_TYPE, body=f"{size}\n".encode())
        if old > c.size:
            return WitnessAnswer(status=400, content_type="text/plain", body=b"old size too large")
        if old == c.size and root != c.root_hash:
            return WitnessAnswer(status=422, content_type="text/plain", body=b"same size, another root")
        if 0 < old < c.size:
            try:
                merkle.verify_consistency(old, c.size, root, c.root_hash, proof)
            except TrustError:
                return WitnessAnswer(status=422, content_type="text/plain", body=b"proof fails")
        self.known[c.origin] = (c.size, c.root_hash)
        signer = ed25519.Ed25519PrivateKey.generate() if self.wrong_key else self.key
        line = cosign(text, self.name, signer, int(T0.timestamp())).line()
        return WitnessAnswer(status=200, content_type="text/x.tlog.cosignature", body=line)


class FakeTransport:
    def __init__(self, witnesses: dict[str, MemoryWitness]) -> None:
        self.witnesses = witnesses
        self.headers: list[bytes] = []

    async def add_checkpoint(self, witness: Witness, body: bytes, *, log_certificate: bytes,
                             timeout_seconds: float) -> WitnessAnswer:
        self.headers.append(log_certificate)
        w = self.witnesses[witness.name]
        if w.down:
            raise PeerError(f"cannot reach witness {witness.name}")
        return w.answer(body)


@dataclass
class Conf:
    policy: WitnessPolicy | None

    def witness_policy(self, server_id: SecurityServerId) -> WitnessPolicy | None:
        return self.policy if self.policy is not None and server_id == self.policy.server else None


class Clock:
    def __init__(self) -> None:
        self.now = T0
        self.mono = 1000.0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


@dataclass
class Setup:
    log: FakeLog
    witnesses: dict[str, MemoryWitness]
    conf: Conf
    clock: Clock
    pusher: Pusher
    transport: FakeTransport


def setup(quorum: int = 2) -> Setup:
    ws = {n: MemoryWitness(n) for n in ("DEV/GOV/1002/ss2/witness", "DEV/GOV/1003/ss3/witness")}
    servers = {"DEV/GOV/1002/ss2/witness": SS2, "DEV/GOV/1003/ss3/witness": SS3}
    policy = WitnessPolicy(server=SS1, quorum=quorum, witnesses=tuple(
        Witness(key=w.public, url=f"https://127.0.0.1:{5500 + i}/witness", server=servers[w.name])
        for i, w in enumerate(ws.values())))
    conf = Conf(policy)
    clock = Clock()
    log = FakeLog()
    transport = FakeTransport(ws)
    pusher = Pusher(sources=[log], server_id=SS1, conf=lambda: conf, transport=transport,  # type: ignore[arg-type, return-value]
                    settings=PushSettings(backoff_min_seconds=5, backoff_max_seconds=60), clock=clock,
                    monotonic=lambda: clock.mono, jitter=lambda: 0.0)
    return Setup(log=log, witnesses=ws, conf=conf, clock=clock, pusher=pusher, transport=transport)


def test_request_body_is_the_c2sp_form() -> None:
    note = fake_note(cp.Checkpoint(origin=ORIGIN, size=5, root_hash=b"\x00" * 32).text())
    assert request_body(0, [], note) == b"old 0\n\n" + note
    body = request_body(3, [b"\x01" * 32, b"\x02" * 32], note)
    assert body == b"old 3\n" + base64.b64encode(b"\x01" * 32) + b"\n" + base64.b64encode(b"\x02" * 32) + b"\n\n" + note
    with pytest.raises(TrustError, match="at most 63 hashes"):
        request_body(3, [b"\x00" * 32] * 64, note)
    with pytest.raises(TrustError, match="from size 0 must be empty"):
        request_body(0, [b"\x00" * 32], note)


async def test_every_witness_cosigns_and_the_quorum_is_kept() -> None:
    s = setup()
    s.log.checkpoint(3, T0)
    results = await s.pusher.run_once()
    assert sorted(r.outcome for r in results) == ["cosigned", "cosigned"]
    assert sorted(c.name for c in s.log.kept[3]) == sorted(s.witnesses)
    assert s.transport.headers == [b"cert-der", b"cert-der"]  # the log certificate travels with each push
    assert s.pusher.lag_seconds(T0 + timedelta(seconds=30)) == {ORIGIN: 0.0}
    # Nothing new: no push. A new checkpoint goes with old = 3 and the proof from 3 to 7.
    assert await s.pusher.run_once() == []
    s.log.checkpoint(4, T0)
    assert [r.outcome for r in await s.pusher.run_once()] == ["cosigned", "cosigned"]
    body = s.witnesses["DEV/GOV/1002/ss2/witness"].bodies[-1]
    assert body.startswith(b"old 3\n") and len(body.split(b"\n\n")[0].split(b"\n")) == 1 + len(
        merkle.consistency_proof(s.log.leaves, 3, 7))


async def test_a_409_corrects_the_old_size_in_the_same_round() -> None:
    s = setup()
    s.log.checkpoint(3, T0)
    await s.pusher.run_once()
    # A restarted pusher forgets what the witnesses cosigned: it says old 0, gets 409 "3", and goes again.
    restarted = Pusher(sources=[s.log], server_id=SS1, conf=lambda: s.conf, transport=s.transport,  # type: ignore[arg-type, return-value]
                       clock=s.clock, monotonic=lambda: s.clock.mono, jitter=lambda: 0.0)
    s.log.checkpoint(2, T0)
    results = await restarted.run_once()
    assert [r.outcome for r in results] == ["cosigned", "cosigned"]
    bodies = s.witnesses["DEV/GOV/1003/ss3/witness"].bodies
    assert bodies[-2].startswith(b"old 0\n") and bodies[-1].startswith(b"old 3\n")
    assert restarted.logs[ORIGIN].witnesses["DEV/GOV/1003/ss3/witness"].size == 5


def test_a_409_must_carry_the_size_as_text_x_tlog_size() -> None:
    w = MemoryWitness("DEV/GOV/1002/ss2/witness")
    wit = Witness(key=w.public, url="https://127.0.0.1:1/witness", server=SS2)
    text = cp.Checkpoint(origin=ORIGIN, size=5, root_hash=b"\x00" * 32).text()
    ok = judge_answer(WitnessAnswer(status=409, content_type="text/x.tlog.size", body=b"4\n"), text, wit)
    assert ok.outcome == "conflict" and ok.known_size == 4
    for ctype, body in (("text/plain", b"4\n"), ("text/x.tlog.size", b"04\n"), ("text/x.tlog.size", b"4")):
        bad = judge_answer(WitnessAnswer(status=409, content_type=ctype, body=body), text, wit)
        assert bad.outcome == "bad_answer" and "text/x.tlog.size" in bad.error
    refused = judge_answer(WitnessAnswer(status=422, content_type="text/plain", body=b"proof fails"), text, wit)
    assert refused.outcome == "refused" and refused.error == "HTTP 422: proof fails"


async def test_a_cosignature_that_does_not_verify_is_not_kept_and_backs_off() -> None:
    s = setup()
    s.witnesses["DEV/GOV/1003/ss3/witness"].wrong_key = True
    s.log.checkpoint(3, T0)
    results = {r.witness: r for r in await s.pusher.run_once()}
    bad = results["DEV/GOV/1003/ss3/witness"]
    assert bad.outcome == "bad_answer" and "no cosignature by the policy's key" in bad.error
    assert [c.name for c in s.log.kept[3]] == ["DEV/GOV/1002/ss2/witness"]  # only the verified one
    # below quorum: the lag grows from the checkpoint's creation
    assert s.pusher.lag_seconds(T0 + timedelta(seconds=40)) == {ORIGIN: 40.0}


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    assert [backoff_seconds(n, low=5, high=60, jitter=0) for n in range(6)] == [0, 5, 10, 20, 40, 60]
    assert backoff_seconds(2, low=5, high=60, jitter=1.0) == 12.5
    assert backoff_seconds(500, low=5, high=60, jitter=0) == 60


async def test_a_witness_that_is_down_is_backed_off_and_the_lag_is_reported() -> None:
    s = setup()
    down = s.witnesses["DEV/GOV/1003/ss3/witness"]
    down.down = True
    s.log.checkpoint(3, T0)
    results = {r.witness: r for r in await s.pusher.run_once()}
    assert results["DEV/GOV/1003/ss3/witness"].outcome == "unreachable"
    assert "cannot reach" in results["DEV/GOV/1003/ss3/witness"].error
    # within the back-off (5 s after the first failure) it is not tried again
    s.clock.advance(4)
    assert await s.pusher.run_once() == []
    s.clock.advance(2)
    assert [r.outcome for r in await s.pusher.run_once()] == ["unreachable"]
    s.clock.advance(9)  # second failure: 10 s
    assert await s.pusher.run_once() == []
    assert s.pusher.lag_seconds(s.clock()) == {ORIGIN: 15.0}
    # back: the next attempt cosigns and the lag is 0
    down.down = False
    s.clock.advance(2)
    assert [r.outcome for r in await s.pusher.run_once()] == ["cosigned"]
    assert s.pusher.lag_seconds(s.clock()) == {ORIGIN: 0.0}


async def test_a_quorum_of_one_is_reached_with_one_witness_down() -> None:
    s = setup(quorum=1)
    s.witnesses["DEV/GOV/1003/ss3/witness"].down = True
    s.log.checkpoint(3, T0)
    await s.pusher.run_once()
    assert s.pusher.lag_seconds(T0 + timedelta(seconds=100)) == {ORIGIN: 0.0}


async def test_the_policy_is_read_each_round() -> None:
    s = setup()
    s.log.checkpoint(3, T0)
    policy = s.conf.policy
    s.conf.policy = None
    assert await s.pusher.run_once() == []  # no policy: nothing is pushed and there is no lag
    assert s.pusher.lag_seconds(T0 + timedelta(hours=1)) == {ORIGIN: 0.0}
    s.conf.policy = policy
    assert len(await s.pusher.run_once()) == 2


async def test_a_forked_checkpoint_is_refused_by_the_witnesses() -> None:
    s = setup()
    s.log.checkpoint(3, T0)
    await s.pusher.run_once()
    # the log signs another tree of the same size: every witness refuses it (422) and nothing is kept
    fork = FakeLog()
    fork.checkpoint(2, T0)
    fork.leaves.append(merkle.leaf_hash(b"forged"))
    text = cp.Checkpoint(origin=ORIGIN, size=3, root_hash=merkle.root(fork.leaves)).text()
    fork.checkpoints = [SignedCheckpoint(size=3, note=fake_note(text), signing_cert=b"cert-der")]
    s.pusher.sources = [fork]
    for st in s.pusher.logs[ORIGIN].witnesses.values():
        st.cosigned.clear()  # as after a restart of the forked server
    results = await s.pusher.run_once()
    assert [(r.outcome, r.error) for r in results] == [("refused", "HTTP 422: same size, another root")] * 2
    assert fork.kept == {}


async def test_cosignatures_that_cannot_be_stored_are_pushed_again() -> None:
    s = setup()
    s.log.checkpoint(3, T0)
    s.log.fail_with = MessageLogError("message log access failed: disk full")
    with pytest.raises(MessageLogError, match="disk full"):
        await s.pusher.run_once()
    assert s.log.kept == {} and s.pusher.lag_seconds(T0 + timedelta(seconds=5)) == {ORIGIN: 5.0}
    s.log.fail_with = None
    assert [r.outcome for r in await s.pusher.run_once()] == ["cosigned", "cosigned"]
    assert len(s.log.kept[3]) == 2


def test_header_name() -> None:
    assert LOG_CERT_HEADER == "X-Gateway-Log-Certificate"
