"""Audit archives written and verified offline (no database, no sockets): what each defect is reported as, and the
precise errors for files that are not audit archives."""

from __future__ import annotations

import hashlib
import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from archive_kit import LogWorld, make_world, stranger_signer
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.admin.auditarchive import ArchivedCheckpoint, is_audit_archive, read_archive, write_archive
from gateway.admin.auditlog import EntryFields, encode_entry
from gateway.admin.auditverify import verify_audit_archive
from gateway.cli import main
from gateway.errors import MalformedArchive
from gateway.messagelog import checkpoint as cp
from gateway.messagelog.merkle import MerkleTree, leaf_hash
from gateway.messagelog.verify import find_split_views
from gateway.protocol.signatures import KeySigner
from gateway.trust import cosignature, timestamp
from gateway.trust.canonical import canonical_bytes

ORIGIN = "DEV/GOV/1001/ss1/audit"
WITNESS = "DEV/GOV/1002/ss2/witness"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> LogWorld:
    return make_world(tmp_path_factory.mktemp("audit-world"))


def _entries(n: int) -> list[bytes]:
    at = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    return [encode_entry(EntryFields(seq=i, at=at + timedelta(seconds=i), actor="alice", auth="jwt",
                                     remote="127.0.0.1", action="addClient", method="POST", path="/api/v1/clients",
                                     result="success", status=201, details="{}")) for i in range(n)]


def _checkpoint(world: LogWorld, leaves: list[bytes], size: int, *, signer: KeySigner | None = None,
                origin: str = ORIGIN, stamped: bool = True, cosigners: tuple[ed25519.Ed25519PrivateKey, ...] = (),
                ) -> ArchivedCheckpoint:
    tree = MerkleTree()
    tree.extend(leaves[:size])
    note = cp.sign_checkpoint(cp.Checkpoint(origin=origin, size=size, root_hash=tree.root()),
                              signer or world.consumer_signer)
    digest = hashlib.sha256(note).digest()
    token = timestamp.check_response(world.pki.timestamp_response(digest, now=world.now), data_hash=digest,
                                     tsa_cert=world.pki.tsa_cert).token_der if stamped else None
    text = cp.parse_note(note).text
    lines = tuple(cosignature.cosign(text, WITNESS, k, 1_800_000_000).line().rstrip(b"\n") for k in cosigners)
    return ArchivedCheckpoint(note=note, timestamp=token, cosignatures=lines)


def _write(world: LogWorld, path: Path, *, entries: list[bytes] | None = None, leaves: list[bytes] | None = None,
           checkpoints: list[ArchivedCheckpoint] | None = None, envelope: bytes | None = None) -> Path:
    entries = entries if entries is not None else _entries(6)
    leaves = leaves if leaves is not None else [leaf_hash(e) for e in entries]
    if checkpoints is None:
        checkpoints = [_checkpoint(world, leaves, 3), _checkpoint(world, leaves, 6)]
    write_archive(path, origin=ORIGIN, exported_at=world.now, entries=entries, leaves=leaves,
                  checkpoints=checkpoints, globalconfs=[envelope or world.envelope],
                  certificates=[world.consumer.cert.public_bytes(Encoding.DER)],
                  ocsp_responses=[world.consumer_ocsp])
    return path


def _errors(world: LogWorld, path: Path, **kw: Any) -> list[tuple[str, str]]:
    report = verify_audit_archive(read_archive(path), world.anchor, **kw)
    return [(f.where, f.problem) for f in report.errors]


def test_a_good_archive_verifies(world: LogWorld, tmp_path: Path) -> None:
    path = _write(world, tmp_path / "a.zip")
    assert is_audit_archive(path)
    report = verify_audit_archive(read_archive(path), world.anchor)
    assert report.ok, report.summary()
    assert (report.entries, report.checkpoints_verified, report.covered_until) == (6, 2, 6)
    assert report.witnessed == "no witness policy in the global configuration"


def test_defects_are_named(world: LogWorld, tmp_path: Path) -> None:
    entries = _entries(6)
    leaves = [leaf_hash(e) for e in entries]
    changed = [*entries[:4], entries[4].replace(b'"alice"', b'"mallory"'), entries[5]]
    assert _errors(world, _write(world, tmp_path / "altered.zip", entries=changed, leaves=leaves)) == [
        ("entry 4", "altered")]
    rewritten = [leaf_hash(e) for e in changed]
    assert _errors(world, _write(world, tmp_path / "rewritten.zip", entries=changed, leaves=rewritten,
                                 checkpoints=[_checkpoint(world, leaves, 3), _checkpoint(world, leaves, 6)])) == [
        ("entries 3..5", "rewritten"), ("entries 3..5", "uncovered")]
    bad_line = [*entries[:2], b'{"v":1}', *entries[3:]]
    assert ("entry 2", "malformed") in _errors(world, _write(world, tmp_path / "bad.zip", entries=bad_line,
                                                             leaves=leaves))
    stranger = _checkpoint(world, leaves, 6, signer=stranger_signer())
    assert _errors(world, _write(world, tmp_path / "stranger.zip",
                                 checkpoints=[_checkpoint(world, leaves, 3), stranger])) == [
        ("checkpoint 2 (size 6)", "checkpoint-signature"), ("entries 3..5", "uncovered")]
    unstamped = _checkpoint(world, leaves, 6, stamped=False)
    assert _errors(world, _write(world, tmp_path / "unstamped.zip",
                                 checkpoints=[_checkpoint(world, leaves, 3), unstamped])) == [
        ("checkpoint 2 (size 6)", "timestamp"), ("entries 3..5", "uncovered")]
    other = _checkpoint(world, leaves, 6, origin="DEV/GOV/1001/ss1/messagelog")
    assert _errors(world, _write(world, tmp_path / "origin.zip", checkpoints=[other])) == [
        ("checkpoint 1 (size 6)", "origin"), ("entries 0..5", "uncovered")]


def test_the_witness_policy_is_enforced(world: LogWorld, tmp_path: Path) -> None:
    good, other = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    sim = world.sim
    saved = json.loads(json.dumps(sim.content))
    try:
        sim.content["witness_policies"] = [{"server": "DEV/GOV/1001/ss1", "quorum": 1, "witnesses": [
            {"vkey": cosignature.WitnessKey.of_private_key(WITNESS, good).vkey,
             "url": "https://127.0.0.1:5502/witness", "server": "DEV/GOV/1002/ss2"}]}]
        envelope = sim.publish()
    finally:
        sim.content = saved
    leaves = [leaf_hash(e) for e in _entries(6)]
    for name, keys, expected in (
        ("cosigned", (good,), []),
        ("none", (), [("checkpoint 1 (size 6)", "witnesses")]),
        ("another key (ignored)", (other,), [("checkpoint 1 (size 6)", "witnesses")]),
    ):
        path = _write(world, tmp_path / "w.zip", checkpoints=[_checkpoint(world, leaves, 6, cosigners=keys)],
                      envelope=envelope)
        assert _errors(world, path) == expected, name
    # a cosignature line by the policy's key whose signature does not verify
    signed = _checkpoint(world, leaves, 6, cosigners=(good,))
    line = cosignature.parse_line(signed.cosignatures[0])
    broken = cosignature.Cosignature(name=line.name, key_id=line.key_id, timestamp=line.timestamp + 1,
                                     signature=line.signature)
    path = _write(world, tmp_path / "broken.zip", envelope=envelope, checkpoints=[ArchivedCheckpoint(
        note=signed.note, timestamp=signed.timestamp, cosignatures=(broken.line().rstrip(b"\n"),))])
    assert _errors(world, path) == [("checkpoint 1 (size 6)", "cosignature"), ("checkpoint 1 (size 6)", "witnesses")]


def _edit_manifest(path: Path, out: Path, change: Any) -> Path:
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "manifest.json":
                m = json.loads(data)
                change(m)
                data = canonical_bytes(m)
            dst.writestr(info, data)
    return out


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.update(format="gateway-messagelog-archive"), "manifest.json is not a gateway-audit-archive manifest"),
    (lambda m: m.update(version=2), "version 2 is not supported (this verifier knows 1)"),
    (lambda m: m.pop("leaves"), "missing ['leaves']"),
    (lambda m: m.update(size=7), "the manifest says 7 entries; entries.jsonl has 6 lines and leaves.bin 6"),
    (lambda m: m["checkpoints"][0].update(note="../etc/passwd"), "checkpoints[0].note is malformed"),
    (lambda m: m["certificates"].append("certs/" + "0" * 64 + ".der"), "named in the manifest is missing"),
])
def test_malformed_archives_are_refused_precisely(world: LogWorld, tmp_path: Path, change: Any, message: str) -> None:
    path = _edit_manifest(_write(world, tmp_path / "a.zip"), tmp_path / "b.zip", change)
    with pytest.raises(MalformedArchive, match="audit archive: ") as info:
        read_archive(path)
    assert message in info.value.message


def test_files_that_are_no_audit_archive(tmp_path: Path) -> None:
    text = tmp_path / "x.txt"
    text.write_text("hello")
    assert not is_audit_archive(text) and not is_audit_archive(tmp_path / "missing.zip")
    with pytest.raises(MalformedArchive, match="is not a ZIP file"):
        read_archive(text)
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(MalformedArchive, match=r"member manifest\.json named in the manifest is missing"):
        read_archive(empty)


def test_fork_drill_two_audit_archives_of_one_server_show_the_split_view(world: LogWorld, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # the server signs two histories: the same first 3 entries, then different ones (an edited entry 4, re-hashed)
    entries = _entries(6)
    forked = [*entries[:4], entries[4].replace(b'"alice"', b'"mallory"'), entries[5]]
    leaves, forked_leaves = [leaf_hash(e) for e in entries], [leaf_hash(e) for e in forked]
    a = _write(world, tmp_path / "a.zip", entries=entries, leaves=leaves,
               checkpoints=[_checkpoint(world, leaves, 3), _checkpoint(world, leaves, 6)])
    b = _write(world, tmp_path / "b.zip", entries=forked[:5], leaves=forked_leaves[:5],
               checkpoints=[_checkpoint(world, forked_leaves, 5)])
    # each archive verifies on its own: each history is internally consistent
    for path in (a, b):
        assert verify_audit_archive(read_archive(path), world.anchor).ok
    ra = verify_audit_archive(read_archive(a), world.anchor, name="a.zip")
    rb = verify_audit_archive(read_archive(b), world.anchor, name="b.zip")
    assert ra.evidence is not None and rb.evidence is not None
    (view,) = find_split_views(ra.evidence, rb.evidence)
    assert view.kind == "inconsistent" and view.first[1].size == 5 and view.second[1].size == 6
    assert view.proof is not None  # a third party needs only the two notes, the proof and the log's certificate
    # the CLI: gateway log verify A --against B names it, with both signed notes as evidence
    anchor = tmp_path / "anchor.json"
    anchor.write_bytes(world.anchor.to_bytes())
    assert main(["log", "verify", str(a), "--anchor", str(anchor), "--against", str(b)]) == 1
    out = capsys.readouterr().out
    assert "split views between the 2 archives: 1" in out and "FAIL split view: checkpoint 1 of" in out
    assert out.count("signed checkpoint") == 2 and "— DEV/GOV/1001/ss1/audit " in out
    assert "RESULT: FAILED, 1 split view(s)" in out
