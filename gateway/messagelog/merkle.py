"""RFC 9162 Merkle tree hashing, proofs and the incremental tree (pure).

docs/messagelog.md: each log origin is an append-only Merkle tree whose leaves are the records in sequence
order. Everything here works on **leaf hashes** (``SHA-256(0x00 || encoded record)``, RFC 9162 section
2.1.1), so that a verifier never needs the record bodies to check a proof, and so that the online database can
drop archived bodies while keeping proofs possible (``docs/messagelog.md``, retention).

- :func:`root` is the Merkle Tree Hash ``MTH`` of RFC 9162 section 2.1.1 over leaf hashes.
- :func:`inclusion_proof` / :func:`verify_inclusion`: RFC 9162 sections 2.1.3.1 and 2.1.3.2.
- :func:`consistency_proof` / :func:`verify_consistency`: RFC 9162 sections 2.1.4.1 and 2.1.4.2.
- :func:`inclusion_ranges` / :func:`consistency_ranges` say which subtree ranges ``[start, end)`` a proof
  is made of, so that a store can compute the proof from leaf hashes it reads range by range
  (:func:`proof_from_ranges`), without holding the whole tree in memory.
- :class:`MerkleTree` is the incremental tree a writer keeps: its state is the "compact range" of the whole
  tree (the roots of the perfect subtrees that the tree size decomposes into, at most ``log2(n) + 1``
  hashes), enough to append and to compute the root in ``O(log n)``.

The proof formats are RFC 9162's: a list of 32-byte node hashes, in the order the RFC's algorithms produce
and consume them. A consistency proof from size 0 is the empty list (every tree extends the empty tree), and
so is a proof between equal sizes; RFC 9162 leaves both cases undefined, these are the usual conventions
(as in the transparency-dev Go libraries).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from gateway.errors import TrustError

HASH_SIZE = 32  # bytes; SHA-256
LEAF_PREFIX = b"\x00"  # RFC 9162 section 2.1.1
NODE_PREFIX = b"\x01"  # RFC 9162 section 2.1.1
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = SHA-256() (RFC 9162 section 2.1.1)
MAX_PROOF_LENGTH = 128  # hashes; a tree of 2**64 leaves needs at most 64 (inclusion) or ~128 (consistency)

Range = tuple[int, int]  # [start, end) in leaf indexes


def leaf_hash(data: bytes | memoryview) -> bytes:
    """RFC 9162 leaf hash: ``SHA-256(0x00 || data)``; of an encoded record (:mod:`gateway.messagelog.record`)
    in the log.

    The hash is fed the prefix and then ``data``, rather than their concatenation, so that a large record is
    not copied on its way to the hash (the store hashes each record it logs; the verifier each line it reads,
    as a view of the archive member).
    """
    h = hashlib.sha256(LEAF_PREFIX)
    h.update(data)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``): RFC 9162's ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 Merkle Tree Hash of a list of **leaf hashes**; the empty tree is ``SHA-256(b"")``.

    Iterative (a frontier, as :class:`MerkleTree`), so it runs in ``O(n)`` hashes and ``O(log n)`` memory.
    """
    tree = MerkleTree()
    tree.extend(leaves)
    return tree.root()


def _check_size(index: int, size: int, what: str) -> None:
    if isinstance(index, bool) or isinstance(size, bool) or not isinstance(index, int) or not isinstance(size, int):
        raise TrustError(f"{what}: index and tree size must be integers")
    if size < 0 or not 0 <= index < size:
        raise TrustError(f"{what}: leaf index {index} is not inside a tree of size {size}")


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """Ranges ``[start, end)`` whose subtree roots make up the inclusion proof of leaf ``index`` (RFC 9162 PATH).

    Raises:
        TrustError: ``index`` is not a leaf of a tree of ``size`` leaves.
    """
    _check_size(index, size, "inclusion proof")
    out: list[Range] = []
    # RFC 9162 section 2.1.3.1, PATH(m, D[start:end]), unrolled from the root down; the RFC lists the
    # hashes from the leaf up, so the list is reversed at the end.
    start, end, m = 0, size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m = start + k, m - k
    out.reverse()
    return out


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """Ranges whose subtree roots make up the consistency proof between two sizes (RFC 9162 PROOF/SUBPROOF).

    Raises:
        TrustError: the sizes are not ``0 <= old_size <= new_size``.
    """
    if (
        isinstance(old_size, bool) or isinstance(new_size, bool)
        or not isinstance(old_size, int) or not isinstance(new_size, int)
        or not 0 <= old_size <= new_size
    ):
        raise TrustError(f"consistency proof: sizes {old_size!r} -> {new_size!r} are not 0 <= old <= new")
    if old_size in (0, new_size):
        return []
    out: list[Range] = []
    # RFC 9162 section 2.1.4.1, SUBPROOF(m, D[start:end], b), unrolled; reversed at the end as above.
    start, end, m, b = 0, new_size, old_size, True
    while m != end - start:
        n = end - start
        k = _split(n)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m, b = start + k, m - k, False
    if not b:
        out.append((start, end))
    out.reverse()
    return out


def proof_from_ranges(ranges: Iterable[Range], range_root: Callable[[int, int], bytes]) -> list[bytes]:
    """The proof hashes for ``ranges``, each computed by ``range_root(start, end)`` (the MTH of that range)."""
    return [range_root(start, end) for start, end in ranges]


def _range_root_of(leaves: Sequence[bytes]) -> Callable[[int, int], bytes]:
    return lambda start, end: root(leaves[start:end])


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """Inclusion proof of leaf ``index`` in the tree of the first ``size`` leaf hashes (RFC 9162 2.1.3.1).

    Raises:
        TrustError: ``index``/``size`` out of range, or fewer than ``size`` leaves given.
    """
    if isinstance(size, int) and size > len(leaves):
        raise TrustError(f"inclusion proof: tree size {size} but only {len(leaves)} leaves given")
    return proof_from_ranges(inclusion_ranges(index, size), _range_root_of(leaves))


def consistency_proof(leaves: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """Consistency proof between the trees of the first ``old_size`` and ``new_size`` leaves (RFC 9162 2.1.4.1).

    Raises:
        TrustError: sizes out of order, or fewer than ``new_size`` leaves given.
    """
    if isinstance(new_size, int) and new_size > len(leaves):
        raise TrustError(f"consistency proof: tree size {new_size} but only {len(leaves)} leaves given")
    return proof_from_ranges(consistency_ranges(old_size, new_size), _range_root_of(leaves))


def _check_hashes(what: str, proof: Sequence[bytes], *named: tuple[str, bytes]) -> None:
    if len(proof) > MAX_PROOF_LENGTH:
        raise TrustError(f"{what}: proof has {len(proof)} hashes, more than {MAX_PROOF_LENGTH}")
    for i, h in enumerate(proof):
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise TrustError(f"{what}: proof hash {i} is not {HASH_SIZE} bytes")
    for name, h in named:
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise TrustError(f"{what}: {name} is not {HASH_SIZE} bytes")


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes) -> None:
    """Check that ``leaf`` (a leaf hash) is leaf ``index`` of the tree of ``size`` with root ``root_hash``.

    RFC 9162 section 2.1.3.2, step by step.

    Raises:
        TrustError: the proof is malformed or does not lead to ``root_hash``.
    """
    what = "inclusion proof"
    _check_hashes(what, proof, ("leaf hash", leaf), ("root hash", root_hash))
    # (1) The index must be a leaf of the tree.
    _check_size(index, size, what)
    # (2) fn walks the leaf's path, sn the tree's last leaf's path.
    fn, sn = index, size - 1
    # (3) Start from the leaf hash.
    r = leaf
    # (4) Fold in each proof hash, from the leaf up.
    for p in proof:
        # (4a) Past the root with hashes left over: a wrong-length proof.
        if sn == 0:
            raise TrustError(f"{what}: too many hashes for leaf {index} of a tree of size {size}")
        # (4b) Our node is a right child, or the last node of its level (which has no right sibling).
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        # (4c) Up one level.
        fn >>= 1
        sn >>= 1
    # (5) The proof must have been exactly long enough, and lead to the root.
    if sn != 0:
        raise TrustError(f"{what}: too few hashes for leaf {index} of a tree of size {size}")
    if r != root_hash:
        raise TrustError(f"{what}: leaf {index} does not lead to the root hash of the tree of size {size}")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size`` with ``new_root`` extends the tree of ``old_size`` with ``old_root``.

    RFC 9162 section 2.1.4.2, step by step. A forked history (two trees that share ``old_size`` leaves in
    one view but not in the other) fails here: no proof can lead to both roots.

    Raises:
        TrustError: the proof is malformed, or the two trees are not consistent.
    """
    what = "consistency proof"
    _check_hashes(what, proof, ("old root hash", old_root), ("new root hash", new_root))
    if (
        isinstance(old_size, bool) or isinstance(new_size, bool)
        or not isinstance(old_size, int) or not isinstance(new_size, int)
        or not 0 <= old_size <= new_size
    ):
        raise TrustError(f"{what}: sizes {old_size!r} -> {new_size!r} are not 0 <= old <= new")
    # (1) Trivial cases: everything extends the empty tree; equal sizes need equal roots.
    if old_size == 0:
        if proof:
            raise TrustError(f"{what}: a proof from the empty tree must be empty")
        return
    if old_size == new_size:
        if proof:
            raise TrustError(f"{what}: a proof between equal sizes must be empty")
        if old_root != new_root:
            raise TrustError(f"{what}: two different root hashes for the same tree size {old_size} (a fork)")
        return
    if not proof:
        raise TrustError(f"{what}: empty proof from size {old_size} to {new_size}")
    # (2) If the old tree is a perfect subtree of the new one, the old root is the proof's implicit start.
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # (3) fn walks the old tree's last leaf, sn the new tree's last leaf.
    fn, sn = old_size - 1, new_size - 1
    # (4) Skip the levels where the old tree's last node is a right child inside a perfect subtree.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # (5) Both roots start from the first hash.
    fr = sr = path[0]
    # (6) Fold in the rest: left siblings feed both roots, right siblings only the new one.
    for c in path[1:]:
        if sn == 0:
            raise TrustError(f"{what}: too many hashes for sizes {old_size} -> {new_size}")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # (7) Exactly long enough, and both roots reproduced.
    if sn != 0:
        raise TrustError(f"{what}: too few hashes for sizes {old_size} -> {new_size}")
    if fr != old_root:
        raise TrustError(f"{what}: does not reproduce the old root hash of size {old_size} (history differs)")
    if sr != new_root:
        raise TrustError(f"{what}: does not reproduce the new root hash of size {new_size} (history differs)")


def frontier_ranges(size: int) -> list[Range]:
    """The compact range of a tree of ``size`` leaves: its perfect subtrees, left to right.

    One range per set bit of ``size``, largest first: e.g. size 13 = 8 + 4 + 1 gives
    ``[(0, 8), (8, 12), (12, 13)]``. Their roots are the state of :class:`MerkleTree`.
    """
    if size < 0:
        raise ValueError("size must not be negative")
    out: list[Range] = []
    start = 0
    for bit in range(size.bit_length() - 1, -1, -1):
        if size >> bit & 1:
            out.append((start, start + (1 << bit)))
            start += 1 << bit
    return out


def root_from_frontier(frontier: Sequence[bytes]) -> bytes:
    """The tree root from the roots of its compact range (largest subtree first), folding from the right."""
    if not frontier:
        return EMPTY_ROOT
    r = frontier[-1]
    for h in reversed(frontier[:-1]):
        r = node_hash(h, r)
    return r


def perfect_ranges(start: int, end: int) -> list[Range]:
    """Split ``[start, end)`` into maximal aligned perfect subtrees, left to right.

    Every node hash of the tree of any size is the root of one aligned perfect subtree or the fold
    (:func:`root_from_frontier`) of such subtrees, so a store that caches perfect-subtree roots can answer
    any :func:`proof_from_ranges` query from its cache plus a few leaves.
    """
    if not 0 <= start <= end:
        raise ValueError("need 0 <= start <= end")
    out: list[Range] = []
    while start < end:
        # The largest power of two that divides start (start 0: unbounded) and fits before end.
        size = start & -start if start else 1 << (end - start).bit_length()
        while size > end - start:
            size >>= 1
        out.append((start, start + size))
        start += size
    return out


@dataclass(slots=True)
class MerkleTree:
    """Incremental RFC 9162 tree over leaf hashes, with ``O(log n)`` state (the compact range).

    ``frontier[i]`` is the root of the i-th perfect subtree of :func:`frontier_ranges` (``size``), largest
    first. A writer appends each committed leaf hash and can build a checkpoint at any moment.
    """

    size: int = 0
    frontier: list[bytes] | None = None

    def __post_init__(self) -> None:
        if self.frontier is None:
            self.frontier = []
        if len(self.frontier) != self.size.bit_count():
            raise ValueError(f"a tree of size {self.size} has {self.size.bit_count()} frontier hashes")

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash at index ``size``."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes")
        frontier = self.frontier
        assert frontier is not None
        h = leaf
        # Every trailing one bit of the old size is a perfect subtree of the same height as the one just
        # completed: merge them, right to left (a binary counter's carries).
        n = self.size
        while n & 1:
            h = node_hash(frontier.pop(), h)
            n >>= 1
        frontier.append(h)
        self.size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """The current root hash (``EMPTY_ROOT`` for the empty tree)."""
        assert self.frontier is not None
        return root_from_frontier(self.frontier)

    def copy(self) -> MerkleTree:
        assert self.frontier is not None
        return MerkleTree(size=self.size, frontier=list(self.frontier))


__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleTree",
    "Range",
    "consistency_proof",
    "consistency_ranges",
    "frontier_ranges",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "perfect_ranges",
    "proof_from_ranges",
    "root",
    "root_from_frontier",
    "verify_consistency",
    "verify_inclusion",
]
