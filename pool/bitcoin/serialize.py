"""Bitcoin wire serialization primitives: compact sizes, script numbers, hex helpers.

Pure functions; nothing here knows about sockets or the event loop.
"""

from __future__ import annotations

import struct


def compact_size(n: int) -> bytes:
    """Encode ``n`` as Bitcoin's variable-length integer (CompactSize)."""
    if n < 0:
        raise ValueError("compact size must be non-negative")
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def read_compact_size(data: bytes, offset: int) -> tuple[int, int]:
    """Decode a CompactSize at ``offset``; return ``(value, new_offset)``."""
    first = data[offset]
    if first < 0xFD:
        return first, offset + 1
    if first == 0xFD:
        return struct.unpack_from("<H", data, offset + 1)[0], offset + 3
    if first == 0xFE:
        return struct.unpack_from("<I", data, offset + 1)[0], offset + 5
    return struct.unpack_from("<Q", data, offset + 1)[0], offset + 9


def script_number(n: int) -> bytes:
    """Minimal little-endian sign-magnitude encoding used by CScriptNum (no push opcode)."""
    if n == 0:
        return b""
    negative = n < 0
    value = abs(n)
    out = bytearray()
    while value:
        out.append(value & 0xFF)
        value >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if negative else 0x00)
    elif negative:
        out[-1] |= 0x80
    return bytes(out)


def push_data(data: bytes) -> bytes:
    """Script push of raw bytes with the smallest opcode that fits."""
    n = len(data)
    if n < 0x4C:
        return bytes([n]) + data
    if n <= 0xFF:
        return b"\x4c" + bytes([n]) + data
    if n <= 0xFFFF:
        return b"\x4d" + struct.pack("<H", n) + data
    return b"\x4e" + struct.pack("<I", n) + data


def push_script_number(n: int) -> bytes:
    """Push an integer the way BIP34 requires for the block height (``CScript() << height``).

    Small values use OP_0 / OP_1..OP_16 exactly as Bitcoin Core's serializer does, so the coinbase of a
    low regtest height passes the consensus check byte for byte.
    """
    if n == 0:
        return b"\x00"
    if 1 <= n <= 16:
        return bytes([0x50 + n])
    if n == -1:
        return b"\x4f"
    return push_data(script_number(n))


def hash_to_hex(h: bytes) -> str:
    """Display hex (byte-reversed) of an internal-order hash."""
    return h[::-1].hex()


def hex_to_hash(s: str) -> bytes:
    """Internal-order bytes of a display-hex hash."""
    return bytes.fromhex(s)[::-1]
