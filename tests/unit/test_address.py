"""Address decoding per network: BIP13 base58, BIP173 bech32 (v0) and BIP350 bech32m (v1+)."""

from __future__ import annotations

import hashlib

import pytest

from pool.bitcoin.address import AddressError, address_to_script
from tests.unit.helpers import base58check, segwit_address

H160 = bytes.fromhex("751e76e8199196d454941c45d1b3a323f1433bd6")
H256 = hashlib.sha256(b"script").digest()

VALID = [
    # BIP173 / BIP350 vectors
    ("main", "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("main", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    (
        "main",
        "bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3",
        "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262",
    ),
    (
        "test",
        "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
        "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262",
    ),
    (
        "test",
        "tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
        "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "main",
        "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
        "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6",
    ),
    ("main", "BC1SW50QGDZ25J", "6002751e"),
    ("main", "bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "5210751e76e8199196d454941c45d1b3a323"),
    (
        "test",
        "tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c",
        "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "main",
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    ),
    # Base58: well-known mainnet addresses
    ("main", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "76a91477bff20c60e522dfaa3350c39b030a5d004e839a88ac"),
    ("main", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac"),
    ("main", "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", "a914b472a266d0bd89c13706a4132ccfb16f7c3b9fcb87"),
]


@pytest.mark.parametrize(("network", "address", "script"), VALID)
def test_known_vectors(network: str, address: str, script: str) -> None:
    assert address_to_script(address, network).hex() == script


@pytest.mark.parametrize("network", ["test", "testnet4", "signet", "regtest"])
def test_testnet_family_base58(network: str) -> None:
    p2pkh = base58check(0x6F, H160)
    p2sh = base58check(0xC4, H160)
    assert p2pkh[0] in "mn" and p2sh[0] == "2"
    assert address_to_script(p2pkh, network) == b"\x76\xa9\x14" + H160 + b"\x88\xac"
    assert address_to_script(p2sh, network) == b"\xa9\x14" + H160 + b"\x87"


@pytest.mark.parametrize(("network", "hrp"), [("main", "bc"), ("test", "tb"), ("signet", "tb"), ("regtest", "bcrt")])
def test_generated_segwit_addresses(network: str, hrp: str) -> None:
    cases = [(0, H160), (0, H256), (1, H256), (2, H160[:2]), (16, H256 + H160[:8])]
    for witver, program in cases:
        address = segwit_address(hrp, witver, program)
        op = 0 if witver == 0 else 0x50 + witver
        assert address_to_script(address, network) == bytes([op, len(program)]) + program
        assert address_to_script(address.upper(), network) == bytes([op, len(program)]) + program


def test_regtest_p2tr_and_p2wpkh() -> None:
    assert address_to_script(segwit_address("bcrt", 0, H160), "regtest").hex() == "0014" + H160.hex()
    assert address_to_script(segwit_address("bcrt", 1, H256), "regtest").hex() == "5120" + H256.hex()


INVALID = [
    # bad checksums
    ("main", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5"),
    ("main", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3"),
    ("main", "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLz"),
    # wrong network
    ("main", "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7"),
    ("test", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"),
    ("regtest", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"),
    ("regtest", "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7"),
    ("regtest", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"),
    ("main", base58check(0x6F, H160)),
    ("main", base58check(0xC4, H160)),
    ("main", segwit_address("bcrt", 0, H160)),
    ("test", segwit_address("bcrt", 0, H160)),
    # mixed case
    ("test", "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq47Zagq"),
    ("main", "bc1qW508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"),
    # bech32 used for v1+, bech32m used for v0 (BIP350)
    ("main", "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd"),
    ("main", "BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL"),
    ("main", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh"),
    ("test", "tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47"),
    ("main", segwit_address("bc", 1, H256, force_const=1)),
    ("main", segwit_address("bc", 0, H160, force_const=0x2BC830A3)),
    # malformed: bad character, witness version 17, bad program lengths, bad padding, empty data
    ("main", "bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4"),
    ("main", "BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R"),
    ("main", "bc1pw5dgrnzv"),
    ("main", "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v8n0nx0muaewav253zgeav"),
    ("main", "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P"),
    ("main", "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf"),
    ("test", "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j"),
    ("main", "bc1gmk9yu"),
    ("main", segwit_address("bc", 0, H160[:16])),
    # base58 oddities
    ("main", "0BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"),
    ("main", "1111"),
    ("main", base58check(0x00, H160 + b"\x00")),
    # empty / overlong / unknown network
    ("main", ""),
    ("main", "bc1q" + "q" * 100),
]


@pytest.mark.parametrize(("network", "address"), INVALID)
def test_invalid_addresses_raise(network: str, address: str) -> None:
    with pytest.raises(AddressError):
        address_to_script(address, network)


def test_unknown_network() -> None:
    with pytest.raises(AddressError):
        address_to_script("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "mainnet")


def test_address_error_is_value_error() -> None:
    assert issubclass(AddressError, ValueError)
