"""Share judgement: every rejection reason, acceptance, blocks, unpadded nonces and version rolling.

Expected hashes come from ``tests.unit.helpers.header_from_notify``: a miner's view rebuilt from the notify
params with hashlib, so the pool's encoders are checked end to end instead of against themselves.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from typing import Any

import pytest

from pool.mining.jobs import JobBook
from pool.mining.shares import (
    MAX_FUTURE_NTIME,
    REJECT_ERRORS,
    Accepted,
    Reject,
    Rejected,
    Submission,
    check_submission,
)
from tests.unit.helpers import (
    DIFF1,
    build_job,
    dsha,
    find_nonce,
    header_from_notify,
    make_gbt,
    parse_block,
    ref_merkle_root,
)

EN1 = bytes.fromhex("deadbeef")
EN2 = bytes.fromhex("0000000000000001")
EN2_SIZE = 8
DIFF = 1e-8  # share target ~ 2**250.6: about one nonce in 42 qualifies
SHARE_TARGET = int(Fraction(DIFF1) / Fraction(DIFF))
MASK = 0x1FFFE000
REGTEST_TARGET = 0x7FFFFF << (8 * 29)


class Setup:
    def __init__(self, bits: str = "1d00ffff", n_txs: int = 3, version: int = 0x20000000) -> None:
        self.gbt = make_gbt(n_txs=n_txs, bits=bits, version=version)
        self.job = build_job(self.gbt, job_id="1", en_total=len(EN1) + EN2_SIZE)
        self.book = JobBook()
        self.book.add(self.job)
        self.params = self.job.notify_params(True)
        self.ntime = self.job.ntime

    def check(
        self,
        nonce: Any = "00000000",
        ntime: Any = None,
        en2: Any = None,
        job_id: Any = "1",
        version_bits: str | None = None,
        difficulty: float = DIFF,
        mask: int = MASK,
        now: float | None = None,
    ) -> Accepted | Rejected:
        sub = Submission(
            "w",
            job_id,
            EN2.hex() if en2 is None else en2,
            f"{self.ntime:08x}" if ntime is None else ntime,
            nonce,
            version_bits,
        )
        return check_submission(sub, self.book, EN1, EN2_SIZE, difficulty, mask, self.ntime if now is None else now)

    def nonce(self, accept: Any, version: int | None = None, en2: bytes = EN2, ntime: int | None = None) -> int:
        return find_nonce(self.params, EN1, en2, self.ntime if ntime is None else ntime, accept, version)


@pytest.fixture
def s() -> Setup:
    return Setup()


def _reason(result: Accepted | Rejected) -> Reject | None:
    return result.reason if isinstance(result, Rejected) else None


def test_valid_share_accepted(s: Setup) -> None:
    nonce = s.nonce(lambda v: v <= SHARE_TARGET)
    result = s.check(f"{nonce:08x}")
    assert isinstance(result, Accepted), result
    header = header_from_notify(s.params, EN1, EN2, s.ntime, nonce)
    assert result.header == header
    assert result.block_hash == dsha(header)
    assert result.is_block is False
    assert result.difficulty == DIFF
    assert result.hash_difficulty == pytest.approx(DIFF1 / int.from_bytes(dsha(header), "little"))
    assert result.hash_difficulty >= DIFF
    assert result.extranonce1 == EN1 and result.extranonce2 == EN2
    assert result.job is s.job


def test_low_difficulty(s: Setup) -> None:
    nonce = s.nonce(lambda v: v > SHARE_TARGET)
    assert _reason(s.check(f"{nonce:08x}")) is Reject.LOW_DIFFICULTY
    # A low share is not remembered: sending it again is still low, not a duplicate.
    assert _reason(s.check(f"{nonce:08x}")) is Reject.LOW_DIFFICULTY


def test_low_difficulty_at_higher_difficulty(s: Setup) -> None:
    nonce = s.nonce(lambda v: SHARE_TARGET // 2 < v <= SHARE_TARGET)
    assert _reason(s.check(f"{nonce:08x}", difficulty=DIFF * 2)) is Reject.LOW_DIFFICULTY
    assert isinstance(s.check(f"{nonce:08x}", difficulty=DIFF), Accepted)


def test_duplicate(s: Setup) -> None:
    nonce = s.nonce(lambda v: v <= SHARE_TARGET)
    assert isinstance(s.check(f"{nonce:08x}"), Accepted)
    assert _reason(s.check(f"{nonce:08x}")) is Reject.DUPLICATE
    # Same values spelled differently are the same share.
    assert _reason(s.check(f"{nonce:x}")) is Reject.DUPLICATE
    assert _reason(s.check(f"{nonce:08X}", en2=EN2.hex().upper())) is Reject.DUPLICATE


def test_same_nonce_other_extranonce2_is_not_duplicate(s: Setup) -> None:
    en2b = bytes.fromhex("00000000000000ff")
    nonce = s.nonce(lambda v: v <= SHARE_TARGET)
    assert isinstance(s.check(f"{nonce:08x}"), Accepted)
    other = s.nonce(lambda v: v <= SHARE_TARGET, en2=en2b)
    assert isinstance(s.check(f"{other:08x}", en2=en2b.hex()), Accepted)


def test_unknown_job(s: Setup) -> None:
    assert _reason(s.check(job_id="ffff")) is Reject.UNKNOWN_JOB
    assert _reason(s.check(job_id=1)) is Reject.UNKNOWN_JOB
    assert _reason(s.check(job_id=None)) is Reject.UNKNOWN_JOB


def test_stale_job_after_new_tip(s: Setup) -> None:
    nonce = s.nonce(lambda v: v <= SHARE_TARGET)
    s.book.add(build_job(make_gbt(n_txs=1, prevhash="33" * 32), job_id="2"))
    assert _reason(s.check(f"{nonce:08x}")) is Reject.STALE


def test_ntime_range(s: Setup) -> None:
    mintime = s.gbt["mintime"]
    assert _reason(s.check(ntime=f"{mintime - 1:08x}")) is Reject.NTIME_OUT_OF_RANGE
    assert _reason(s.check(ntime=f"{mintime:08x}")) is not Reject.NTIME_OUT_OF_RANGE
    limit = s.ntime + MAX_FUTURE_NTIME
    assert _reason(s.check(ntime=f"{limit + 1:08x}")) is Reject.NTIME_OUT_OF_RANGE
    assert _reason(s.check(ntime=f"{limit:08x}")) is not Reject.NTIME_OUT_OF_RANGE
    # The future limit follows the pool's clock when it is ahead of the job's ntime.
    assert _reason(s.check(ntime=f"{limit + 100:08x}", now=s.ntime + 100)) is not Reject.NTIME_OUT_OF_RANGE
    assert _reason(s.check(ntime="ffffffff")) is Reject.NTIME_OUT_OF_RANGE


def test_rolled_ntime_accepted(s: Setup) -> None:
    ntime = s.ntime + 30
    nonce = s.nonce(lambda v: v <= SHARE_TARGET, ntime=ntime)
    result = s.check(f"{nonce:08x}", ntime=f"{ntime:08x}")
    assert isinstance(result, Accepted)
    assert result.header[68:72] == struct.pack("<I", ntime)


@pytest.mark.parametrize("en2", ["00" * 7, "00" * 9, "00" * 16])
def test_bad_extranonce2_length(s: Setup, en2: str) -> None:
    result = s.check(en2=en2)
    assert _reason(result) is Reject.BAD_EXTRANONCE2


@pytest.mark.parametrize("en2", ["0" * 15, "0" * 17, "zz" * 8, "", "0x00000000000001", " " + "00" * 8, "00" * 8 + "\n", 12, None, ["00"]])
def test_malformed_extranonce2(s: Setup, en2: Any) -> None:
    if en2 is None:
        sub = Submission("w", "1", None, f"{s.ntime:08x}", "00000000")  # type: ignore[arg-type]
        result = check_submission(sub, s.book, EN1, EN2_SIZE, DIFF, MASK, s.ntime)
    else:
        result = s.check(en2=en2)
    assert _reason(result) is Reject.MALFORMED


@pytest.mark.parametrize("bad", ["", "xyz", "123456789", "0x1234", "-1", "12 34", "+1", 5, 1.5, ["00000000"]])
def test_malformed_nonce_and_ntime(s: Setup, bad: Any) -> None:
    assert _reason(s.check(nonce=bad)) is Reject.MALFORMED
    assert _reason(s.check(ntime=bad)) is Reject.MALFORMED


def test_unpadded_nonce_accepted(s: Setup) -> None:
    nonce = s.nonce(lambda v: v <= SHARE_TARGET)
    assert nonce < 0x10000000  # the first qualifying nonce is small, so its hex is shorter than 8 digits
    result = s.check(f"{nonce:x}")
    assert isinstance(result, Accepted)
    assert result.header[76:80] == struct.pack("<I", nonce)


def test_version_rolling_inside_mask(s: Setup) -> None:
    bits = 0x00002000 | 0x00800000
    expected = (0x20000000 & ~MASK) | (bits & MASK)
    nonce = s.nonce(lambda v: v <= SHARE_TARGET, version=expected)
    result = s.check(f"{nonce:08x}", version_bits=f"{bits:08x}")
    assert isinstance(result, Accepted), result
    assert result.header[:4] == struct.pack("<I", expected)
    assert result.header == header_from_notify(s.params, EN1, EN2, s.ntime, nonce, version=expected)
    # The same version written as the whole nVersion is the same share.
    assert _reason(s.check(f"{nonce:08x}", version_bits=f"{expected:08x}")) is Reject.DUPLICATE


def test_version_rolling_clears_job_bits_inside_mask() -> None:
    s = Setup(version=0x20000000 | 0x00004000)  # a job version with a signalling bit inside the mask
    bits = 0x00002000
    expected = (s.job.template.version & ~MASK) | (bits & MASK)
    assert expected == 0x20002000
    nonce = s.nonce(lambda v: v <= SHARE_TARGET, version=expected)
    result = s.check(f"{nonce:08x}", version_bits=f"{bits:08x}")
    assert isinstance(result, Accepted)
    assert result.header[:4] == struct.pack("<I", expected)


@pytest.mark.parametrize("bits", ["00000001", "e0000000", "00001000", "40000000"])
def test_version_bits_outside_mask(s: Setup, bits: str) -> None:
    assert _reason(s.check(version_bits=bits)) is Reject.BAD_VERSION


def test_version_bits_with_zero_mask(s: Setup) -> None:
    assert _reason(s.check(version_bits="00002000", mask=0)) is Reject.BAD_VERSION


@pytest.mark.parametrize("bits", ["zz", "", "123456789"])
def test_version_bits_malformed(s: Setup, bits: str) -> None:
    assert _reason(s.check(version_bits=bits)) is Reject.MALFORMED


def test_zero_version_bits_keeps_job_version(s: Setup) -> None:
    nonce = s.nonce(lambda v: v <= SHARE_TARGET)
    result = s.check(f"{nonce:08x}", version_bits="00000000")
    assert isinstance(result, Accepted)
    assert result.header[:4] == struct.pack("<I", 0x20000000)


def test_block_found() -> None:
    s = Setup(bits="207fffff", n_txs=4)
    nonce = s.nonce(lambda v: v <= REGTEST_TARGET)
    # Even at a huge share difficulty a hash that meets the network target is a block.
    result = s.check(f"{nonce:08x}", difficulty=1e12)
    assert isinstance(result, Accepted), result
    assert result.is_block
    block = parse_block(s.job.block_bytes(result.header, result.extranonce1, result.extranonce2))
    assert dsha(block.header) == result.block_hash
    assert block.merkle_root == ref_merkle_root([tx.txid for tx in block.txs])
    assert int.from_bytes(result.block_hash, "little") <= REGTEST_TARGET


def test_not_a_block_above_network_target() -> None:
    s = Setup(bits="207fffff", n_txs=1)
    nonce = s.nonce(lambda v: v > REGTEST_TARGET)
    # Difficulty 1e-12 saturates the share target at 2**256-1: every hash is a share, this one not a block.
    result = s.check(f"{nonce:08x}", difficulty=1e-12)
    assert isinstance(result, Accepted)
    assert result.is_block is False


def test_reject_errors_table_matches_stratum_codes() -> None:
    expected = {
        Reject.UNKNOWN_JOB: 21,
        Reject.STALE: 21,
        Reject.DUPLICATE: 22,
        Reject.LOW_DIFFICULTY: 23,
        Reject.UNAUTHORIZED: 24,
        Reject.NOT_SUBSCRIBED: 25,
        Reject.NTIME_OUT_OF_RANGE: 20,
        Reject.BAD_EXTRANONCE2: 20,
        Reject.MALFORMED: 20,
        Reject.BAD_VERSION: 20,
    }
    assert set(REJECT_ERRORS) == set(Reject)
    for reason, code in expected.items():
        got_code, message = REJECT_ERRORS[reason]
        assert got_code == code, reason
        assert isinstance(message, str) and message
        assert Rejected(reason).error == (code, message)
