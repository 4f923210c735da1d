"""Compact nBits, Stratum difficulty and targets (difficulty 1 = 0xffff * 2**208)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pool.bitcoin.target import (
    DIFF1_TARGET,
    MAX_TARGET,
    bits_to_target,
    difficulty_to_target,
    hash_difficulty,
    target_bytes,
    target_to_difficulty,
)


def test_diff1_constant() -> None:
    assert DIFF1_TARGET == 0xFFFF * 2**208
    assert MAX_TARGET == 2**256 - 1


def test_bits_mainnet_diff1() -> None:
    assert bits_to_target(0x1D00FFFF) == 0xFFFF * 2**208
    assert target_to_difficulty(bits_to_target(0x1D00FFFF)) == 1.0


def test_bits_regtest() -> None:
    assert bits_to_target(0x207FFFFF) == 0x7FFFFF * 2 ** (8 * (0x20 - 3))
    assert target_to_difficulty(bits_to_target(0x207FFFFF)) == pytest.approx(4.6565423739069247e-10)


def test_bits_real_mainnet_block() -> None:
    # Block 413567's nBits (0x18058436); its target written out.
    assert bits_to_target(0x18058436) == 0x058436 * 2 ** (8 * (0x18 - 3))
    assert f"{bits_to_target(0x18058436):064x}" == "0000000000000000058436000000000000000000000000000000000000000000"


@pytest.mark.parametrize(("bits", "target"), [(0x01003456, 0), (0x02008000, 0x80), (0x03123456, 0x123456), (0x04123456, 0x12345600)])
def test_bits_small_exponents(bits: int, target: int) -> None:
    assert bits_to_target(bits) == target


def test_bits_negative_rejected() -> None:
    with pytest.raises(ValueError):
        bits_to_target(0x04923456)


def test_difficulty_one_and_integers() -> None:
    assert difficulty_to_target(1) == DIFF1_TARGET
    assert difficulty_to_target(2) == DIFF1_TARGET // 2
    assert difficulty_to_target(1024.0) == DIFF1_TARGET // 1024


def test_fractional_difficulty() -> None:
    assert difficulty_to_target(0.5) == 2 * DIFF1_TARGET
    # 1e-8 as the float it is, computed exactly.
    assert difficulty_to_target(1e-8) == int(Fraction(DIFF1_TARGET) / Fraction(1e-8))
    assert difficulty_to_target(1e-8) > DIFF1_TARGET * 10**7


def test_tiny_difficulty_saturates() -> None:
    assert difficulty_to_target(1e-12) == MAX_TARGET
    assert difficulty_to_target(2.0**-40) == MAX_TARGET
    assert target_bytes(difficulty_to_target(1e-30)) == b"\xff" * 32


@pytest.mark.parametrize("bad", [0, -1, -0.5])
def test_non_positive_difficulty_rejected(bad: float) -> None:
    with pytest.raises(ValueError):
        difficulty_to_target(bad)


def test_target_to_difficulty_rejects_zero() -> None:
    with pytest.raises(ValueError):
        target_to_difficulty(0)


@given(st.floats(min_value=1e-6, max_value=2.0**60, allow_nan=False, allow_infinity=False))
def test_target_to_difficulty_is_inverse(difficulty: float) -> None:
    assert target_to_difficulty(difficulty_to_target(difficulty)) == pytest.approx(difficulty, rel=1e-12)


def test_target_bytes_little_endian() -> None:
    assert target_bytes(1) == b"\x01" + b"\x00" * 31
    assert target_bytes(DIFF1_TARGET)[-6:] == b"\xff\xff\x00\x00\x00\x00"
    assert target_bytes(2**300) == b"\xff" * 32


def test_hash_difficulty() -> None:
    assert hash_difficulty(DIFF1_TARGET.to_bytes(32, "little")) == 1.0
    assert hash_difficulty((DIFF1_TARGET // 4).to_bytes(32, "little")) == pytest.approx(4.0)
    assert hash_difficulty(b"\x00" * 32) == float("inf")
