"""Merkle trees as Bitcoin builds them, and the branch a miner needs to rebuild the root.

All hashes are in internal byte order. The coinbase is always leaf 0, so the branch is the list of siblings on
the path from leaf 0 to the root: it depends only on the template's other transactions and can be computed
once per template.
"""

from __future__ import annotations

from pool.bitcoin.sharecheck import sha256d


def merkle_root(leaves: list[bytes]) -> bytes:
    """Root of a Bitcoin merkle tree (odd levels duplicate their last entry)."""
    if not leaves:
        raise ValueError("merkle tree needs at least one leaf")
    level = list(leaves)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def merkle_branch(other_leaves: list[bytes]) -> list[bytes]:
    """Siblings of leaf 0 when leaf 0 (the coinbase) is prepended to ``other_leaves``.

    Leaf 0's own value never influences its siblings, so a placeholder stands in for it.
    """
    branch: list[bytes] = []
    level = [b"\x00" * 32, *other_leaves]
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        branch.append(level[1])
        level = [b"\x00" * 32] + [sha256d(level[i] + level[i + 1]) for i in range(2, len(level), 2)]
    return branch


def fold_branch(leaf: bytes, branch: list[bytes]) -> bytes:
    """Root reached from leaf 0 by hashing it with each branch entry in turn."""
    node = leaf
    for sibling in branch:
        node = sha256d(node + sibling)
    return node
