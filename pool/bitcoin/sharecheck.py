"""The whole share check in one call, with a C implementation and a pure-Python twin.

Hot path: every submitted share goes through ``check_share``. The C extension ``pool._sharecheck`` does the
work with SHA-NI when the CPU has it; the pure-Python function below must return byte-identical results for
every input (tests compare both on thousands of random and real cases), so it doubles as the specification.

Result codes: ``BELOW_SHARE`` (hash above the share target), ``SHARE`` (meets the share target only),
``BLOCK`` (meets the network target, whatever the share target says). Targets are passed as 32-byte little-endian integers so the C side
can compare without big-number arithmetic.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

BELOW_SHARE: Final = 0
SHARE: Final = 1
BLOCK: Final = 2

_sha256 = hashlib.sha256


def sha256d_py(data: bytes) -> bytes:
    """Bitcoin's double SHA-256."""
    return _sha256(_sha256(data).digest()).digest()


def check_share_py(
    coinb1: bytes,
    extranonce1: bytes,
    extranonce2: bytes,
    coinb2: bytes,
    branch: bytes,
    version: int,
    prevhash: bytes,
    ntime: int,
    nbits: int,
    nonce: int,
    share_target: bytes,
    network_target: bytes,
) -> tuple[int, bytes, bytes]:
    """Return ``(code, block_hash, header)``.

    ``branch`` is the merkle branch as concatenated 32-byte hashes (internal byte order); ``prevhash`` is the
    32-byte previous block hash in header (internal) order; ``block_hash`` is the sha256d of the header in
    internal order (reverse it for display). Raises ValueError on malformed sizes, exactly like the C path.
    """
    if len(branch) % 32:
        raise ValueError("merkle branch length must be a multiple of 32")
    if len(prevhash) != 32:
        raise ValueError("prevhash must be 32 bytes")
    if len(share_target) != 32 or len(network_target) != 32:
        raise ValueError("targets must be 32 bytes")
    root = sha256d_py(coinb1 + extranonce1 + extranonce2 + coinb2)
    for i in range(0, len(branch), 32):
        root = sha256d_py(root + branch[i : i + 32])
    header = (
        struct.pack("<I", version & 0xFFFFFFFF)
        + prevhash
        + root
        + struct.pack("<III", ntime & 0xFFFFFFFF, nbits & 0xFFFFFFFF, nonce & 0xFFFFFFFF)
    )
    digest = sha256d_py(header)
    value = int.from_bytes(digest, "little")
    # The network test comes first: on regtest the network target is far easier than any share target.
    if value <= int.from_bytes(network_target, "little"):
        code = BLOCK
    elif value <= int.from_bytes(share_target, "little"):
        code = SHARE
    else:
        code = BELOW_SHARE
    return code, digest, header


try:  # pragma: no cover - exercised by the C-vs-Python tests
    from pool import _sharecheck as _c

    check_share = _c.check_share
    sha256d = _c.sha256d
    C_LOADED = True
    HARDWARE_SHA: bool = bool(_c.has_sha_ni())
except ImportError:  # pragma: no cover
    check_share = check_share_py
    sha256d = sha256d_py
    C_LOADED = False
    HARDWARE_SHA = False

__all__ = [
    "BELOW_SHARE",
    "BLOCK",
    "C_LOADED",
    "HARDWARE_SHA",
    "SHARE",
    "check_share",
    "check_share_py",
    "sha256d",
    "sha256d_py",
]
