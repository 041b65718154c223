"""Offline archive verification: a good archive verifies; each kind of tampering is named precisely."""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from archive_kit import (
    ORIGIN,
    LogWorld,
    exchange_records,
    lines_edit,
    make_log,
    make_world,
    rewrite,
    signed_checkpoint,
    write_archive,
)

from gateway.errors import TrustError
from gateway.identifiers import MemberId
from gateway.messagelog import archive as archive_mod
from gateway.messagelog import checkpoint as cp
from gateway.messagelog import record, verify
from gateway.messagelog.archive import LogArchive, Manifest
from gateway.messagelog.merkle import leaf_hash
from gateway.protocol.signatures import KeySigner

EXCHANGES = 30  # 60 records
SIZES = (20, 60)


@dataclass
class Base:
    world: LogWorld
    records: list[bytes]
    path: Path


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    d = tmp_path_factory.mktemp("archive")
    world = make_world(d)
    records = make_log(world, EXCHANGES)
    path = write_archive(world, d / "good.zip", records, checkpoint_sizes=SIZES)
    return Base(world=world, records=records, path=path)


def run(path: Path, world: LogWorld, **kw: object) -> verify.VerifyReport:
    with LogArchive(path) as a:
        return verify.verify_archive(a, world.anchor, **kw)  # type: ignore[arg-type]


CHUNK = "records/00000000000000000000.jsonl"


def flip(lines: list[bytes], n: int = 6) -> list[bytes]:
    line = bytearray(lines[n])
    i = line.index(b'"path":"/persons/1') + len(b'"path":"/persons/')
    line[i] ^= 0x01  # '1' -> '0': still a well-formed record
    lines[n] = bytes(line)
    return lines


def swap(lines: list[bytes]) -> list[bytes]:
    lines[20], lines[21] = lines[21], lines[20]
    return lines


def delete(lines: list[bytes]) -> list[bytes]:
    del lines[12]
    return lines


def insert(lines: list[bytes]) -> list[bytes]:
    lines.insert(30, lines[5])
    return lines


def test_good_archive_verifies(base: Base) -> None:
    report = run(base.path, base.world)
    assert report.ok, report.summary()
    assert report.findings == []
    assert (report.records_read, report.records_valid, report.checkpoints_verified) == (60, 60, 2)
    assert report.covered_until == 60
    assert report.configurations == (base.world.sim.version,)
    assert "RESULT: OK" in report.summary()


def test_parallel_runner_gives_the_same_report(base: Base) -> None:
    report = run(base.path, base.world, runner=verify.ProcessPoolRunner(2))
    assert report.ok, report.summary()
    assert report.records_valid == 60


def _replace_checkpoint(world: LogWorld, records: list[bytes]) -> Callable[[bytes], bytes]:
    other = world.pki.issue("sign", MemberId.parse("DEV/GOV/1003"))
    signer = KeySigner(key=other.key, cert=other.cert)
    note, _ = signed_checkpoint(world, [leaf_hash(r) for r in records], 60, signer=signer)
    return lambda _: note


# (name, edits by member, where, problem, text in message)
TAMPERING: list[tuple[str, Callable[[Base], dict[str, Callable[[bytes], bytes | None]]], str, str, str]] = [
    ("flipped byte", lambda b: {CHUNK: lines_edit(flip)}, "record 6", "altered",
     "do not hash to the leaf hash that the log stored for record 6"),
    ("deleted record", lambda b: {CHUNK: lines_edit(delete)}, "record 12", "missing", "not in the archive"),
    ("reordered records", lambda b: {CHUNK: lines_edit(swap)}, "record 21", "out-of-order", "records reordered"),
    ("duplicated record", lambda b: {CHUNK: lines_edit(insert)}, "record 5", "duplicate", "repeats record 5"),
    ("checkpoint by another key", lambda b: {"checkpoints/000002.note": _replace_checkpoint(b.world, b.records)},
     "checkpoint 2 (size 60)", "checkpoint-signature", "not signed by any signing key of the log"),
    ("stripped timestamp", lambda b: {"checkpoints/000002.tst": lambda _: None},
     "checkpoint 2 (size 60)", "timestamp", "missing or stripped"),
    ("timestamp of another checkpoint", lambda b: {"checkpoints/000002.tst": lambda _: _token_of(b, 1)},
     "checkpoint 2 (size 60)", "timestamp", "message imprint does not match"),
    ("leaf hashes rewritten to hide a change", lambda b: {CHUNK: lines_edit(flip), "leaves.bin": _leaves_of(flip)},
     "checkpoint 2 (size 60)", "tree", "cannot be named"),
]


def _token_of(b: Base, n: int) -> bytes:
    with zipfile.ZipFile(b.path) as z:
        return z.read(f"checkpoints/{n:06d}.tst")


def _leaves_of(fn: Callable[[list[bytes]], list[bytes]]) -> Callable[[bytes], bytes]:
    def edit(_: bytes) -> bytes:
        return b""  # replaced in the test, which knows the records
    edit.fn = fn  # type: ignore[attr-defined]
    return edit


@pytest.mark.parametrize(("name", "edits", "where", "problem", "text"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_tampering_is_named(
    base: Base, tmp_path: Path, name: str, edits: Callable[[Base], dict[str, Callable[[bytes], bytes | None]]],
    where: str, problem: str, text: str,
) -> None:
    e = edits(base)
    # a manifest without the stripped member, leaves.bin recomputed where the test says so
    if "leaves.bin" in e:
        fn = e["leaves.bin"].fn  # type: ignore[attr-defined]
        e["leaves.bin"] = lambda _: b"".join(leaf_hash(r) for r in fn(list(base.records)))
    if e.get("checkpoints/000002.tst") is not None and name == "stripped timestamp":
        def manifest(data: bytes) -> bytes:
            m = json.loads(data)
            m["checkpoints"][1]["timestamp"] = None
            return Manifest.from_bytes(_canon(m)).to_bytes()
        e[archive_mod.MANIFEST] = manifest
    path = rewrite(base.path, tmp_path / "tampered.zip", e)
    report = run(path, base.world)
    assert not report.ok
    hits = [f for f in report.errors if f.where == where and f.problem == problem]
    assert hits, report.summary()
    assert text in hits[0].message, report.summary()


def _canon(obj: object) -> bytes:
    from gateway.trust.canonical import canonical_bytes

    return canonical_bytes(obj)


def test_reordering_names_both_records(base: Base, tmp_path: Path) -> None:
    path = rewrite(base.path, tmp_path / "t.zip", {CHUNK: lines_edit(swap)})
    report = run(path, base.world)
    named = {f.seq for f in report.errors if f.problem == "out-of-order"}
    assert named & {20, 21}, report.summary()
    assert any(f.problem == "tree" and "see the records named" in f.message for f in report.errors)
    # nothing else is blamed: the records themselves are intact
    assert {f.problem for f in report.errors} <= {"out-of-order", "tree", "coverage"}


def test_flipped_byte_breaks_the_signature_of_that_record_only(base: Base, tmp_path: Path) -> None:
    path = rewrite(base.path, tmp_path / "t.zip", {CHUNK: lines_edit(flip)})
    report = run(path, base.world)
    # record 6 is a request: its path is signed, so the signature fails too
    assert {f.seq for f in report.errors if f.seq is not None} == {6}
    assert any(f.problem == "signature" and f.seq == 6 for f in report.errors), report.summary()
    assert report.records_valid == 59


def test_deleted_record_shifts_no_blame(base: Base, tmp_path: Path) -> None:
    path = rewrite(base.path, tmp_path / "t.zip", {CHUNK: lines_edit(delete)})
    report = run(path, base.world)
    assert {(f.seq, f.problem) for f in report.errors if f.seq is not None} == {(12, "missing")}, report.summary()


@pytest.mark.parametrize(
    ("content", "text"),
    [
        (b"hello, I am not an archive\n", "not a log archive (not a ZIP file)"),
        (b"", "not a log archive (not a ZIP file)"),
    ],
    ids=["text file", "empty file"],
)
def test_non_archive_is_refused(tmp_path: Path, content: bytes, text: str) -> None:
    p = tmp_path / "x.zip"
    p.write_bytes(content)
    with pytest.raises(TrustError, match=r"archive: .*" + text.replace("(", r"\(").replace(")", r"\)")):
        LogArchive(p)


@pytest.mark.parametrize("keep", [0.5, 0.99], ids=["half", "last bytes cut"])
def test_truncated_archive_is_refused(base: Base, tmp_path: Path, keep: float) -> None:
    data = base.path.read_bytes()
    p = tmp_path / "cut.zip"
    p.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(TrustError, match="damaged or truncated ZIP file"):
        LogArchive(p)


def test_zip_without_manifest_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "other.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(TrustError, match=r"a ZIP file but not a log archive \(no manifest.json\)"):
        LogArchive(p)


def test_raw_byte_flip_in_the_file_is_still_attributed(base: Base, tmp_path: Path) -> None:
    # flipping a byte of the file itself (CRC now wrong): stored members let the verifier name the record
    data = bytearray(base.path.read_bytes())
    record6 = base.records[6]
    i = bytes(data).index(record6) + record6.index(b'"path":"/persons/1') + len(b'"path":"/persons/')
    data[i] ^= 0x01
    p = tmp_path / "raw.zip"
    p.write_bytes(bytes(data))
    report = run(p, base.world)
    assert any(f.seq == 6 and f.problem == "altered" for f in report.errors), report.summary()


def test_archive_from_the_middle_of_the_log(base: Base, tmp_path: Path) -> None:
    # records 20..59 with the compact range of 0..19: both checkpoints are checked, the first from the prefix
    path = write_archive(base.world, tmp_path / "mid.zip", base.records[20:], checkpoint_sizes=SIZES, start=20,
                         all_records=base.records)
    report = run(path, base.world)
    assert report.ok, report.summary()
    assert (report.start, report.end, report.covered_until) == (20, 60, 60)


def test_uncovered_records_are_reported(base: Base, tmp_path: Path) -> None:
    path = write_archive(base.world, tmp_path / "unc.zip", base.records, checkpoint_sizes=(20,))
    report = run(path, base.world)
    assert [(f.where, f.problem) for f in report.errors] == [("records 20..59", "coverage")]


def test_multi_chunk_archive_in_parallel(base: Base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_mod, "CHUNK_RECORDS", 8)
    path = write_archive(base.world, tmp_path / "chunks.zip", base.records, checkpoint_sizes=SIZES)
    with LogArchive(path) as a:
        assert len(a.manifest.chunks) == 8
    # delete record 44 (in the sixth chunk): the later chunks keep their names
    name = archive_mod.chunk_name(40)
    tampered = rewrite(path, tmp_path / "t.zip", {name: lines_edit(lambda ls: ls[:4] + ls[5:])})
    report = run(tampered, base.world, runner=verify.ProcessPoolRunner(2))
    assert {(f.seq, f.problem) for f in report.errors if f.seq is not None} == {(44, "missing")}, report.summary()


def test_revoked_signing_certificate_is_named(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    records = make_log(world, 2)
    # a third exchange signed with a certificate that the OCSP response says is revoked
    revoked = world.pki.issue_sign(MemberId.parse("DEV/GOV/1001"))
    world.pki.revoke(revoked, now=world.now - timedelta(hours=1))
    bad_world = LogWorld(**{**world.__dict__, "consumer": revoked,
                            "consumer_ocsp": world.pki.ocsp_response(revoked, now=world.now - timedelta(minutes=5))})
    req, resp = exchange_records(bad_world, created=world.now - timedelta(minutes=1))
    records += [req.encode(), resp.encode()]
    path = write_archive(world, tmp_path / "rev.zip", records, blobs={**world.blobs, **bad_world.blobs})
    report = run(path, world)
    assert [(f.seq, f.problem) for f in report.errors] == [(4, "certificate")], report.summary()
    assert "revoked" in report.errors[0].message


def test_record_of_another_origin_is_named(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    records = make_log(world, 2)
    other = make_log(world, 1, origin="DEV/GOV/1001/ss9")
    records[1] = other[1]
    path = write_archive(world, tmp_path / "o.zip", records)
    report = run(path, world)
    assert [(f.seq, f.problem) for f in report.errors] == [(1, "origin")], report.summary()


def test_configuration_not_signed_by_the_anchor(base: Base, tmp_path: Path) -> None:
    stranger = make_world(tmp_path / "stranger")
    name = archive_mod.hashed_name("globalconf", base.world.envelope, "json")
    path = rewrite(base.path, tmp_path / "c.zip", {name: lambda _: stranger.envelope})
    report = run(path, base.world)
    assert [(f.where, f.problem) for f in report.errors] == [
        (f"global configuration {name}", "configuration"), ("archive", "configuration")]
    assert "not signed by any key in the anchor" in report.errors[0].message


def test_record_fields_match_record_module() -> None:
    assert verify.RECORD_FIELDS == frozenset(record._FIELDS)


def test_checkpoint_origin_of_another_log(base: Base, tmp_path: Path) -> None:
    note, token = signed_checkpoint(base.world, [leaf_hash(r) for r in base.records], 60, origin="DEV/GOV/1001/ss2")
    path = rewrite(base.path, tmp_path / "o.zip", {"checkpoints/000002.note": lambda _: note,
                                                   "checkpoints/000002.tst": lambda _: token})
    report = run(path, base.world)
    hits = [f for f in report.errors if f.problem == "origin"]
    assert hits and hits[0].where == "checkpoint 2 (size 60)"
    assert cp.checkpoint_origin(ORIGIN) in hits[0].message


def test_compare_with_index_table() -> None:
    idx = [hashlib.sha256(bytes([i])).digest() for i in range(6)]
    x = hashlib.sha256(b"x").digest()
    cases = [
        (idx, []),
        ([*idx[:2], x, *idx[3:]], [(2, 12, "altered")]),
        (idx[:2] + idx[3:], [(None, 12, "missing")]),
        ([*idx, x], [(6, None, "inserted")]),
        ([idx[0], idx[2], idx[1], *idx[3:]], [(1, 12, "out-of-order")]),
    ]
    for actual, expected in cases:
        got = [(line, seq, problem) for line, seq, problem, _ in verify.compare_with_index(actual, idx, 10)]
        assert got == expected
