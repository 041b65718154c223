"""Benchmark: sizes of the message log's inclusion and consistency proofs for logs of 1e3 .. 1e6 records.

Pure Merkle maths (RFC 9162, :mod:`gateway.messagelog.merkle`) on synthetic leaves; no database. For each log
size it prints, for an inclusion proof of one record and for a consistency proof between two checkpoints:
the number of hashes (smallest, mean over a sample of records or old sizes, largest), the raw size in bytes
(32 per hash) and the size of the ``proof`` array as the admin API and ``gateway log prove-*`` send it
(base64 strings in JSON). One proof of each kind is also built from the synthetic tree and verified, with
the time that takes, to show that the figures are those of real proofs.

    .venv/bin/python bench/proofs.py [--sizes 1000,10000,100000,1000000] [--sample 2000]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.messagelog import merkle


class Levels:
    """Every level of the tree over ``leaves`` (level 0: the leaf hashes; level k: roots of the aligned blocks of
    2**k leaves), so that any range root is a fold of a few stored perfect-subtree roots."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.levels = [leaves]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append([merkle.node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])

    def range_root(self, start: int, end: int) -> bytes:
        roots = []
        for a, b in merkle.perfect_ranges(start, end):
            height = (b - a).bit_length() - 1
            roots.append(self.levels[height][a >> height])
        # perfect_ranges gives the compact range left to right, largest first for a range starting at 0; any
        # range [start, end) that a proof asks for is a subtree of the RFC 9162 split, which folds the same way
        return merkle.root_from_frontier(roots)


def _json_bytes(hashes: int) -> int:
    return len(json.dumps([base64.b64encode(bytes(32)).decode()] * hashes, separators=(",", ":")))


def _stats(counts: Sequence[int]) -> str:
    return f"{min(counts):3d} {sum(counts) / len(counts):6.1f} {max(counts):3d}"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000,1000000", help="log sizes (records), comma-separated")
    ap.add_argument("--sample", type=int, default=2000, help="records (and old sizes) sampled per log size")
    args = ap.parse_args()
    rng = random.Random(9162)
    print(f"{'records':>9} | {'inclusion: hashes min/mean/max':>30} {'bytes':>6} {'JSON':>6} | "
          f"{'consistency: hashes min/mean/max':>32} {'bytes':>6} {'JSON':>6} | {'verify incl/cons':>16}")
    for size in (int(s) for s in args.sizes.split(",")):
        # inclusion: every record if few, else a sample plus the first and last
        indexes = range(size) if size <= args.sample else [0, size - 1, *rng.sample(range(size), args.sample)]
        incl = [len(merkle.inclusion_ranges(i, size)) for i in indexes]
        # consistency with an older checkpoint: half, one less, one, and a sample of old sizes
        olds = [1, size // 2, size - 1, *(rng.randrange(1, size) for _ in range(args.sample))]
        cons = [len(merkle.consistency_ranges(old, size)) for old in olds]
        # one real proof of each kind, on synthetic leaves, verified
        leaves = [merkle.leaf_hash(hashlib.sha256(i.to_bytes(8, "big")).digest()) for i in range(size)]
        tree = Levels(leaves)
        root = tree.range_root(0, size)
        if size <= 100_000:  # the stored levels give the same root as the straightforward computation
            assert root == merkle.root(leaves)
        index, old = rng.randrange(size), rng.randrange(1, size)
        proof = merkle.proof_from_ranges(merkle.inclusion_ranges(index, size), tree.range_root)
        t0 = time.perf_counter()
        merkle.verify_inclusion(leaves[index], index, size, proof, root)
        t_incl = time.perf_counter() - t0
        cproof = merkle.proof_from_ranges(merkle.consistency_ranges(old, size), tree.range_root)
        t0 = time.perf_counter()
        merkle.verify_consistency(old, size, tree.range_root(0, old), root, cproof)
        t_cons = time.perf_counter() - t0
        print(f"{size:9d} | {_stats(incl):>30} {32 * max(incl):6d} {_json_bytes(max(incl)):6d} | "
              f"{_stats(cons):>32} {32 * max(cons):6d} {_json_bytes(max(cons)):6d} | "
              f"{t_incl * 1e6:6.0f} {t_cons * 1e6:6.0f} us")
    print("bytes and JSON: the largest proof (32-byte hashes; base64 strings in a JSON array). Proofs grow with "
          "log2 of the log size: an inclusion proof has at most ceil(log2 n) hashes, a consistency proof at most "
          "about one more.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
