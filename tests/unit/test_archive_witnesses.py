"""Archives with witnesses' cosignatures: the policy's quorum is required, ``--witness-quorum`` changes it and the
report says so, altered cosignatures are named, and two archives that show different histories are a split view
(gateway.messagelog.verify.witnesses and .splitview; docs/witness.md sections 5-6)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from archive_kit import LogWorld, make_log, make_world, write_archive
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.messagelog import checkpoint as cp
from gateway.messagelog import merkle, verify
from gateway.messagelog.archive import LogArchive
from gateway.trust.cosignature import WitnessKey, cosign

SIZES = (20, 60)
W2, W3 = "DEV/GOV/1002/ss2/witness", "DEV/GOV/1002/ss3/witness"


@dataclass
class Setup:
    world: LogWorld
    records: list[bytes]
    keys: dict[str, ed25519.Ed25519PrivateKey]
    dir: Path

    def signer(self, names: tuple[str, ...], sizes: tuple[int, ...] = SIZES) -> Callable[[int, bytes], bytes | None]:
        def lines(size: int, note: bytes) -> bytes | None:
            if size not in sizes:
                return None
            text = cp.parse_note(note).text
            return b"".join(cosign(text, n, self.keys[n], int(self.world.now.timestamp())).line() for n in names)
        return lines

    def archive(self, name: str, **kw: object) -> Path:
        return write_archive(self.world, self.dir / name, kw.pop("records", self.records),  # type: ignore[arg-type]
                             checkpoint_sizes=kw.pop("sizes", SIZES), **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def s(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    d = tmp_path_factory.mktemp("witnessed")
    world = make_world(d)
    keys = {n: ed25519.Ed25519PrivateKey.generate() for n in (W2, W3)}
    servers = {W2: "DEV/GOV/1002/ss2", W3: "DEV/GOV/1002/ss3"}
    world.sim.content["witness_policies"] = [{
        "server": "DEV/GOV/1001/ss1", "quorum": 2,
        "witnesses": [{"vkey": WitnessKey.of_private_key(n, k).vkey, "url": "https://127.0.0.1:5502/witness",
                       "server": servers[n]} for n, k in keys.items()],
    }]
    world.envelope = world.sim.publish()
    return Setup(world=world, records=make_log(world, 30), keys=keys, dir=d)


def run(path: Path, world: LogWorld, **kw: object) -> verify.VerifyReport:
    with LogArchive(path) as a:
        return verify.verify_archive(a, world.anchor, name=path.name, **kw)  # type: ignore[arg-type]


def errors(report: verify.VerifyReport) -> list[tuple[str, str]]:
    return [(f.where, f.problem) for f in report.errors]


def test_checkpoints_cosigned_by_the_quorum_verify(s: Setup) -> None:
    report = run(s.archive("both.zip", cosign=s.signer((W2, W3))), s.world)
    assert report.ok, report.summary()
    assert report.witnesses is not None and report.witnesses.witnessed == 2 and report.witnesses.required == 2
    assert "2 of 2 verified checkpoints cosigned by a quorum of 2" in report.summary()
    with LogArchive(s.dir / "both.zip") as a:
        assert a.manifest.version == 3 and all(c.cosignatures for c in a.checkpoints)


def test_below_the_quorum_is_a_finding_and_the_flag_lowers_it_visibly(s: Setup) -> None:
    path = s.archive("one.zip", cosign=s.signer((W2,)))
    report = run(path, s.world)
    assert errors(report) == [("checkpoint 1 (size 20)", "witness-quorum"),
                              ("checkpoint 2 (size 60)", "witness-quorum")]
    assert "cosigned by 1 witness(es) of the policy, below the quorum of 2" in report.errors[0].message
    lowered = run(path, s.world, witness_quorum=1)
    assert lowered.ok, lowered.summary()
    assert "note archive: witness-quorum: quorum lowered from 2 to 1 by --witness-quorum" in lowered.summary()
    raised = run(s.archive("both3.zip", cosign=s.signer((W2, W3))), s.world, witness_quorum=3)
    assert not raised.ok and "quorum raised from 2 to 3 by --witness-quorum" in raised.summary()


def test_a_checkpoint_inside_a_witnessed_one_is_covered(s: Setup) -> None:
    report = run(s.archive("last.zip", cosign=s.signer((W2, W3), sizes=(60,))), s.world)
    assert report.ok, report.summary()
    assert report.witnesses is not None and report.witnesses.covered == 1
    assert "1 of 2 verified checkpoints cosigned by a quorum of 2, 1 more inside a witnessed one" in report.summary()
    # ... but not the other way round: a witnessed small checkpoint vouches for nothing after it
    report = run(s.archive("first.zip", cosign=s.signer((W2, W3), sizes=(20,))), s.world)
    assert errors(report) == [("checkpoint 2 (size 60)", "witness-quorum")]


def test_an_altered_cosignature_is_named(s: Setup) -> None:
    good = s.signer((W2, W3))

    def altered(size: int, note: bytes) -> bytes | None:
        lines = (good(size, note) or b"").splitlines(keepends=True)
        name, blob = lines[0].decode().rstrip("\n").rsplit(" ", 1)
        raw = bytearray(base64.b64decode(blob))
        raw[-1] ^= 1
        lines[0] = f"{name} {base64.b64encode(bytes(raw)).decode()}\n".encode()
        return b"".join(lines)

    report = run(s.archive("altered.zip", cosign=altered), s.world)
    problems = [(f.where, f.problem, f.message) for f in report.errors]
    assert ("checkpoint 1 (size 20)", "cosignature",
            f"line 1: cosignature: cosignature by {W2} does not verify (altered or forged)") in problems
    assert ("checkpoint 1 (size 20)", "witness-quorum") in [(w, p) for w, p, _ in problems]


def test_an_archive_without_a_policy_requires_nothing_unless_asked(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    path = write_archive(world, tmp_path / "plain.zip", make_log(world, 5))
    report = run(path, world)
    assert report.ok and "witnesses: policy none; no quorum required" in report.summary()
    asked = run(path, world, witness_quorum=1)
    assert errors(asked) == [("checkpoint 1 (size 10)", "witness-quorum")]
    assert "has no witness policy for DEV/GOV/1001/ss1" in asked.errors[0].message


def test_two_archives_of_a_forked_log_are_a_split_view(s: Setup) -> None:
    a = run(s.archive("a.zip", cosign=s.signer((W2, W3))), s.world)
    # the fork: the same first 40 records, then others; checkpoints at 20 (shared), 50 and 60
    fork = s.records[:40] + make_log(s.world, 10)
    b = run(s.archive("b.zip", records=fork, sizes=(20, 50, 60)), s.world, witness_quorum=0)
    assert a.ok and b.ok, (a.summary(), b.summary())
    assert a.evidence is not None and b.evidence is not None
    views = verify.find_split_views(a.evidence, b.evidence)
    kinds = sorted((v.kind, v.first[1].size, v.second[1].size) for v in views)
    assert kinds == [("inconsistent", 50, 60), ("same-size", 60, 60)], kinds
    same = next(v for v in views if v.kind == "same-size")
    assert "two checkpoints of DEV/GOV/1001/ss1 at size 60 with different roots" in same.message()
    text = "\n".join(same.evidence())
    assert "signed checkpoint 2 of a.zip:" in text and "signed checkpoint 3 of b.zip:" in text
    assert text.count("— DEV/GOV/1001/ss1/messagelog ") == 2  # both notes, with the log's signature
    # the inconsistent pair carries a consistency proof a third party can check with the two notes alone
    inc = next(v for v in views if v.kind == "inconsistent" and v.second[0] == "a.zip")
    assert inc.proof is not None and inc.derived_root is not None
    merkle.verify_consistency(50, 60, inc.derived_root, inc.second[1].root_hash, list(inc.proof))
    assert inc.derived_root != inc.first[1].root_hash
    assert verify.find_split_views(a.evidence, a.evidence) == []


def test_a_same_size_split_view_needs_no_records(s: Setup) -> None:
    a = run(s.archive("a2.zip", cosign=s.signer((W2, W3))), s.world)
    fork = s.records[:40] + make_log(s.world, 10)
    # only the first 20 records of the fork, with its signed checkpoint of size 60 (reported as beyond them)
    b = run(s.archive("b2.zip", records=fork[:20], all_records=fork, sizes=(20, 60)), s.world, witness_quorum=0)
    assert ("checkpoint 2 (size 60)", "tree") in errors(b)
    assert a.evidence is not None and b.evidence is not None
    views = verify.find_split_views(a.evidence, b.evidence)
    assert [(v.kind, v.first[1].size, v.second[1].size) for v in views] == [("same-size", 60, 60)]
