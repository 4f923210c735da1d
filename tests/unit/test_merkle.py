"""Merkle root and coinbase branch: hand-made trees and a real mainnet block (413567)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pool.bitcoin.coinbase import fold_branch, merkle_branch, merkle_root
from tests.unit.helpers import dsha, parse_block, ref_merkle_root

BLOCK_413567_HASH = "0000000000000000025aff8be8a55df8f89c77296db6198f272d6577325d4069"


def _leaf(i: int) -> bytes:
    return hashlib.sha256(b"leaf" + bytes([i])).digest()


def _block_file() -> Path:
    from pool.node.regtest import BitcoindNotFound, find_bitcoind_dir

    candidates = []
    if os.environ.get("POOL_BITCOIND_DIR"):
        candidates.append(Path(os.environ["POOL_BITCOIND_DIR"]))
    try:
        candidates.append(find_bitcoind_dir())
    except BitcoindNotFound:
        pass
    for directory in candidates:
        path = Path(directory) / "block413567.raw"
        if path.is_file():
            return path
    message = f"block413567.raw not found in {[str(c) for c in candidates]}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def mainnet_block() -> tuple[bytes, list[bytes]]:
    raw = _block_file().read_bytes()
    block = parse_block(raw)
    return block.header, [tx.txid for tx in block.txs]


def test_mainnet_block_file_is_the_expected_block(mainnet_block: tuple[bytes, list[bytes]]) -> None:
    header, txids = mainnet_block
    assert dsha(header)[::-1].hex() == BLOCK_413567_HASH
    assert len(txids) > 1000


def test_merkle_root_of_real_block(mainnet_block: tuple[bytes, list[bytes]]) -> None:
    header, txids = mainnet_block
    assert merkle_root(txids) == header[36:68]


def test_branch_of_real_block_folds_to_header_root(mainnet_block: tuple[bytes, list[bytes]]) -> None:
    header, txids = mainnet_block
    branch = merkle_branch(txids[1:])
    assert fold_branch(txids[0], branch) == header[36:68]
    # The branch depth is ceil(log2(n)).
    assert len(branch) == (len(txids) - 1).bit_length()


def test_hand_computed_trees() -> None:
    a, b, c, d, e = (_leaf(i) for i in range(5))
    assert merkle_root([a]) == a
    assert merkle_root([a, b]) == dsha(a + b)
    ab, cc = dsha(a + b), dsha(c + c)
    assert merkle_root([a, b, c]) == dsha(ab + cc)
    cd = dsha(c + d)
    ee = dsha(e + e)
    abcd = dsha(ab + cd)
    eeee = dsha(ee + ee)
    assert merkle_root([a, b, c, d, e]) == dsha(abcd + eeee)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 33])
def test_root_and_branch_agree_with_reference(n: int) -> None:
    leaves = [_leaf(i) for i in range(n)]
    root = ref_merkle_root(leaves)
    assert merkle_root(leaves) == root
    branch = merkle_branch(leaves[1:])
    assert fold_branch(leaves[0], branch) == root
    # The branch does not depend on leaf 0: any coinbase folds to the tree with that coinbase.
    other = _leaf(200)
    assert fold_branch(other, branch) == ref_merkle_root([other, *leaves[1:]])


def test_branch_for_coinbase_only_block_is_empty() -> None:
    assert merkle_branch([]) == []
    assert fold_branch(_leaf(1), []) == _leaf(1)


def test_branch_entries_are_internal_order_siblings() -> None:
    a, b, c = (_leaf(i) for i in range(3))
    assert merkle_branch([b, c]) == [b, dsha(c + c)]


def test_empty_tree_is_an_error() -> None:
    with pytest.raises(ValueError):
        merkle_root([])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40))
def test_merkle_property(leaves: list[bytes]) -> None:
    assert merkle_root(leaves) == ref_merkle_root(leaves)
    assert fold_branch(leaves[0], merkle_branch(leaves[1:])) == ref_merkle_root(leaves)
