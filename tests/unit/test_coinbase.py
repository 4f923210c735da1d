"""Coinbase halves, segwit serialization and the witness commitment, checked by parsing the bytes."""

from __future__ import annotations

import hashlib

import pytest

from pool.bitcoin.coinbase import (
    WITNESS_COMMITMENT_HEADER,
    TxOut,
    build_coinbase,
    witness_commitment,
    witness_commitment_script,
)
from tests.unit.helpers import ZERO32, dsha, parse_whole_tx, ref_merkle_root, ref_witness_commitment_script

P2WPKH = bytes.fromhex("0014751e76e8199196d454941c45d1b3a323f1433bd6")
P2PKH = bytes.fromhex("76a91477bff20c60e522dfaa3350c39b030a5d004e839a88ac")
COMMITMENT = ref_witness_commitment_script([hashlib.sha256(b"w").digest()])
EN1 = bytes.fromhex("a1b2c3d4")
EN2 = bytes.fromhex("0011223344556677")


def _build(height: int = 500_000, tag: bytes = b"/pool/", size: int = 12, commitment: bytes | None = COMMITMENT):
    outputs = [TxOut(300_000_000, P2WPKH), TxOut(12_500_000, P2PKH)]
    return build_coinbase(height, outputs, tag, size, commitment), outputs


def test_assembled_coinbase_parses_as_a_transaction() -> None:
    parts, outputs = _build()
    tx = parse_whole_tx(parts.assemble(EN1, EN2))
    assert not tx.segwit
    assert len(tx.inputs) == 1
    prev, vout, script_sig, sequence = tx.inputs[0]
    assert prev == ZERO32 and vout == 0xFFFFFFFF
    assert sequence == 0xFFFFFFFF
    assert tx.locktime == 0
    assert tx.outputs[:-1] == [(o.value, o.script) for o in outputs]
    assert tx.outputs[-1] == (0, COMMITMENT)


@pytest.mark.parametrize(("height", "push"), [(1, "51"), (16, "60"), (17, "0111"), (500_000, "0320a107"), (840_000, "0340d10c")])
def test_scriptsig_starts_with_bip34_height(height: int, push: str) -> None:
    parts, _ = _build(height=height)
    script_sig = parse_whole_tx(parts.assemble(EN1, EN2)).inputs[0][2]
    assert script_sig.hex().startswith(push)
    # Then a push of exactly the extranonce bytes.
    rest = script_sig[len(push) // 2 :]
    assert rest[0] == len(EN1 + EN2)
    assert rest[1 : 1 + len(EN1 + EN2)] == EN1 + EN2


def test_extranonce_sits_where_coinb1_ends() -> None:
    parts, _ = _build()
    full = parts.assemble(EN1, EN2)
    assert full.startswith(parts.coinb1)
    assert full[len(parts.coinb1) : len(parts.coinb1) + 12] == EN1 + EN2
    assert full.endswith(parts.coinb2)
    assert parts.extranonce_size == 12
    # Different extranonces give different txids but the same layout.
    other = parse_whole_tx(parts.assemble(EN1, b"\xff" * 8))
    assert other.txid != parse_whole_tx(full).txid


def test_pool_tag_follows_extranonce() -> None:
    parts, _ = _build(tag=b"/my-pool/")
    script_sig = parse_whole_tx(parts.assemble(EN1, EN2)).inputs[0][2]
    assert script_sig.endswith(bytes([len(b"/my-pool/")]) + b"/my-pool/")


@pytest.mark.parametrize("size", [1, 8, 12, 16, 32, 75])
@pytest.mark.parametrize("height", [1, 500_000, 2**31 - 1])
def test_scriptsig_within_100_bytes_even_with_long_tag(size: int, height: int) -> None:
    parts, _ = _build(height=height, tag=b"T" * 200, size=size)
    script_sig = parse_whole_tx(parts.assemble(b"", b"\x00" * size)).inputs[0][2]
    assert 2 <= len(script_sig) <= 100
    # The tag is truncated, not dropped, when there is room for it.
    assert b"TTT" in script_sig


def test_short_tag_is_kept_whole_and_empty_tag_omitted() -> None:
    parts, _ = _build(tag=b"")
    script_sig = parse_whole_tx(parts.assemble(EN1, EN2)).inputs[0][2]
    assert script_sig == bytes.fromhex("0320a107") + bytes([12]) + EN1 + EN2


@pytest.mark.parametrize("size", [0, 76])
def test_extranonce_size_bounds(size: int) -> None:
    with pytest.raises(ValueError):
        build_coinbase(500_000, [TxOut(1, P2WPKH)], b"", size, None)


def test_no_commitment_output_without_segwit() -> None:
    parts, outputs = _build(commitment=None)
    tx = parse_whole_tx(parts.assemble(EN1, EN2))
    assert tx.outputs == [(o.value, o.script) for o in outputs]


def test_assemble_with_witness() -> None:
    parts, _ = _build()
    legacy = parts.assemble(EN1, EN2)
    segwit = parts.assemble_with_witness(EN1, EN2)
    assert segwit[4:6] == b"\x00\x01"
    tx = parse_whole_tx(segwit)
    assert tx.segwit
    assert tx.witnesses == [[ZERO32]]
    # Stripping the witness gives back the legacy serialization, so the txid is unchanged.
    assert tx.legacy == legacy
    assert tx.txid == dsha(legacy)
    assert tx.wtxid != tx.txid


def test_witness_commitment_matches_independent_computation() -> None:
    wtxids = [hashlib.sha256(bytes([i])).digest() for i in range(5)]
    expected_hash = dsha(ref_merkle_root([ZERO32, *wtxids]) + ZERO32)
    assert witness_commitment(wtxids) == expected_hash
    script = witness_commitment_script(expected_hash)
    assert script == ref_witness_commitment_script(wtxids)
    assert script[:6].hex() == "6a24aa21a9ed"
    assert WITNESS_COMMITMENT_HEADER.hex() == "aa21a9ed"
    assert len(script) == 38


def test_witness_commitment_of_coinbase_only_block() -> None:
    # A block with only a coinbase: the witness root is the zero hash itself.
    assert witness_commitment([]) == dsha(ZERO32 + ZERO32)


def test_txout_serialization() -> None:
    assert TxOut(1, b"\x51").serialize().hex() == "0100000000000000" + "01" + "51"
    assert TxOut(2**62, b"").serialize().hex() == "0000000000000040" + "00"
