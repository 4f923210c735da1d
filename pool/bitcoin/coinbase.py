"""Coinbase transactions split around the extranonce, and the segwit witness commitment.

The miner receives the coinbase in two halves (``coinb1``/``coinb2``) and inserts extranonce1 + extranonce2
between them, so every connection hashes a distinct coinbase without the pool sending new work. The halves are
the *legacy* serialization (what the txid commits to); the block itself carries the segwit serialization with
the 32-byte witness reserved value (BIP 141).

Merkle trees live here too: the coinbase is always leaf 0, so the branch a miner needs to rebuild the root is
the list of siblings on leaf 0's path, which depends only on the other transactions (computed once per
template). All hashes are in internal byte order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pool.bitcoin.serialize import compact_size, push_data, push_script_number
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


WITNESS_RESERVED_VALUE = b"\x00" * 32
WITNESS_COMMITMENT_HEADER = b"\xaa\x21\xa9\xed"
MAX_SCRIPTSIG = 100


@dataclass(frozen=True, slots=True)
class TxOut:
    """One coinbase output: value in satoshis and its output script."""

    value: int
    script: bytes

    def serialize(self) -> bytes:
        return struct.pack("<q", self.value) + compact_size(len(self.script)) + self.script


@dataclass(frozen=True, slots=True)
class CoinbaseParts:
    """The legacy coinbase split around the extranonce, plus what the full block needs."""

    coinb1: bytes
    coinb2: bytes
    extranonce_size: int

    def assemble(self, extranonce1: bytes, extranonce2: bytes) -> bytes:
        """Legacy (txid) serialization with the given extranonces."""
        return self.coinb1 + extranonce1 + extranonce2 + self.coinb2

    def assemble_with_witness(self, extranonce1: bytes, extranonce2: bytes) -> bytes:
        """Segwit serialization for the block: marker, flag and the witness reserved value."""
        legacy = self.assemble(extranonce1, extranonce2)
        # legacy = version(4) | inputs... outputs... | locktime(4); witness goes before the locktime.
        return legacy[:4] + b"\x00\x01" + legacy[4:-4] + b"\x01\x20" + WITNESS_RESERVED_VALUE + legacy[-4:]


def witness_commitment(wtxids: list[bytes]) -> bytes:
    """Commitment hash over the block's wtxids (internal order, coinbase excluded: it counts as zero)."""
    root = merkle_root([b"\x00" * 32, *wtxids])
    return sha256d(root + WITNESS_RESERVED_VALUE)


def witness_commitment_script(commitment: bytes) -> bytes:
    """OP_RETURN output script carrying the witness commitment."""
    return b"\x6a\x24" + WITNESS_COMMITMENT_HEADER + commitment


def build_coinbase(
    height: int,
    outputs: list[TxOut],
    pool_tag: bytes,
    extranonce_size: int,
    commitment_script: bytes | None,
) -> CoinbaseParts:
    """Split coinbase for ``height`` paying ``outputs`` (the witness commitment output goes last).

    scriptSig = BIP34 height push | push(extranonce1 + extranonce2) | push(pool tag). The pool tag is cut so
    the scriptSig stays within the 100-byte consensus limit.
    """
    if not 1 <= extranonce_size <= 75:
        raise ValueError("extranonce size must be 1..75 bytes")
    height_push = push_script_number(height)
    room = MAX_SCRIPTSIG - len(height_push) - 1 - extranonce_size - 1
    tag = pool_tag[: max(0, min(room, 75))]
    script_prefix = height_push + bytes([extranonce_size])
    script_suffix = push_data(tag) if tag else b""
    script_len = len(script_prefix) + extranonce_size + len(script_suffix)
    if script_len < 2:
        raise ValueError("coinbase scriptSig too short")
    all_outputs = list(outputs)
    if commitment_script is not None:
        all_outputs.append(TxOut(0, commitment_script))
    coinb1 = (
        struct.pack("<i", 2)
        + b"\x01"
        + b"\x00" * 32
        + b"\xff\xff\xff\xff"
        + compact_size(script_len)
        + script_prefix
    )
    coinb2 = (
        script_suffix
        + b"\xff\xff\xff\xff"
        + compact_size(len(all_outputs))
        + b"".join(o.serialize() for o in all_outputs)
        + b"\x00\x00\x00\x00"
    )
    return CoinbaseParts(coinb1, coinb2, extranonce_size)
