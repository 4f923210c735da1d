"""Share validation: a submission in, an Accepted or Rejected value out.

Pure: the caller supplies the job lookup, the session's extranonce and difficulty, and the clock. Every
rejection is a ``Reject`` value; ``REJECT_ERRORS`` is the one table mapping reasons to Stratum error codes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from pool.bitcoin import sharecheck
from pool.bitcoin.target import difficulty_to_target, hash_difficulty, target_bytes
from pool.mining.jobs import Job, JobBook, Lookup

MAX_FUTURE_NTIME = 7000  # bitcoind refuses headers more than 2 h (7200 s) ahead of its clock
_HEX = re.compile(r"\A[0-9a-fA-F]+\Z")


class Reject(Enum):
    """Why a share was refused."""

    UNKNOWN_JOB = "unknown-job"
    STALE = "stale"
    DUPLICATE = "duplicate"
    LOW_DIFFICULTY = "low-difficulty"
    UNAUTHORIZED = "unauthorized"
    NOT_SUBSCRIBED = "not-subscribed"
    NTIME_OUT_OF_RANGE = "ntime-out-of-range"
    BAD_EXTRANONCE2 = "bad-extranonce2-length"
    MALFORMED = "malformed"
    BAD_VERSION = "version-bits-outside-mask"
    WRONG_PAYOUT = "job-pays-another-address"
    LEDGER_FAILED = "not-recorded"  # valid, but the ledger could not commit it: the miner should resubmit


REJECT_ERRORS: dict[Reject, tuple[int, str]] = {
    Reject.UNKNOWN_JOB: (21, "Job not found"),
    Reject.STALE: (21, "Stale job"),
    Reject.DUPLICATE: (22, "Duplicate share"),
    Reject.LOW_DIFFICULTY: (23, "Low difficulty share"),
    Reject.UNAUTHORIZED: (24, "Unauthorized worker"),
    Reject.NOT_SUBSCRIBED: (25, "Not subscribed"),
    Reject.NTIME_OUT_OF_RANGE: (20, "ntime out of range"),
    Reject.BAD_EXTRANONCE2: (20, "Incorrect size of extranonce2"),
    Reject.MALFORMED: (20, "Malformed share"),
    Reject.BAD_VERSION: (20, "Version bits outside the negotiated mask"),
    Reject.WRONG_PAYOUT: (20, "Job pays another address; submit under the worker it was sent for"),
    Reject.LEDGER_FAILED: (20, "Share not recorded, please resubmit"),
}


@dataclass(frozen=True, slots=True)
class Submission:
    """The parameters of one ``mining.submit``, still as the miner sent them."""

    worker: str
    job_id: str
    extranonce2: str
    ntime: str
    nonce: str
    version_bits: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid share; ``is_block`` when it also meets the network target."""

    job: Job
    difficulty: float
    hash_difficulty: float
    block_hash: bytes
    header: bytes
    extranonce1: bytes
    extranonce2: bytes
    is_block: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    """A refused share and a short human-readable detail for logs.

    ``block`` is set on a stale share that still solves its job's block: the miner is told "stale", but the
    block goes to bitcoind, which alone can say whether it still competes with the new tip.
    """

    reason: Reject
    detail: str = ""
    block: Accepted | None = None

    @property
    def error(self) -> tuple[int, str]:
        return REJECT_ERRORS[self.reason]


ShareResult = Accepted | Rejected


def _parse_u32(text: str, exact_len: bool) -> int | None:
    """Hex 32-bit value; nonce/ntime/version may be sent unpadded (NerdMiner) since the length is implied."""
    if not isinstance(text, str) or not 0 < len(text) <= 8 or not _HEX.match(text):
        return None
    if exact_len and len(text) != 8:
        return None
    return int(text, 16)


@dataclass(slots=True)
class TargetCache:
    """Share targets per difficulty, so the hot path does not redo big-number division per share."""

    _cache: dict[float, bytes]

    def __init__(self) -> None:
        self._cache = {}

    def get(self, difficulty: float) -> bytes:
        cached = self._cache.get(difficulty)
        if cached is None:
            if len(self._cache) > 65_536:  # one entry per live difficulty; vardiff gives every miner its own
                self._cache.clear()
            cached = self._cache[difficulty] = target_bytes(difficulty_to_target(difficulty))
        return cached


_TARGETS = TargetCache()


@dataclass(frozen=True, slots=True)
class _Hashed:
    """A well-formed submission, hashed: the share checker's verdict and what it hashed."""

    code: int
    block_hash: bytes
    header: bytes
    extranonce2: bytes


def _hash_submission(sub: Submission, job: Job, extranonce1: bytes, extranonce2_size: int, difficulty: float,
                     version_mask: int, now: float) -> _Hashed | Rejected:
    """Validate the submitted fields against ``job`` and hash the header they make."""
    en2_text = sub.extranonce2
    if not isinstance(en2_text, str) or not _HEX.match(en2_text) or len(en2_text) % 2:
        return Rejected(Reject.MALFORMED, "extranonce2 is not hex")
    if len(en2_text) != 2 * extranonce2_size:
        return Rejected(Reject.BAD_EXTRANONCE2, f"{len(en2_text) // 2} bytes, expected {extranonce2_size}")
    ntime = _parse_u32(sub.ntime, exact_len=False)
    nonce = _parse_u32(sub.nonce, exact_len=False)
    if ntime is None or nonce is None:
        return Rejected(Reject.MALFORMED, "ntime or nonce is not 32-bit hex")
    template = job.template
    if ntime < template.mintime or ntime > max(now, job.ntime) + MAX_FUTURE_NTIME:
        return Rejected(Reject.NTIME_OUT_OF_RANGE, f"ntime {ntime}")
    version = template.version
    if sub.version_bits is not None:
        bits = _parse_u32(sub.version_bits, exact_len=False)
        if bits is None:
            return Rejected(Reject.MALFORMED, "version bits are not hex")
        outside = bits & ~version_mask & 0xFFFFFFFF
        # Accept both conventions: only the rolled bits, or the whole version with the job's fixed bits.
        if outside and outside != version & ~version_mask & 0xFFFFFFFF:
            return Rejected(Reject.BAD_VERSION, f"bits {bits:08x} mask {version_mask:08x}")
        version = (version & ~version_mask) | (bits & version_mask)
    extranonce2 = bytes.fromhex(en2_text)
    code, block_hash, header = sharecheck.check_share(
        job.coinbase.coinb1,
        extranonce1,
        extranonce2,
        job.coinbase.coinb2,
        job.prepared.branch_bytes,
        version,
        template.prevhash,
        ntime,
        template.bits,
        nonce,
        _TARGETS.get(difficulty),
        job.prepared.network_target_le,
    )
    return _Hashed(code, block_hash, header, extranonce2)


def check_submission(
    sub: Submission,
    jobs: JobBook,
    extranonce1: bytes,
    extranonce2_size: int,
    difficulty: float,
    version_mask: int,
    now: float,
    payout_address: str = "",
) -> ShareResult:
    """Judge a submission at ``difficulty`` (the difficulty in force when the job was sent to this miner).

    ``payout_address`` is the submitting worker's address: a job whose coinbase pays someone else (SOLO) is
    refused, so shares and blocks are always recorded for the address the coinbase actually pays. A share for
    a stale job is answered "stale" whatever else is wrong with it; it is hashed only to see whether it still
    solves its block.
    """
    found = jobs.get(sub.job_id) if isinstance(sub.job_id, str) else Lookup.UNKNOWN
    if found is Lookup.UNKNOWN:
        return Rejected(Reject.UNKNOWN_JOB, f"job {str(sub.job_id)[:32]!r}")
    if found is Lookup.STALE:
        stale = Rejected(Reject.STALE, f"job {sub.job_id!r}")
        old = jobs.stale_job(sub.job_id)
        if old is None or (old.payout_key and old.payout_key != payout_address):
            return stale
        late = _hash_submission(sub, old, extranonce1, extranonce2_size, difficulty, version_mask, now)
        if not isinstance(late, _Hashed) or late.code != sharecheck.BLOCK:
            return stale
        block = Accepted(old, difficulty, hash_difficulty(late.block_hash), late.block_hash, late.header,
                         extranonce1, late.extranonce2, is_block=True)
        return Rejected(Reject.STALE, f"job {sub.job_id!r} (solves its block: submitted)", block=block)
    assert isinstance(found, Job)
    job = found
    if job.payout_key and job.payout_key != payout_address:
        return Rejected(Reject.WRONG_PAYOUT, f"job {sub.job_id!r} pays {job.payout_key}")
    hashed = _hash_submission(sub, job, extranonce1, extranonce2_size, difficulty, version_mask, now)
    if isinstance(hashed, Rejected):
        return hashed
    if hashed.code == sharecheck.BELOW_SHARE:
        return Rejected(Reject.LOW_DIFFICULTY,
                        f"share difficulty {hash_difficulty(hashed.block_hash):.6g} < {difficulty:.6g}")
    if not jobs.claim(job, hashed.block_hash):
        return Rejected(Reject.DUPLICATE)
    return Accepted(
        job=job,
        difficulty=difficulty,
        hash_difficulty=hash_difficulty(hashed.block_hash),
        block_hash=hashed.block_hash,
        header=hashed.header,
        extranonce1=extranonce1,
        extranonce2=hashed.extranonce2,
        is_block=hashed.code == sharecheck.BLOCK,
    )
