"""Split views: two archives of one log origin whose signed checkpoints cannot both be true (pure).

docs/witness.md section 6. A log must never sign two inconsistent checkpoints (c2sp.org/tlog-checkpoint@v1.0.0);
one that does shows different histories to different parties. Each archive is first verified on its own
(:func:`gateway.messagelog.verify.verify_archive`); its :class:`TreeEvidence` holds its verified checkpoints
(signed by the log's key, timestamped; whether or not the archive's records reach them) and the leaf hashes of
its records, authenticated up to the largest checkpoint whose root they reproduce.
:func:`find_split_views` then compares the two, for every pair of verified checkpoints ``x`` (one archive) and
``y`` (the other):

1. **same size, different roots**: both notes carry the log's valid signature over different trees of one size;
2. **inconsistent sizes** (``x.size < y.size``): the archive of ``y`` reproduces ``y``'s root from its records,
   and holds the records from its start up to ``x.size`` (``x.size`` is at least its start),
   and its tree at ``x.size`` has another root than ``x`` says, so no consistency proof from ``x`` to ``y`` can
   exist. The evidence includes that tree's root at ``x.size`` and, when the archive starts at record 0, the
   RFC 9162 consistency proof from it to ``y`` (so a third party needs only the two notes, the proof and the
   log's certificate).

Either is a ``split-view`` finding; its evidence is both signed notes, exactly as the log signed them.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.errors import TrustError
from gateway.messagelog import merkle
from gateway.messagelog.merkle import HASH_SIZE, MerkleTree


@dataclass(frozen=True, slots=True, kw_only=True)
class EvidenceCheckpoint:
    """A checkpoint that verified in its archive (signature by the log's key, signer, timestamp)."""

    number: int
    size: int
    root_hash: bytes
    note: bytes = field(repr=False)  # exactly as signed
    cosignatures: bytes = field(default=b"", repr=False)  # the witnesses' lines its archive holds, if any


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeEvidence:
    """What an archive proves about its log's tree (made by :func:`gateway.messagelog.verify.verify_archive`)."""

    name: str  # how the report names the archive (its path)
    origin: str
    start: int
    prefix: tuple[bytes, ...] = field(repr=False)
    leaves: bytes = field(repr=False)  # 32 bytes per record from start, as the records hash
    authentic_until: int  # the largest verified checkpoint size whose root the records reproduce (start if none)
    checkpoints: tuple[EvidenceCheckpoint, ...]

    def roots_at(self, sizes: Sequence[int]) -> dict[int, bytes]:
        """This archive's tree roots at ``sizes`` within ``[start, authentic_until]`` (others are left out)."""
        wanted = sorted({s for s in sizes if self.start <= s <= self.authentic_until})
        tree = MerkleTree(size=self.start, frontier=list(self.prefix))
        out: dict[int, bytes] = {}
        for s in wanted:
            n = s - tree.size
            offset = (tree.size - self.start) * HASH_SIZE
            tree.extend([self.leaves[i:i + HASH_SIZE] for i in range(offset, offset + n * HASH_SIZE, HASH_SIZE)])
            out[s] = tree.root()
        return out

    def consistency_proof(self, old: int, new: int) -> list[bytes] | None:
        """The RFC 9162 proof from ``old`` to ``new`` in this archive's tree, when it starts at record 0."""
        if self.start != 0 or new > self.authentic_until:
            return None
        leaves = [self.leaves[i:i + HASH_SIZE] for i in range(0, new * HASH_SIZE, HASH_SIZE)]
        return merkle.consistency_proof(leaves, old, new)


@dataclass(frozen=True, slots=True, kw_only=True)
class SplitView:
    """Two signed checkpoints of one origin that cannot both be true."""

    origin: str
    kind: str  # "same-size" or "inconsistent"
    first: tuple[str, EvidenceCheckpoint]  # (archive name, checkpoint)
    second: tuple[str, EvidenceCheckpoint]
    derived_root: bytes | None = None  # inconsistent: the second archive's tree root at the first's size
    proof: tuple[bytes, ...] | None = None  # inconsistent: consistency proof from derived_root to the second

    def message(self) -> str:
        (a, x), (b, y) = self.first, self.second
        if self.kind == "same-size":
            return (f"two checkpoints of {self.origin} at size {x.size} with different roots, both signed by the "
                    f"log: checkpoint {x.number} of {a} ({_b64(x.root_hash)}) and checkpoint {y.number} of {b} "
                    f"({_b64(y.root_hash)})")
        assert self.derived_root is not None
        return (f"checkpoint {x.number} of {a} (size {x.size}, root {_b64(x.root_hash)}) is inconsistent with "
                f"checkpoint {y.number} of {b} (size {y.size}): the records of {b} give the root "
                f"{_b64(self.derived_root)} at size {x.size}")

    def evidence(self) -> list[str]:
        """The evidence as text lines: both signed notes, and the derived root and proof if any."""
        (a, x), (b, y) = self.first, self.second
        out: list[str] = []
        for name, c in ((a, x), (b, y)):
            out += [f"signed checkpoint {c.number} of {name}:", *_indent(c.note)]
            if c.cosignatures:
                out += [f"  cosigned, in {name}, by:", *_indent(c.cosignatures)]
        if self.derived_root is not None:
            out.append(f"root of {b} at size {x.size}: {_b64(self.derived_root)}")
        if self.proof is not None:
            out.append(f"consistency proof {x.size} -> {y.size} in {b} (RFC 9162), one hash per line:")
            out += [f"    {_b64(h)}" for h in self.proof]
        return out

    def to_dict(self) -> dict[str, object]:
        (a, x), (b, y) = self.first, self.second
        return {
            "origin": self.origin, "kind": self.kind, "message": self.message(),
            "first": {"archive": a, "checkpoint": x.number, "size": x.size, "note": x.note.decode("utf-8"),
                      "cosignatures": x.cosignatures.decode("utf-8", "replace")},
            "second": {"archive": b, "checkpoint": y.number, "size": y.size, "note": y.note.decode("utf-8"),
                       "cosignatures": y.cosignatures.decode("utf-8", "replace")},
            "derived_root": None if self.derived_root is None else _b64(self.derived_root),
            "proof": None if self.proof is None else [_b64(h) for h in self.proof],
        }


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")


def _indent(note: bytes) -> list[str]:
    return ["    " + line for line in note.decode("utf-8", "replace").splitlines()]


def _inconsistent(small: tuple[str, EvidenceCheckpoint], big_archive: TreeEvidence,
                  big: EvidenceCheckpoint, roots: dict[int, bytes], origin: str) -> SplitView | None:
    (_, x) = small
    derived = roots.get(x.size)
    if derived is None or roots.get(big.size) != big.root_hash or derived == x.root_hash:
        return None  # not comparable (outside what the records prove), or consistent
    proof = big_archive.consistency_proof(x.size, big.size)
    if proof is not None:
        try:  # never hand out a proof that does not hold
            merkle.verify_consistency(x.size, big.size, derived, big.root_hash, proof)
        except TrustError:
            proof = None
    return SplitView(origin=origin, kind="inconsistent", first=small, second=(big_archive.name, big),
                     derived_root=derived, proof=None if proof is None else tuple(proof))


def find_split_views(a: TreeEvidence, b: TreeEvidence) -> list[SplitView]:
    """Every pair of verified checkpoints of ``a`` and ``b`` that cannot both be true (module docstring)."""
    if a.origin != b.origin:
        return []
    sizes = [c.size for c in (*a.checkpoints, *b.checkpoints)]
    roots_a, roots_b = a.roots_at(sizes), b.roots_at(sizes)
    found: list[SplitView] = []
    seen: set[tuple[int, int]] = set()
    for x in a.checkpoints:
        for y in b.checkpoints:
            key = (x.size, y.size)
            if key in seen:
                continue
            # (1) one size, two roots
            if x.size == y.size:
                if x.root_hash != y.root_hash:
                    seen.add(key)
                    found.append(SplitView(origin=a.origin, kind="same-size", first=(a.name, x), second=(b.name, y)))
                continue
            # (2) two sizes that no consistency proof can join
            view = (_inconsistent((a.name, x), b, y, roots_b, a.origin) if x.size < y.size
                    else _inconsistent((b.name, y), a, x, roots_a, a.origin))
            if view is not None:
                seen.add(key)
                found.append(view)
    return found


__all__ = ["EvidenceCheckpoint", "SplitView", "TreeEvidence", "find_split_views"]
