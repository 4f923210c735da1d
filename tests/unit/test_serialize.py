"""Wire serialization: CompactSize at every width boundary, CScriptNum and the BIP34 height push."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pool.bitcoin.serialize import (
    compact_size,
    hash_to_hex,
    hex_to_hash,
    push_data,
    push_script_number,
    read_compact_size,
    script_number,
)

COMPACT_CASES = [
    (0, "00"),
    (1, "01"),
    (0xFC, "fc"),
    (0xFD, "fdfd00"),
    (0xFE, "fdfe00"),
    (0xFFFF, "fdffff"),
    (0x10000, "fe00000100"),
    (2**32 - 1, "feffffffff"),
    (2**32, "ff0000000001000000"),
    (2**64 - 1, "ffffffffffffffffff"),
]


@pytest.mark.parametrize(("n", "encoded"), COMPACT_CASES)
def test_compact_size_encoding_at_boundaries(n: int, encoded: str) -> None:
    assert compact_size(n).hex() == encoded


@pytest.mark.parametrize(("n", "encoded"), COMPACT_CASES)
def test_read_compact_size_round_trip_with_offset(n: int, encoded: str) -> None:
    data = b"\xaa\xbb" + bytes.fromhex(encoded) + b"\xcc"
    value, end = read_compact_size(data, 2)
    assert value == n
    assert end == 2 + len(encoded) // 2
    assert data[end] == 0xCC


def test_compact_size_rejects_negative() -> None:
    with pytest.raises(ValueError):
        compact_size(-1)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_compact_size_round_trip_property(n: int) -> None:
    enc = compact_size(n)
    assert read_compact_size(enc, 0) == (n, len(enc))
    # Minimal: the encoding width is the smallest that fits.
    expected_len = 1 if n < 0xFD else 3 if n <= 0xFFFF else 5 if n <= 0xFFFFFFFF else 9
    assert len(enc) == expected_len


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, ""),
        (1, "01"),
        (16, "10"),
        (127, "7f"),
        (128, "8000"),
        (255, "ff00"),
        (256, "0001"),
        (32767, "ff7f"),
        (32768, "008000"),
        (500_000, "20a107"),
        (2**31 - 1, "ffffff7f"),
        (-1, "81"),
        (-127, "ff"),
        (-128, "8080"),
        (-255, "ff80"),
        (-256, "0081"),
        (-500_000, "20a187"),
    ],
)
def test_script_number_minimal_encoding(n: int, encoded: str) -> None:
    assert script_number(n).hex() == encoded


def _decode_script_number(data: bytes) -> int:
    """CScriptNum decoding (Bitcoin Core's set_vch), written independently."""
    if not data:
        return 0
    value = int.from_bytes(data, "little")
    if data[-1] & 0x80:
        return -(value & ~(0x80 << (8 * (len(data) - 1))))
    return value


@given(st.integers(min_value=-(2**63), max_value=2**63))
def test_script_number_round_trips_and_is_minimal(n: int) -> None:
    enc = script_number(n)
    assert _decode_script_number(enc) == n
    if enc:
        # Minimal encoding: the last byte carries value bits unless it is only a sign/extension byte that is needed.
        if enc[-1] & 0x7F == 0:
            assert len(enc) > 1 and enc[-2] & 0x80


@pytest.mark.parametrize(
    ("height", "encoded"),
    [
        (0, "00"),  # OP_0
        (1, "51"),  # OP_1
        (2, "52"),
        (16, "60"),  # OP_16
        (17, "0111"),
        (127, "017f"),
        (128, "028000"),
        (255, "02ff00"),
        (256, "020001"),
        (65535, "03ffff00"),
        (500_000, "0320a107"),
        (840_000, "0340d10c"),
        (-1, "4f"),  # OP_1NEGATE
        (-2, "0182"),
        (-128, "028080"),
    ],
)
def test_push_script_number_bip34(height: int, encoded: str) -> None:
    assert push_script_number(height).hex() == encoded


@pytest.mark.parametrize(
    ("length", "prefix"),
    [(0, "00"), (1, "01"), (75, "4b"), (76, "4c4c"), (255, "4cff"), (256, "4d0001"), (65535, "4dffff"), (65536, "4e00000100")],
)
def test_push_data_uses_smallest_opcode(length: int, prefix: str) -> None:
    data = bytes(range(256)) * (length // 256 + 1)
    data = data[:length]
    out = push_data(data)
    assert out.hex().startswith(prefix)
    assert out[len(prefix) // 2 :] == data


def test_hash_hex_helpers_reverse_bytes() -> None:
    internal = bytes(range(32))
    assert hash_to_hex(internal) == bytes(range(31, -1, -1)).hex()
    assert hex_to_hash(hash_to_hex(internal)) == internal
