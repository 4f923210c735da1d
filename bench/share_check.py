"""Share-check throughput: the C extension vs the pure-Python specification vs the best plain hashlib can do.

Why: every submitted share is checked on the event loop, so shares/s per core bounds how many miners one
process can serve. The C path is expected to beat the pure-Python ``check_share_py`` by at least 8x; the
hashlib baseline (the same hashing with no argument checks, no struct packing and no comparisons) shows how
much of the pure-Python cost is hashing and how much is interpreter overhead.

Usage: ``python bench/share_check.py [--seconds 1.5] [--repeats 5] [--check]``. Exits 0 unless ``--check``
is given and the 8x target is missed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 8.0
VARIANTS = 4096  # distinct extranonce2/nonce values cycled through, so nothing can be cached between calls
BATCH = 1000  # calls between clock reads


def import_pool() -> tuple[ModuleType, ModuleType | None]:
    """Import the package from this checkout even when it is not installed (the bench runs from a clone)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    sharecheck = importlib.import_module("pool.bitcoin.sharecheck")
    try:
        c_module = importlib.import_module("pool._sharecheck")
    except ImportError:
        c_module = None
    return sharecheck, c_module


class Share:
    """A realistic share: ~200-byte coinbase split around 4+8 bytes of extranonce, 12-level branch."""

    def __init__(self) -> None:
        rng = random.Random(2024)
        self.coinb1 = rng.randbytes(90)
        self.extranonce1 = rng.randbytes(4)
        self.extranonce2s = [rng.randbytes(8) for _ in range(VARIANTS)]
        self.coinb2 = rng.randbytes(100)
        self.branch_list = [rng.randbytes(32) for _ in range(12)]
        self.branch = b"".join(self.branch_list)
        self.version = 0x20000000
        self.prevhash = rng.randbytes(32)
        self.ntime = 1_700_000_000
        self.nbits = 0x1703A30C
        self.share_target = (0xFFFF << 208).to_bytes(32, "little")  # difficulty 1: nearly every hash misses
        self.network_target = (0x03A30C << 176).to_bytes(32, "little")


def time_loop(run_batch: Callable[[int], None], seconds: float, repeats: int) -> float:
    """Best shares/s over ``repeats`` runs of ``seconds / repeats`` each (best-of filters scheduler noise)."""
    per_run = seconds / repeats
    best = 0.0
    start_index = 0
    for _ in range(repeats):
        calls = 0
        t0 = time.perf_counter()
        deadline = t0 + per_run
        while True:
            run_batch(start_index)
            start_index += BATCH
            calls += BATCH
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, calls / (now - t0))
    return best


def make_check_share_batch(fn: Callable[..., tuple[int, bytes, bytes]], s: Share) -> Callable[[int], None]:
    """A batch runner calling ``fn`` exactly as the server does, with varying extranonce2 and nonce."""
    coinb1, en1, en2s, coinb2, branch = s.coinb1, s.extranonce1, s.extranonce2s, s.coinb2, s.branch
    version, prevhash, ntime, nbits = s.version, s.prevhash, s.ntime, s.nbits
    share_target, network_target = s.share_target, s.network_target
    mask = VARIANTS - 1

    def run(start: int) -> None:
        for i in range(start, start + BATCH):
            fn(
                coinb1,
                en1,
                en2s[i & mask],
                coinb2,
                branch,
                version,
                prevhash,
                ntime,
                nbits,
                i,
                share_target,
                network_target,
            )

    return run


def make_hashlib_batch(s: Share) -> Callable[[int], None]:
    """The same hashing with hashlib inline and nothing else: the floor for any pure-Python check."""
    sha256 = hashlib.sha256
    coinb1, en1, en2s, coinb2, branch_list = s.coinb1, s.extranonce1, s.extranonce2s, s.coinb2, s.branch_list
    head = s.version.to_bytes(4, "little") + s.prevhash
    tail = s.ntime.to_bytes(4, "little") + s.nbits.to_bytes(4, "little")
    nonces = [i.to_bytes(4, "little") for i in range(VARIANTS)]
    mask = VARIANTS - 1

    def run(start: int) -> None:
        for i in range(start, start + BATCH):
            j = i & mask
            h = sha256(sha256(coinb1 + en1 + en2s[j] + coinb2).digest()).digest()
            for b in branch_list:
                h = sha256(sha256(h + b).digest()).digest()
            sha256(sha256(head + h + tail + nonces[j]).digest()).digest()

    return run


def portable_rate(seconds: float, repeats: int) -> tuple[float | None, str]:
    """Rate of the portable C path, measured in a child with POOL_SHARECHECK_PORTABLE=1 (chosen at import)."""
    env = dict(os.environ, POOL_SHARECHECK_PORTABLE="1")
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--portable-child",
        "--seconds",
        str(seconds),
        "--repeats",
        str(repeats),
    ]
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=120 + 10 * seconds, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"child failed: {exc}"
    if proc.returncode != 0:
        return None, f"child exited {proc.returncode}: {proc.stderr.strip()[-300:]}"
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None, f"unreadable child output: {proc.stdout[-300:]!r}"
    if result.get("sha_ni"):
        return None, "child still used SHA-NI"
    return float(result["rate"]), ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line; --portable-child is internal (the parent re-runs this script with the env override)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=1.5, help="time budget per implementation (default 1.5)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs per implementation, best one counts")
    parser.add_argument("--check", action="store_true", help="exit 1 if C/pure-Python is below 8x")
    parser.add_argument("--portable-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.repeats < 1:
        parser.error("--seconds must be > 0 and --repeats >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run all measurements and print one line per figure; the last line is the PASS/FAIL verdict."""
    args = parse_args(argv)
    sharecheck, c_module = import_pool()
    share = Share()

    if args.portable_child:
        if c_module is None:
            print(json.dumps({"error": "no C module"}))
            return 1
        rate = time_loop(make_check_share_batch(c_module.check_share, share), args.seconds, args.repeats)
        print(json.dumps({"rate": rate, "sha_ni": bool(c_module.has_sha_ni())}))
        return 0

    # Same answers first: a fast wrong implementation is not a result.
    expected = sharecheck.check_share_py(
        share.coinb1,
        share.extranonce1,
        share.extranonce2s[0],
        share.coinb2,
        share.branch,
        share.version,
        share.prevhash,
        share.ntime,
        share.nbits,
        0,
        share.share_target,
        share.network_target,
    )

    sizes = "+".join(
        str(len(p)) for p in (share.coinb1, share.extranonce1, share.extranonce2s[0], share.coinb2)
    )
    print(
        f"share check benchmark: coinbase {sizes} bytes, {len(share.branch_list)}-level branch, "
        f"{args.seconds:.2f}s x{args.repeats} per path"
    )

    c_rate: float | None = None
    if c_module is None:
        print("C extension (pool._sharecheck): NOT BUILT (run: python setup.py build_ext --inplace)")
    else:
        got = c_module.check_share(
            share.coinb1,
            share.extranonce1,
            share.extranonce2s[0],
            share.coinb2,
            share.branch,
            share.version,
            share.prevhash,
            share.ntime,
            share.nbits,
            0,
            share.share_target,
            share.network_target,
        )
        if got != expected:
            print("C extension disagrees with check_share_py: not timing it")
        else:
            c_rate = time_loop(
                make_check_share_batch(c_module.check_share, share), args.seconds, args.repeats
            )
            print(
                f"C check_share:        {c_rate:>12,.0f} shares/s   (SHA-NI: {'yes' if c_module.has_sha_ni() else 'no'})"
            )

    py_rate = time_loop(make_check_share_batch(sharecheck.check_share_py, share), args.seconds, args.repeats)
    print(f"pure-Python:          {py_rate:>12,.0f} shares/s")
    hl_rate = time_loop(make_hashlib_batch(share), args.seconds, args.repeats)
    print(f"hashlib baseline:     {hl_rate:>12,.0f} shares/s   (hashing only, no checks)")

    if c_module is not None:
        if c_module.has_sha_ni():
            port_rate, why = portable_rate(args.seconds, args.repeats)
            if port_rate is None:
                print(f"C portable path:      unavailable ({why})")
            else:
                print(f"C portable path:      {port_rate:>12,.0f} shares/s   (POOL_SHARECHECK_PORTABLE=1)")
        else:
            print("C portable path:      same as the C figure above (no SHA-NI in use)")

    if c_rate is not None:
        ratio = c_rate / py_rate
        print(f"C / pure-Python:      {ratio:>12.2f}x")
        print(f"C / hashlib baseline: {c_rate / hl_rate:>12.2f}x")
    else:
        ratio = 0.0
    passed = ratio >= TARGET_RATIO
    print(f"target C/pure-Python >= {TARGET_RATIO:g}x: {'PASS' if passed else 'FAIL'}")
    return 1 if (args.check and not passed) else 0


if __name__ == "__main__":
    sys.exit(main())
