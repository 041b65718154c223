"""Steps 4 and 5 of the archive verification: order and completeness, and the Merkle tree (pure).

Step 4 aligns the records' leaf hashes with ``leaves.bin`` (:func:`compare_with_index`), so that a difference
names the record: altered, missing, inserted, duplicated or out of place. Step 5 builds the RFC 9162 tree as
the chunks' results arrive (:func:`_extend_tree`), from the roots of the perfect subtrees that each chunk's
leaves make where the chunk is where the manifest puts it, else leaf by leaf.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.messagelog.merkle import HASH_SIZE, MerkleTree, node_hash, perfect_ranges
from gateway.messagelog.verify.report import ChunkResult


def _subtree_roots(first: int, leaves: bytes) -> tuple[bytes, ...]:
    """The roots of the aligned perfect subtrees (:func:`gateway.messagelog.merkle.perfect_ranges`) that the
    leaf hashes ``leaves`` make if the first one is leaf ``first`` of the log (RFC 9162 section 2.1.1)."""
    out: list[bytes] = []
    for lo, hi in perfect_ranges(first, first + len(leaves) // HASH_SIZE):
        level = [leaves[i:i + HASH_SIZE] for i in range((lo - first) * HASH_SIZE, (hi - first) * HASH_SIZE, HASH_SIZE)]
        while len(level) > 1:
            level = [node_hash(left, right) for left, right in zip(level[::2], level[1::2], strict=True)]
        out.append(level[0])
    return tuple(out)


def _append_subtrees(tree: MerkleTree, end: int, roots: Sequence[bytes]) -> None:
    """Extend ``tree`` to ``end`` leaves by the roots of :func:`gateway.messagelog.merkle.perfect_ranges` from
    its size to ``end``: an aligned perfect subtree of ``2**h`` leaves is added as a binary counter adds at bit
    ``h``, merging the frontier's subtrees of the same height (as ``2**h`` calls of ``append`` would)."""
    frontier = tree.frontier
    assert frontier is not None
    for (lo, hi), root in zip(perfect_ranges(tree.size, end), roots, strict=True):
        n = lo >> ((hi - lo).bit_length() - 1)
        while n & 1:
            root = node_hash(frontier.pop(), root)
            n >>= 1
        frontier.append(root)
        tree.size = hi


def _extend_tree(tree: MerkleTree, result: ChunkResult, wanted: set[int], roots: dict[int, bytes]) -> None:
    """Add a chunk's leaves to ``tree`` (step 5), noting the root at each size in ``wanted`` reached on the way:
    by the subtree roots that the worker computed when the chunk starts where the manifest says and no wanted
    size falls inside it, else by subtree roots computed here, between the wanted sizes."""
    start, end = tree.size, tree.size + result.lines
    cuts = sorted(s for s in wanted if start < s < end)
    if result.roots and start == result.first and not cuts:
        _append_subtrees(tree, end, result.roots)
    else:
        for stop in (*cuts, end):
            x, y = (tree.size - start) * HASH_SIZE, (stop - start) * HASH_SIZE
            _append_subtrees(tree, stop, _subtree_roots(tree.size, result.leaves[x:y]))
            if stop in wanted:
                roots[stop] = tree.root()
    if tree.size in wanted:
        roots[tree.size] = tree.root()
def _roots_at(prefix_size: int, prefix: Sequence[bytes], leaves: bytes, sizes: Iterable[int]) -> dict[int, bytes]:
    """Tree roots at each of ``sizes`` (each in ``[prefix_size, prefix_size + len(leaves)/32]``)."""
    tree = MerkleTree(size=prefix_size, frontier=list(prefix))
    out: dict[int, bytes] = {}
    for size in sorted(set(sizes)):
        while tree.size < size:
            i = (tree.size - prefix_size) * HASH_SIZE
            tree.append(leaves[i:i + HASH_SIZE])
        out[size] = tree.root()
    return out


def _lis(values: Sequence[int]) -> set[int]:
    """Positions (into ``values``) of one longest strictly increasing subsequence."""
    import bisect

    tails: list[int] = []
    tails_at: list[int] = []
    back: list[int] = [-1] * len(values)
    for i, v in enumerate(values):
        k = bisect.bisect_left(tails, v)
        if k == len(tails):
            tails.append(v)
            tails_at.append(i)
        else:
            tails[k] = v
            tails_at[k] = i
        back[i] = tails_at[k - 1] if k else -1
    out: set[int] = set()
    i = tails_at[-1] if tails_at else -1
    while i >= 0:
        out.add(i)
        i = back[i]
    return out


Aligned = tuple[int | None, int | None, str, str]  # (line, seq, problem, message)


def compare_with_index(actual: Sequence[bytes], index: Sequence[bytes], start: int) -> list[Aligned]:
    """Step 4: align the records' leaf hashes with the stored ones.

    Returns ``(line, seq, problem, message)`` tuples: ``line`` is the record's position in the archive
    (``None`` for a missing record), ``seq`` the sequence number it belongs to (``None`` if unknown).
    """
    out: list[Aligned] = []
    if list(actual) == list(index):
        return out
    pos: dict[bytes, int] = {}
    for i, h in enumerate(index):
        pos.setdefault(h, i)
    matched: list[int | None] = []
    taken: set[int] = set()
    for k, h in enumerate(actual):
        j = pos.get(h)
        if j is not None and j in taken:
            out.append((k, j + start, "duplicate", f"the record at position {start + k} repeats record {start + j}"))
            matched.append(None)
            continue
        if j is not None:
            taken.add(j)
        matched.append(j)
    known = [(k, j) for k, j in enumerate(matched) if j is not None]
    in_order = {known[i][0] for i in _lis([j for _, j in known])}
    for k, j in known:
        if k not in in_order:
            out.append((k, j + start, "out-of-order",
                        f"record {start + j} is at position {start + k} (records reordered)"))
    missing = sorted(set(range(len(index))) - taken)
    # Pair each unknown record with a missing one between the same in-order neighbours: that is an alteration.
    gap: list[int] = []
    last = -1
    duplicates = {o[0] for o in out if o[2] == "duplicate"}

    def close_gap(upto: int) -> None:
        holes = [j for j in missing if last < j < upto]
        for k, j in zip(gap, holes, strict=False):
            out.append((k, j + start, "altered",
                        f"its bytes do not hash to the leaf hash that the log stored for record {start + j}"))
        for j in holes[len(gap):]:
            out.append((None, j + start, "missing", f"record {start + j} is not in the archive (deleted)"))
        for k in gap[len(holes):]:
            out.append((k, None, "inserted",
                        f"the record at position {start + k} is not in the log (inserted or altered)"))
        gap.clear()

    for k, jj in enumerate(matched):
        if jj is None:
            if k not in duplicates:
                gap.append(k)
        elif k in in_order:
            close_gap(jj)
            last = jj
    close_gap(len(index))
    return out


__all__ = ["Aligned", "compare_with_index"]
