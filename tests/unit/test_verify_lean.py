"""The fast paths of ``gateway log verify`` (gateway.messagelog.verify) against the plain ways they replace.

Each shortcut must decide exactly as the general code does: base64 read without re-encoding, DER signatures
built from a table, ``Signature-Input`` parses reused across ``created`` values, the signature base compared
in base64, ECDSA signatures checked after the rest of a chunk, lines read as views, and the Merkle tree built
from the subtree roots that the workers compute. The lean record check itself is also compared with the
general one on random changes of its long members (``tests/unit/test_record_checkers.py`` runs the table of
tampered records through both checkers).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from archive_kit import (
    ORIGIN,
    LogWorld,
    base_text,
    exchange_records,
    make_log,
    make_world,
    rewrite,
    set_base,
    write_archive,
)

from gateway.messagelog import verify
from gateway.messagelog.archive import LogArchive
from gateway.messagelog.merkle import HASH_SIZE, MerkleTree, leaf_hash
from gateway.messagelog.verify import lean, records
from gateway.messagelog.verify import tree as verify_tree
from gateway.trust import keys


@dataclass
class Kit:
    world: LogWorld
    context: verify.CheckContext
    checker: verify.LeanChecker
    request: bytes
    response: bytes
    later: tuple[bytes, bytes]  # an exchange three seconds later (another Signature-Input created value)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    world = make_world(tmp_path_factory.mktemp("lean-fast"))
    context = verify.CheckContext(anchor=world.anchor.to_bytes(), envelopes=(world.envelope,), origin=ORIGIN,
                                  blobs=tuple(world.blobs.items()))
    created = world.now - timedelta(minutes=1)
    request, response = exchange_records(world, created=created)
    later = exchange_records(world, created=created + timedelta(seconds=3))
    return Kit(world=world, context=context, checker=context.checker(), request=request.encode(),
               response=response.encode(), later=(later[0].encode(), later[1].encode()))


def _full(checker: verify.LeanChecker, line: bytes) -> verify.Checked | None:
    try:
        return checker.check(line)
    except records._RecordProblem:
        return None


def _agree(checker: verify.LeanChecker, line: bytes) -> verify.Checked | None:
    """The lean check's result, after asserting that the general check accepts whatever it accepts."""
    lean = checker.check_lean(line)
    if lean is not None:
        assert _full(checker, line) == lean
    return lean


# ---- base64 and DER ---------------------------------------------------------------------------------------


def _reference_b64(value: str) -> bytes | None:
    """Canonical padded base64 by decoding strictly and encoding again (what _b64_canonical replaced)."""
    try:
        raw = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    return raw if binascii.b2a_base64(raw, newline=False) == value.encode("ascii") else None


def test_canonical_base64_agrees_with_encoding_again() -> None:
    rng = random.Random(4648)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    cases = ["", "=", "==", "QQ", "QQ=", "QQ==", "QR==", "QUI=", "QUJ=", "QUJD", "QUJD=", "QUJD==", "=QUJD",
             "QUJD\n", " QUJD", "QU JD", "QQ==QUJD", "Q===", "QUJDQQ=", "QUJDQQ==", "QUJDQR==", "é", "QUJ\u00e9"]
    for _ in range(3000):
        raw = os.urandom(rng.randrange(0, 12))
        text = list(base64.b64encode(raw).decode())
        for _ in range(rng.randrange(0, 3)):  # a few characters changed, dropped or added
            op = rng.randrange(3)
            if op == 0 and text:
                text[rng.randrange(len(text))] = rng.choice(alphabet + "=\n -_")
            elif op == 1 and text:
                del text[rng.randrange(len(text))]
            else:
                text.insert(rng.randrange(len(text) + 1), rng.choice(alphabet + "="))
        cases.append("".join(text))
    for value in cases:
        assert lean._b64_canonical(value) == _reference_b64(value), value


def test_der_signatures_from_the_table_are_those_of_raw_to_der() -> None:
    rng = random.Random(9421)
    for _ in range(2000):
        raw = bytearray(rng.randbytes(64))
        for half in (0, 32):  # each half: high bit set or clear, or 1 to 32 leading zero bytes
            choice = rng.randrange(4)
            if choice == 1:
                raw[half] |= 0x80
            elif choice == 2:
                raw[half] &= 0x7F
            elif choice == 3:
                n = rng.randrange(1, 33)
                raw[half:half + n] = bytes(n)
        sig = bytes(raw)
        assert lean._der_p256(sig) == keys.raw_to_der_ecdsa(sig)


# ---- Signature-Input parses reused across created values ---------------------------------------------------


def _input_literal(record: bytes) -> str:
    return json.dumps(json.loads(record)["signature_input"], ensure_ascii=False)


@pytest.mark.parametrize("kind", ["request", "response"])
def test_a_signature_input_parse_is_reused_only_where_it_is_the_same(kit: Kit, kind: str) -> None:
    index = 0 if kind == "request" else 1
    literal = _input_literal((kit.request, kit.response)[index])
    created = literal.split(";created=")[1].split(";")[0]
    variants = [
        literal,
        _input_literal(kit.later[index]),
        literal.replace(f";created={created}", ";created=1"),
        literal.replace(f";created={created}", ";created=999999999999999"),  # 15 digits
        literal.replace(f";created={created}", ";created=1000000000000000"),  # 16 digits: not an sf-integer
        literal.replace(f";created={created}", f";created=0{created}"),  # a leading zero
        literal.replace(f";created={created}", f";created=-{created}"),
        literal.replace(f";created={created}", f";created={created}.5"),
        literal.replace(f";created={created}", f";created={created};created={created}"),
        literal.replace(f";created={created}", f";created={int(created) + 1}") + ', other=();created=5',
        literal.replace(f";created={created}", ""),
        literal.replace(f";created={created}", ";created="),
    ]
    for first in variants:
        for second in variants:
            checker = kit.context.checker()
            checker._lean_input(first, kind)
            assert checker._lean_input(second, kind) == lean.LeanChecker._parse_input(second, kind), second


def test_records_of_later_seconds_are_decided_by_the_lean_check(kit: Kit) -> None:
    checker = kit.context.checker()
    for line in (kit.request, kit.response, *kit.later):
        assert _agree(checker, line) is not None
    assert len(checker._shapes) == 2  # one parse per kind; the later exchange reused them


# ---- records signed again ----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _resigned(kit: Kit, kind: str, fn: Callable[[str], str], record: Callable[[dict[str, Any]], None] | None = None
              ) -> bytes:
    """The record with its signature base edited (and the record, if ``record``) and signed again by its signer:
    only the base's form is wrong."""
    obj = json.loads(kit.request if kind == "request" else kit.response)
    base = fn(base_text(obj, kit.world.blobs))
    if record is not None:
        record(obj)
    signer = kit.world.consumer_signer if kind == "request" else kit.world.provider_signer
    set_base(obj, base, kit.world.blobs)
    obj["signature"] = f"xroad=:{_b64(signer.sign(base.encode()))}:"
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize("member", ["signature_base", "signing_cert", "ocsp_response", "signature_input"])
def test_random_changes_in_the_long_members_are_never_accepted_by_the_lean_check_alone(kit: Kit, member: str
                                                                                      ) -> None:
    rng = random.Random(member)
    checker = kit.context.checker()
    for line in (kit.request, kit.response):  # the caches hold the unchanged records' pair and input
        assert checker.check_lean(line) is not None
    for _ in range(600):
        line = rng.choice((kit.request, kit.response))
        if member == "signature_base":  # the template: from its first text to its last
            start, end = line.index(b'"signature_base":[') + len(member) + 4, line.index(b'],"signature_input"')
        else:
            start = line.index(f'"{member}":"'.encode()) + len(member) + 4
            end = line.index(b'"', start + 1) if member != "signature_input" else line.index(b'","signing_cert"')
        changed = bytearray(line)
        for _ in range(rng.randint(1, 2)):
            changed[rng.randrange(start, end)] = rng.choice(b"ABCDEFabcdef0123456789+/=\\\" \n")
        _agree(checker, bytes(changed))


# ---- a chunk: line views, ECDSA after the rest, the general check for the rest -------------------------------


def _reference_chunk(checker: verify.LeanChecker, data: bytes) -> tuple[int, bytes, list[tuple[int, str]],
                                                                          list[verify.Checked]]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    findings, accepted = [], []
    for i, line in enumerate(lines):
        checked = checker.check_lean(line)
        if checked is None:
            try:
                checked = checker.check(line)
            except records._RecordProblem as e:
                findings.append((i, e.problem))
                continue
        accepted.append(checked)
    return len(lines), b"".join(leaf_hash(line) for line in lines), findings, accepted


def test_check_chunk_reads_lines_and_checks_signatures_as_line_by_line(kit: Kit) -> None:
    obj = json.loads(kit.response)
    sig = obj["signature"]
    obj["signature"] = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]  # well-formed, does not verify
    bad_signature = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    records = [kit.request, bad_signature, kit.response, b"", b"not a record", kit.later[0], kit.later[1]]
    for data in (b"\n".join(records) + b"\n", b"\n".join(records), b"\n".join(records) + b"\n\n", b"", b"\n",
                 kit.request):
        checker = kit.context.checker()
        lines, leaves, findings, accepted = _reference_chunk(kit.context.checker(), data)
        result = verify.check_chunk(checker, 0, data)
        assert (result.lines, result.leaves, result.valid) == (lines, leaves, len(accepted))
        assert [(f.line, f.problem) for f in result.findings] == findings
        assert [r[1] for r in result.requests] == [c.request_id for c in accepted if c.kind == "request"]
        assert [r[2] for r in result.responses] == [c.bound for c in accepted if c.kind == "response"]
    result = verify.check_chunk(kit.context.checker(), 0, b"\n".join(records))
    assert [(f.line, f.problem) for f in result.findings] == [(1, "signature"), (3, "malformed"), (4, "malformed")]


# ---- the tree from subtree roots ---------------------------------------------------------------------------


def _chunk_result(first: int, leaves: bytes) -> verify.ChunkResult:
    return verify.ChunkResult(
        first=first, lines=len(leaves) // HASH_SIZE, leaves=leaves, valid=0, findings=(), requests=(), responses=(),
        pairs=frozenset(), first_created=None, last_created=None, roots=verify_tree._subtree_roots(first, leaves))


@pytest.mark.parametrize(("start", "counts", "firsts"), [
    (0, [2048, 2048, 1500], None),
    (5, [11, 2048, 1], None),
    (4096, [2048, 2048], None),
    (3, [7, 9, 300], [3, 11, 19]),  # a record missing from the first chunk: the rest are not where said
    (0, [1, 1, 1, 1, 1], None),
])
def test_the_tree_from_subtree_roots_has_the_roots_of_the_tree_from_leaves(
    start: int, counts: list[int], firsts: list[int] | None,
) -> None:
    rng = random.Random(start)
    total = sum(counts)
    leaves = rng.randbytes(HASH_SIZE * total)
    prefix = MerkleTree()
    prefix.extend(rng.randbytes(HASH_SIZE) for _ in range(start))
    wanted = {start, start + 1, start + counts[0], start + total, start + total // 2, start + total + 1,
              start + 3 * total // 4}
    tree = MerkleTree(size=start, frontier=list(prefix.frontier or []))
    roots: dict[int, bytes] = {start: tree.root()} if start in wanted else {}
    pos, first = 0, start
    for i, count in enumerate(counts):
        chunk = leaves[pos * HASH_SIZE:(pos + count) * HASH_SIZE]
        verify_tree._extend_tree(tree, _chunk_result(firsts[i] if firsts else first, chunk), wanted, roots)
        pos, first = pos + count, first + count
    expected = verify_tree._roots_at(start, prefix.frontier or [], leaves, [s for s in wanted if s <= start + total])
    assert roots == expected
    assert tree.size == start + total


# ---- step 2 before the records' stapled certificates are known ----------------------------------------------


def test_checkpoints_signed_by_a_key_only_stapled_in_the_records_verify(tmp_path: Path) -> None:
    """Step 2 runs first with the archive's own certificates and OCSP responses; in format version 2 these are
    the records' blobs, so the signing certificate of the log is among them whether or not the exporter added
    it for the checkpoints. Without the blobs, neither the records nor the checkpoints verify, and the report
    says which blob each record lacks."""
    from gateway.trust.canonical import canonical_bytes

    world = make_world(tmp_path)
    records = make_log(world, 10)
    path = write_archive(world, tmp_path / "a.zip", records, checkpoint_sizes=(8, 20))

    def manifest(data: bytes) -> bytes:
        m = json.loads(data)
        m["certificates"], m["ocsp_responses"] = [], []
        return canonical_bytes(m)

    with zipfile.ZipFile(path) as z:
        dropped = {n: (lambda _: None) for n in z.namelist() if n.startswith(("certs/", "ocsp/"))}
    assert len(dropped) == 4  # the blobs of both parties: the log's signer is one of them
    stripped = rewrite(path, tmp_path / "b.zip", {**dropped, "manifest.json": manifest})
    with LogArchive(path) as a:
        report = verify.verify_archive(a, world.anchor)
    assert report.ok, report.summary()
    assert (report.checkpoints_verified, report.covered_until) == (2, 20)
    with LogArchive(stripped) as a:
        report = verify.verify_archive(a, world.anchor)
    assert {(f.seq, f.problem) for f in report.errors if f.seq is not None} == {(i, "blob") for i in range(20)}
    assert report.checkpoints_verified == 0


@pytest.mark.parametrize(("name", "suffix", "valid"), [
    ("another member after sha-256", ", sha-512=:" + "A" * 86 + "==:", True),
    ("a parameter on sha-256", ";x=1", None),
    ("a second sha-256 member", ", sha-256=:AAAA:", None),
])
def test_a_content_digest_in_another_form_is_read_as_the_general_check_reads_it(
    kit: Kit, name: str, suffix: str, valid: bool | None,
) -> None:
    obj = json.loads(kit.response)
    digest = obj["body_digest"]

    def record(o: dict[str, Any]) -> None:
        o["body_digest"] = digest + suffix

    line = _resigned(kit, "response", lambda t: t.replace(f'"content-digest": {digest}',
                                                          f'"content-digest": {digest}{suffix}'), record)
    checker = kit.context.checker()
    assert checker.check_lean(kit.response) is not None  # the body's digest is cached
    result = _agree(checker, line)
    if valid is not None:
        assert (_full(checker, line) is not None) == valid, name
        assert (result is not None) == valid, name
