"""Targets, compact ``nBits`` and Stratum difficulty.

Difficulty 1 is the pool ("pdiff") definition every Stratum miner uses: ``0xffff * 2**208``. Difficulty may be
fractional; targets are plain integers compared with the header hash read as a little-endian number.
"""

from __future__ import annotations

from fractions import Fraction

DIFF1_TARGET = 0xFFFF * 2**208
MAX_TARGET = 2**256 - 1


def bits_to_target(bits: int) -> int:
    """Expand compact ``nBits`` into the full 256-bit target."""
    exponent = bits >> 24
    mantissa = bits & 0x007FFFFF
    if bits & 0x00800000:
        raise ValueError("negative compact target")
    if exponent <= 3:
        return mantissa >> (8 * (3 - exponent))
    return mantissa << (8 * (exponent - 3))


def difficulty_to_target(difficulty: float | Fraction | int) -> int:
    """Share target for a Stratum difficulty; tiny difficulties saturate at the largest 256-bit value."""
    if difficulty <= 0:
        raise ValueError("difficulty must be positive")
    target = int(Fraction(DIFF1_TARGET) / Fraction(difficulty))
    return min(target, MAX_TARGET)


def target_to_difficulty(target: int) -> float:
    """Stratum difficulty a target corresponds to (network difficulty for a block target)."""
    if target <= 0:
        raise ValueError("target must be positive")
    return DIFF1_TARGET / target


def hash_difficulty(block_hash: bytes) -> float:
    """Difficulty actually achieved by an internal-order hash: how much work the share proves."""
    value = int.from_bytes(block_hash, "little")
    return DIFF1_TARGET / value if value else float("inf")


def target_bytes(target: int) -> bytes:
    """32-byte little-endian form the share checker compares against."""
    return min(target, MAX_TARGET).to_bytes(32, "little")
