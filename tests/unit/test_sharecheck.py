"""The C share check (``pool._sharecheck``) must agree byte for byte with the pure-Python specification.

Why so many cases: the C code has separate paths for SHA-NI and portable hashing, for coinbase pieces that
straddle 64-byte blocks, for merkle steps (precomputed padding) and for the header, and a mistake in any of them
would silently reject (or, worse, accept) real work. Every path is compared with ``check_share_py`` and
hashlib, in process (SHA-NI when the CPU has it) and in a subprocess forced onto the portable C code.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pool
from pool.bitcoin import sharecheck
from pool.bitcoin.sharecheck import BELOW_SHARE, BLOCK, SHARE, check_share_py, sha256d_py

try:
    from pool import _sharecheck as _c_module
except ImportError as exc:  # pragma: no cover - only without a compiled extension
    _c_module = None
    _C_IMPORT_ERROR: ImportError | None = exc
else:
    _C_IMPORT_ERROR = None

ALLOW_NO_C = os.environ.get("POOL_ALLOW_NO_C") == "1"
ALL_FF = b"\xff" * 32
ZERO32 = bytes(32)

GENESIS_COINBASE = bytes.fromhex(
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d0104455468"
    "652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66207365636f6e642062"
    "61696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a8"
    "28e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000"
)
GENESIS_HEADER = bytes.fromhex(
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f61"
    "7fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c"
)
GENESIS_HASH_DISPLAY = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
# Difficulty-1 target (nbits 0x1d00ffff), little-endian like the check_share arguments.
DIFF1_TARGET = (0xFFFF << 208).to_bytes(32, "little")


@pytest.fixture
def c() -> ModuleType:
    """The compiled module; a missing build is a failure unless POOL_ALLOW_NO_C=1 says it is expected."""
    if _c_module is None:
        if ALLOW_NO_C:
            pytest.skip(f"pool._sharecheck not built ({_C_IMPORT_ERROR}); POOL_ALLOW_NO_C=1")
        pytest.fail(f"pool._sharecheck failed to import: {_C_IMPORT_ERROR} (set POOL_ALLOW_NO_C=1 to skip)")
    return _c_module


def ref_sha256d(data: bytes) -> bytes:
    """hashlib, written out independently of the code under test."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def test_c_extension_loaded(c: ModuleType) -> None:
    """The hot path must really be the C one: a silent fallback to Python would cost ~6x in throughput."""
    assert sharecheck.C_LOADED is True
    assert sharecheck.check_share is c.check_share
    assert sharecheck.sha256d is c.sha256d
    assert sharecheck.HARDWARE_SHA == c.has_sha_ni()
    assert isinstance(c.has_sha_ni(), bool)


def test_sha_ni_in_use_when_cpu_has_it(c: ModuleType) -> None:
    """On a CPU with SHA extensions the in-process tests must exercise the SHA-NI code, not the fallback."""
    if os.environ.get("POOL_SHARECHECK_PORTABLE", "") not in ("", "0"):
        pytest.skip("portable path forced by POOL_SHARECHECK_PORTABLE")
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    if not {"sha_ni", "sse4_1", "ssse3"} <= flags:
        pytest.skip("CPU without SHA-NI: only the portable path can be tested here")
    assert c.has_sha_ni() is True


# --- sha256d ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "5df6e0e2761359d30a8275058e299fcc0381534545f55cf43e41983f5d4c9456"),
        (b"abc", "4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358"),
    ],
)
def test_sha256d_known_vectors(c: ModuleType, data: bytes, expected: str) -> None:
    """Published double-SHA-256 values pin the implementation to the standard, not just to hashlib."""
    assert c.sha256d(data).hex() == expected
    assert ref_sha256d(data).hex() == expected


def test_sha256d_all_lengths(c: ModuleType) -> None:
    """Every length 0..300 covers each padding case (55/56 and 119/120 bytes are the one/two block edges)."""
    rng = random.Random(1)
    for n in range(301):
        data = rng.randbytes(n)
        assert c.sha256d(data) == ref_sha256d(data), n
    for n in (55, 56, 63, 64, 65, 119, 120, 127, 128, 129):
        data = bytes(range(256))[:n] * 1
        assert c.sha256d(data) == ref_sha256d(data), n


def test_sha256d_random_and_buffer_types(c: ModuleType) -> None:
    """Large inputs and every bytes-like type the buffer protocol allows."""
    rng = random.Random(2)
    for _ in range(200):
        data = rng.randbytes(rng.randrange(5000))
        expected = ref_sha256d(data)
        assert c.sha256d(data) == expected
        assert c.sha256d(bytearray(data)) == expected
        assert c.sha256d(memoryview(data)) == expected
    big = rng.randbytes(1 << 20)
    assert c.sha256d(big) == ref_sha256d(big)
    assert sha256d_py(big) == ref_sha256d(big)


def test_sha256d_rejects_non_buffers(c: ModuleType) -> None:
    """Same exception type as hashlib for things that are not bytes."""
    with pytest.raises(TypeError):
        c.sha256d("abc")
    with pytest.raises(TypeError):
        sha256d_py("abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c.sha256d()
    with pytest.raises(TypeError):
        c.sha256d(b"a", b"b")


# --- check_share against the Python specification --------------------------------------------------------

INT_EDGES = [
    0,
    1,
    0xFFFFFFFF,
    1 << 32,
    (1 << 32) + 7,
    -1,
    -(1 << 31),
    -(1 << 40) - 3,
    (1 << 64) + 5,
    1 << 200,
    -(1 << 300),
]


def random_u32ish(rng: random.Random) -> int:
    """Mostly valid 32-bit values, sometimes ones the reference has to mask (negative, wide, huge)."""
    pick = rng.random()
    if pick < 0.6:
        return rng.getrandbits(32)
    if pick < 0.8:
        return rng.choice(INT_EDGES)
    return rng.randrange(-(1 << 100), 1 << 100)


def target_near(rng: random.Random, value: int) -> bytes:
    """A 32-byte little-endian target exactly at, just below or just above a hash, or an extreme."""
    choice = rng.randrange(7)
    if choice == 0:
        t = value
    elif choice == 1:
        t = value - 1
    elif choice == 2:
        t = value + 1
    elif choice == 3:
        t = value ^ (1 << rng.randrange(256))  # differs in one bit, anywhere
    elif choice == 4:
        return ALL_FF
    elif choice == 5:
        return ZERO32
    else:
        return rng.randbytes(32)
    return min(max(t, 0), (1 << 256) - 1).to_bytes(32, "little")


def random_case(rng: random.Random) -> tuple[Any, ...]:
    """One argument tuple; targets are picked relative to the real hash so all three codes occur."""
    coinb1 = rng.randbytes(rng.randrange(601))
    en1 = rng.randbytes(rng.randrange(17))
    en2 = rng.randbytes(rng.randrange(17))
    coinb2 = rng.randbytes(rng.randrange(601))
    branch = rng.randbytes(32 * rng.randrange(15))
    version = random_u32ish(rng)
    prevhash = rng.randbytes(32)
    ntime, nbits, nonce = random_u32ish(rng), random_u32ish(rng), random_u32ish(rng)
    _, digest, _ = check_share_py(
        coinb1, en1, en2, coinb2, branch, version, prevhash, ntime, nbits, nonce, ZERO32, ZERO32
    )
    value = int.from_bytes(digest, "little")
    share_target = target_near(rng, value)
    network_target = target_near(rng, value)
    return (
        coinb1,
        en1,
        en2,
        coinb2,
        branch,
        version,
        prevhash,
        ntime,
        nbits,
        nonce,
        share_target,
        network_target,
    )


def test_check_share_matches_python_on_random_cases(c: ModuleType) -> None:
    """3000 random shares: identical (code, hash, header), and every result code is exercised."""
    rng = random.Random(20240601)
    codes = {BELOW_SHARE: 0, SHARE: 0, BLOCK: 0}
    for i in range(3000):
        args = random_case(rng)
        expected = check_share_py(*args)
        got = c.check_share(*args)
        assert got == expected, f"case {i}: {args!r}"
        assert type(got[0]) is int and len(got[1]) == 32 and len(got[2]) == 80
        codes[got[0]] += 1
    assert all(n > 100 for n in codes.values()), codes


def test_check_share_piece_boundaries(c: ModuleType) -> None:
    """Coinbase pieces that end exactly on, before and after 64-byte block edges (the streaming code)."""
    rng = random.Random(3)
    branch = rng.randbytes(32 * 3)
    prevhash = rng.randbytes(32)
    for total in (0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 191, 192, 193, 256, 1000):
        data = rng.randbytes(total)
        for _ in range(20):
            cuts = sorted(rng.randrange(total + 1) for _ in range(3))
            parts = data[: cuts[0]], data[cuts[0] : cuts[1]], data[cuts[1] : cuts[2]], data[cuts[2] :]
            args = (*parts, branch, 0x20000000, prevhash, 1700000000, 0x207FFFFF, 7, ALL_FF, ZERO32)
            assert c.check_share(*args) == check_share_py(*args)


def test_check_share_large_coinbase(c: ModuleType) -> None:
    """Any coinbase size works (no fixed-size buffer), including 100 kB and more."""
    rng = random.Random(4)
    for size in (4096, 100_000, 1 << 20):
        args = (
            rng.randbytes(size),
            b"\x01" * 4,
            b"\x02" * 8,
            rng.randbytes(77),
            rng.randbytes(32 * 12),
            1,
            bytes(32),
            2,
            3,
            4,
            ALL_FF,
            ZERO32,
        )
        assert c.check_share(*args) == check_share_py(*args)


def test_check_share_bytes_like_arguments(c: ModuleType) -> None:
    """bytearray and memoryview are accepted wherever the Python version accepts them."""
    rng = random.Random(5)
    for _ in range(50):
        args = list(random_case(rng))
        expected = check_share_py(*args)
        for i in (0, 1, 2, 3, 4, 6, 10, 11):
            mixed = list(args)
            mixed[i] = bytearray(mixed[i])
            assert c.check_share(*mixed) == expected
        views = [memoryview(a) if isinstance(a, bytes) else a for a in args]
        assert c.check_share(*views) == expected


def test_check_share_keywords(c: ModuleType) -> None:
    """Keyword calls bind like the Python signature does."""
    rng = random.Random(6)
    args = random_case(rng)
    names = [
        "coinb1",
        "extranonce1",
        "extranonce2",
        "coinb2",
        "branch",
        "version",
        "prevhash",
        "ntime",
        "nbits",
        "nonce",
        "share_target",
        "network_target",
    ]
    expected = check_share_py(*args)
    assert c.check_share(**dict(zip(names, args, strict=True))) == expected
    assert c.check_share(*args[:5], **dict(zip(names[5:], args[5:], strict=True))) == expected
    for fn in (c.check_share, check_share_py):
        with pytest.raises(TypeError):
            fn(*args, coinb1=b"")
        with pytest.raises(TypeError):
            fn(*args[:11])
        with pytest.raises(TypeError):
            fn(*args, b"")
        with pytest.raises(TypeError):
            fn(*args[:11], bogus=ZERO32)


def test_check_share_int_masking(c: ModuleType) -> None:
    """Header ints are masked to 32 bits exactly as ``x & 0xFFFFFFFF`` does, bools included."""
    base = [b"cb1", b"\x00" * 4, b"\x11" * 8, b"cb2", b"", 0, ZERO32, 0, 0, 0, ALL_FF, ZERO32]
    for pos in (5, 7, 8, 9):
        for value in [*INT_EDGES, True, False, 0x1234_5678_9ABC_DEF0]:
            args = list(base)
            args[pos] = value
            assert c.check_share(*args) == check_share_py(*args), (pos, value)


class _AndOnly:
    """An object that supports ``&`` (like numpy integers) but is not an int."""

    def __and__(self, other: int) -> int:
        return 0x0BADF00D & other


def test_check_share_non_int_operands(c: ModuleType) -> None:
    """Non-int header fields behave like in the reference: ``&`` decides, else TypeError."""
    base = [b"cb1", b"", b"", b"cb2", b"", 1, ZERO32, 2, 3, 4, ALL_FF, ZERO32]
    args = list(base)
    args[9] = _AndOnly()
    assert c.check_share(*args) == check_share_py(*args)
    for bad in (1.5, "7", None, b"\x01"):
        for pos in (5, 7, 8, 9):
            args = list(base)
            args[pos] = bad
            with pytest.raises(TypeError):
                check_share_py(*args)
            with pytest.raises(TypeError):
                c.check_share(*args)


@pytest.mark.parametrize(
    ("pos", "value"),
    [
        (4, b"\x00" * 31),
        (4, b"\x00" * 33),
        (4, b"\x00" * 1),
        (6, b"\x00" * 31),
        (6, b"\x00" * 33),
        (6, b""),
        (10, b"\x00" * 31),
        (10, b"\x00" * 33),
        (11, b"\x00" * 31),
        (11, b""),
        (11, b"\x00" * 64),
    ],
)
def test_check_share_bad_lengths(c: ModuleType, pos: int, value: bytes) -> None:
    """Malformed sizes raise ValueError in both implementations (checked before any hashing)."""
    args = [b"cb1", b"", b"", b"cb2", b"\x00" * 64, 1, ZERO32, 2, 3, 4, ALL_FF, ZERO32]
    args[pos] = value
    with pytest.raises(ValueError) as py_err:
        check_share_py(*args)
    with pytest.raises(ValueError) as c_err:
        c.check_share(*args)
    assert str(c_err.value) == str(py_err.value)


def test_check_share_bad_types(c: ModuleType) -> None:
    """Non-bytes pieces raise TypeError in both implementations."""
    base = [b"cb1", b"", b"", b"cb2", b"", 1, ZERO32, 2, 3, 4, ALL_FF, ZERO32]
    for pos in (0, 1, 2, 3):
        for bad in ("text", 5, None):
            args = list(base)
            args[pos] = bad
            with pytest.raises(TypeError):
                check_share_py(*args)
            with pytest.raises(TypeError):
                c.check_share(*args)


@settings(max_examples=300, deadline=None)
@given(
    coinb1=st.binary(max_size=200),
    extranonce1=st.binary(max_size=16),
    extranonce2=st.binary(max_size=16),
    coinb2=st.binary(max_size=200),
    depth=st.integers(0, 14),
    seed=st.binary(min_size=32, max_size=32),
    version=st.integers(-(1 << 70), 1 << 70),
    ntime=st.integers(0, (1 << 32) - 1),
    nbits=st.integers(0, (1 << 32) - 1),
    nonce=st.integers(-(1 << 33), 1 << 33),
    share_target=st.binary(min_size=32, max_size=32),
    network_target=st.binary(min_size=32, max_size=32),
)
def test_check_share_property(
    coinb1: bytes,
    extranonce1: bytes,
    extranonce2: bytes,
    coinb2: bytes,
    depth: int,
    seed: bytes,
    version: int,
    ntime: int,
    nbits: int,
    nonce: int,
    share_target: bytes,
    network_target: bytes,
) -> None:
    """Hypothesis shrinks any disagreement to a minimal example."""
    if _c_module is None:
        if ALLOW_NO_C:
            pytest.skip("pool._sharecheck not built")
        pytest.fail(f"pool._sharecheck failed to import: {_C_IMPORT_ERROR}")
    branch = b"".join(hashlib.sha256(seed + bytes([i])).digest() for i in range(depth))
    args = (
        coinb1,
        extranonce1,
        extranonce2,
        coinb2,
        branch,
        version,
        seed,
        ntime,
        nbits,
        nonce,
        share_target,
        network_target,
    )
    assert _c_module.check_share(*args) == check_share_py(*args)


# --- a real block ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["c", "py"])
def test_genesis_block(request: pytest.FixtureRequest, impl: str) -> None:
    """Bitcoin's genesis block, rebuilt from its coinbase split at arbitrary extranonce positions.

    The Python run does not need the C module, so the specification itself is checked even without a build.
    """
    fn = request.getfixturevalue("c").check_share if impl == "c" else check_share_py
    rng = random.Random(7)
    n = len(GENESIS_COINBASE)
    for _ in range(25):
        a = rng.randrange(n + 1)
        b = rng.randrange(a, min(a + 16, n) + 1)
        cc = rng.randrange(b, min(b + 16, n) + 1)
        pieces = GENESIS_COINBASE[:a], GENESIS_COINBASE[a:b], GENESIS_COINBASE[b:cc], GENESIS_COINBASE[cc:]
        code, digest, header = fn(
            *pieces, b"", 1, ZERO32, 1231006505, 0x1D00FFFF, 2083236893, DIFF1_TARGET, ZERO32
        )
        assert digest[::-1].hex() == GENESIS_HASH_DISPLAY
        assert header == GENESIS_HEADER
        assert code == SHARE  # meets difficulty 1, not the (impossible) all-zero network target
        code, _, _ = fn(*pieces, b"", 1, ZERO32, 1231006505, 0x1D00FFFF, 2083236893, ALL_FF, DIFF1_TARGET)
        assert code == BLOCK
        _, digest2, _ = fn(*pieces, b"", 1, ZERO32, 1231006505, 0x1D00FFFF, 2083236894, ALL_FF, DIFF1_TARGET)
        assert digest2 != digest
    # Exactly at the target is a pass, one below it is not.
    value = int.from_bytes(digest, "little")
    at = value.to_bytes(32, "little")
    below = (value - 1).to_bytes(32, "little")
    args = (GENESIS_COINBASE, b"", b"", b"", b"", 1, ZERO32, 1231006505, 0x1D00FFFF, 2083236893)
    assert fn(*args, at, below)[0] == SHARE
    assert fn(*args, below, at)[0] == BLOCK
    assert fn(*args, below, below)[0] == BELOW_SHARE


# --- the portable C path, in a subprocess ----------------------------------------------------------------

_CHILD = """
import json, sys
from pool import _sharecheck as c
cases = json.loads(sys.stdin.read())
out = {"sha_ni": c.has_sha_ni(), "shares": [], "hashes": []}
for case in cases["shares"]:
    args = [bytes.fromhex(a) if isinstance(a, str) else a for a in case]
    code, digest, header = c.check_share(*args)
    out["shares"].append([code, digest.hex(), header.hex()])
for data in cases["hashes"]:
    out["hashes"].append(c.sha256d(bytes.fromhex(data)).hex())
print(json.dumps(out))
"""


def test_portable_path_matches(c: ModuleType) -> None:
    """POOL_SHARECHECK_PORTABLE=1 selects the plain C code; it must agree with SHA-NI and with Python."""
    rng = random.Random(8)
    cases = [random_case(rng) for _ in range(400)]
    cases.append(
        (
            GENESIS_COINBASE[:50],
            GENESIS_COINBASE[50:54],
            GENESIS_COINBASE[54:62],
            GENESIS_COINBASE[62:],
            b"",
            1,
            ZERO32,
            1231006505,
            0x1D00FFFF,
            2083236893,
            DIFF1_TARGET,
            ZERO32,
        )
    )
    hashes = [rng.randbytes(n) for n in [*range(0, 300), 1000, 4096, 65537]]
    payload = {
        "shares": [[a.hex() if isinstance(a, bytes) else a for a in case] for case in cases],
        "hashes": [h.hex() for h in hashes],
    }
    env = dict(os.environ, POOL_SHARECHECK_PORTABLE="1")
    package_parent = str(Path(pool.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout)
    assert child["sha_ni"] is False
    for case, (code, digest, header) in zip(cases, child["shares"], strict=True):
        expected = check_share_py(*case)
        assert (code, bytes.fromhex(digest), bytes.fromhex(header)) == expected
        assert c.check_share(*case) == expected
    for data, digest in zip(hashes, child["hashes"], strict=True):
        assert bytes.fromhex(digest) == ref_sha256d(data) == c.sha256d(data)
    assert genesis_ok(child["shares"][-1])


def genesis_ok(result: list[Any]) -> bool:
    """The portable path reproduces the genesis block too (the last case sent to the child)."""
    return bytes.fromhex(result[1])[::-1].hex() == GENESIS_HASH_DISPLAY and result[0] == SHARE
