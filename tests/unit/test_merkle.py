"""RFC 9162 Merkle tree: known vectors, brute force over every size up to 64, forks, bad proofs."""

from __future__ import annotations

import hashlib

import pytest

from gateway.errors import TrustError
from gateway.messagelog import merkle, record
from gateway.messagelog.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    consistency_proof,
    consistency_ranges,
    frontier_ranges,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    perfect_ranges,
    root,
    verify_consistency,
    verify_inclusion,
)

# The RFC 6962 / certificate-transparency reference leaves and roots (transparency-dev/merkle testonly data).
CT_DATA = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f",
)]
CT_LEAVES = [leaf_hash(d) for d in CT_DATA]
CT_ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
CT_INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
CT_CONSISTENCY = [
    (2, 8, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]

N = 64
LEAVES = [leaf_hash(b"leaf %d" % i) for i in range(N)]


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.1 MTH, written recursively exactly as the RFC states it (the oracle)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 section 2.1.3.1 PATH, recursively (the oracle)."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    """RFC 9162 section 2.1.4.1 SUBPROOF, recursively (the oracle)."""
    n = len(leaves)
    if m == n:
        return [] if b else [mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*subproof(m, leaves[:k], b), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


ROOTS = [mth(LEAVES[:n]) for n in range(N + 1)]


def test_reference_roots() -> None:
    assert EMPTY_ROOT == CT_ROOTS[0]
    for n in range(len(CT_LEAVES) + 1):
        assert root(CT_LEAVES[:n]) == CT_ROOTS[n], n
        assert mth(CT_LEAVES[:n]) == CT_ROOTS[n], n


@pytest.mark.parametrize(("index", "size", "expected"), CT_INCLUSION)
def test_reference_inclusion(index: int, size: int, expected: list[str]) -> None:
    proof = inclusion_proof(CT_LEAVES, index, size)
    assert [p.hex() for p in proof] == expected
    verify_inclusion(CT_LEAVES[index], index, size, proof, CT_ROOTS[size])


@pytest.mark.parametrize(("old", "new", "expected"), CT_CONSISTENCY)
def test_reference_consistency(old: int, new: int, expected: list[str]) -> None:
    proof = consistency_proof(CT_LEAVES, old, new)
    assert [p.hex() for p in proof] == expected
    verify_consistency(old, new, CT_ROOTS[old], CT_ROOTS[new], proof)


def test_leaf_hash_matches_record_module() -> None:
    assert leaf_hash(b"abc") == record.leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()


def test_roots_and_incremental_tree_match_the_rfc_for_every_size() -> None:
    tree = MerkleTree()
    for n in range(N + 1):
        assert root(LEAVES[:n]) == ROOTS[n]
        assert tree.size == n
        assert tree.root() == ROOTS[n]
        # The frontier is exactly the roots of the compact range.
        assert tree.frontier == [mth(LEAVES[a:b]) for a, b in frontier_ranges(n)]
        # A tree restored from its frontier carries on identically.
        restored = MerkleTree(size=n, frontier=list(tree.frontier or []))
        if n < N:
            tree.append(LEAVES[n])
            restored.append(LEAVES[n])
            assert restored.root() == tree.root()


def test_every_inclusion_proof_matches_the_rfc_and_verifies() -> None:
    for n in range(1, N + 1):
        for i in range(n):
            proof = inclusion_proof(LEAVES, i, n)
            assert proof == path(i, LEAVES[:n]), (i, n)
            verify_inclusion(LEAVES[i], i, n, proof, ROOTS[n])
            # Wrong leaf, wrong index, wrong size: all refused.
            with pytest.raises(TrustError):
                verify_inclusion(LEAVES[(i + 1) % N], i, n, proof, ROOTS[n])
            if n > 1:
                with pytest.raises(TrustError):
                    verify_inclusion(LEAVES[i], (i + 1) % n, n, proof, ROOTS[n])
            with pytest.raises(TrustError):
                verify_inclusion(LEAVES[i], i, n + 1, proof, ROOTS[n + 1] if n < N else ROOTS[n])


def test_every_consistency_proof_matches_the_rfc_and_verifies() -> None:
    for new in range(N + 1):
        for old in range(new + 1):
            proof = consistency_proof(LEAVES, old, new)
            expected = [] if old in (0, new) else subproof(old, LEAVES[:new], True)
            assert proof == expected, (old, new)
            verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)
            if 0 < old < new:
                # Each hash matters: flip one bit in each position in turn.
                for j in range(len(proof)):
                    bad = list(proof)
                    bad[j] = bytes([bad[j][0] ^ 1]) + bad[j][1:]
                    with pytest.raises(TrustError):
                        verify_consistency(old, new, ROOTS[old], ROOTS[new], bad)
                with pytest.raises(TrustError):
                    verify_consistency(old, new, ROOTS[old], ROOTS[new], proof[:-1])
                with pytest.raises(TrustError):
                    verify_consistency(old, new, ROOTS[old], ROOTS[new], [*proof, b"\xcd" * 32])


def test_mangled_inclusion_proofs_are_refused() -> None:
    for n in range(2, N + 1):
        for i in range(n):
            proof = inclusion_proof(LEAVES, i, n)
            for j in range(len(proof)):
                bad = list(proof)
                bad[j] = bytes([bad[j][0] ^ 0x80]) + bad[j][1:]
                with pytest.raises(TrustError, match="does not lead to the root"):
                    verify_inclusion(LEAVES[i], i, n, bad, ROOTS[n])
            with pytest.raises(TrustError, match="too few hashes"):
                verify_inclusion(LEAVES[i], i, n, proof[:-1], ROOTS[n])
            with pytest.raises(TrustError, match="too many hashes"):
                verify_inclusion(LEAVES[i], i, n, [*proof, b"\xab" * 32], ROOTS[n])


def test_forked_history_is_detected() -> None:
    """Two histories that agree on the first 5 leaves and then differ: no proof bridges them."""
    fork = LEAVES[:5] + [leaf_hash(b"forged %d" % i) for i in range(5, 20)]
    honest_root_10 = root(LEAVES[:10])
    forked_root_20 = root(fork)
    # The forked log's own proof from its size 10 cannot connect our checkpoint of size 10 to its size 20.
    proof = consistency_proof(fork, 10, 20)
    with pytest.raises(TrustError, match="old root hash of size 10"):
        verify_consistency(10, 20, honest_root_10, forked_root_20, proof)
    # Nor can the honest log's proof reach the forked root.
    honest_proof = consistency_proof(LEAVES, 10, 20)
    with pytest.raises(TrustError, match="new root hash of size 20"):
        verify_consistency(10, 20, honest_root_10, forked_root_20, honest_proof)
    # Two different roots for one size are a fork by themselves.
    with pytest.raises(TrustError, match="a fork"):
        verify_consistency(10, 10, honest_root_10, root(fork[:10]), [])
    # Where the histories still agree (size 5), the forked log's proof is fine.
    verify_consistency(5, 20, root(LEAVES[:5]), forked_root_20, consistency_proof(fork, 5, 20))


H = b"\x11" * 32


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: verify_inclusion(H, 0, 0, [], H), "leaf index 0 is not inside a tree of size 0"),
        (lambda: verify_inclusion(H, 5, 5, [], H), "leaf index 5 is not inside a tree of size 5"),
        (lambda: verify_inclusion(H, -1, 5, [], H), "leaf index -1 is not inside a tree of size 5"),
        (lambda: verify_inclusion(H, True, 5, [], H), "must be integers"),
        (lambda: verify_inclusion(H[:31], 0, 1, [], H), "leaf hash is not 32 bytes"),
        (lambda: verify_inclusion(H, 0, 1, [], H + b"\x00"), "root hash is not 32 bytes"),
        (lambda: verify_inclusion(H, 0, 2, [b"short"], H), "proof hash 0 is not 32 bytes"),
        (lambda: verify_inclusion(H, 0, 2, [H] * 129, H), "more than 128"),
        (lambda: verify_inclusion(H, 0, 1, [], b"\x22" * 32), "does not lead to the root"),
        (lambda: verify_consistency(5, 3, H, H, [H]), "sizes 5 -> 3 are not 0 <= old <= new"),
        (lambda: verify_consistency(-1, 3, H, H, [H]), "sizes -1 -> 3"),
        (lambda: verify_consistency(0, 3, H, H, [H]), "from the empty tree must be empty"),
        (lambda: verify_consistency(3, 3, H, H, [H]), "between equal sizes must be empty"),
        (lambda: verify_consistency(3, 4, H, H, []), "empty proof from size 3 to 4"),
        (lambda: verify_consistency(3, 4, H[:1], H, [H]), "old root hash is not 32 bytes"),
        (lambda: inclusion_proof(LEAVES, 0, N + 1), f"only {N} leaves given"),
        (lambda: inclusion_proof(LEAVES, N, N), f"leaf index {N} is not inside"),
        (lambda: consistency_proof(LEAVES, 3, N + 1), f"only {N} leaves given"),
        (lambda: consistency_proof(LEAVES, 4, 3), "sizes 4 -> 3"),
        (lambda: consistency_ranges(1, 0), "sizes 1 -> 0"),
        (lambda: inclusion_ranges(0, 0), "not inside a tree of size 0"),
    ],
)
def test_bad_inputs(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(TrustError, match=message):
        call()


def test_range_helpers_describe_the_proofs() -> None:
    assert inclusion_ranges(5, 8) == [(4, 5), (6, 8), (0, 4)]
    assert consistency_ranges(6, 8) == [(4, 6), (6, 8), (0, 4)]
    assert consistency_ranges(4, 8) == [(4, 8)]  # the old root is implicit when old is a power of 2
    assert frontier_ranges(13) == [(0, 8), (8, 12), (12, 13)]
    assert frontier_ranges(0) == []
    for start in range(0, 40):
        for end in range(start, 41):
            parts = perfect_ranges(start, end)
            # Contiguous, aligned perfect subtrees covering exactly [start, end).
            edges = [start, *(b for _, b in parts)]
            assert [a for a, _ in parts] == edges[:-1]
            assert edges[-1] == end
            for a, b in parts:
                size = b - a
                assert size & (size - 1) == 0 and a % size == 0
    # Every proof range is one node of the tree: a perfect subtree or the right edge.
    for n in range(1, N + 1):
        for i in range(n):
            for a, b in inclusion_ranges(i, n):
                assert merkle.root(LEAVES[a:b]) == mth(LEAVES[a:b])


def test_tree_refuses_inconsistent_state() -> None:
    with pytest.raises(ValueError, match="a tree of size 3 has 2 frontier hashes"):
        MerkleTree(size=3, frontier=[H])
    with pytest.raises(ValueError, match="32 bytes"):
        MerkleTree().append(b"x")
    copy = MerkleTree()
    copy.append(H)
    other = copy.copy()
    other.append(H)
    assert copy.size == 1 and other.size == 2
