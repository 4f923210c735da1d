"""Real firmware on the wire: each test replays one firmware's handshake and share format byte for byte.

Every line below is written the way that firmware's source writes it (ids, key order, spacing, back-to-back
sends), over real TCP against a running pool on regtest. Each profile parses the pool's replies the way the
firmware does, checks that every request got exactly one reply with its own id (same JSON type), that
``mining.set_difficulty`` came before the notify it applies to, then mines a share the firmware's way with an
independent hashlib header builder (``tests/support/firmware.py``) and checks it is accepted and becomes
bitcoind's tip. Version-rolling profiles also check that bits outside the negotiated mask are refused (20).

Compatibility (copy into the README):

| Firmware profile | Handshake as sent | Negotiated | Share format | Result |
|---|---|---|---|---|
| Bitaxe ESP-Miner 2.x (`bitaxe/BM1368/v2.4.0`) | configure 1, subscribe 2, authorize 3 back to back; suggest `1000` (int) after the auth reply | rolling `1fffe000` (asked `ffffffff`); 1000 clamped to the pool max, set before its notify | 6 params, 6th = rolled version XOR job version | accepted, block; bit outside the mask → 20 |
| Bitaxe, older ESP-Miner | subscribe 1, configure 2, suggest 3, authorize 4 back to back | the first job already carries the suggested (clamped) difficulty | 6 params | accepted, block |
| NerdMiner v2 | subscribe 1 (first line read as its reply), authorize 2 and suggest `0.00015` (3) without waiting | no rolling; suggestion clamped; repeated keepalive suggest causes no churn; coinbase < 512 hex | 5 params, nonce hex unpadded, en2 `0000000000000001` | accepted, block |
| cgminer 4.11.1 | ids from 0, never reset; first line = subscribe reply; reconnect with `["cgminer/4.11.1", SESSION]` | same extranonce1 resumed on the second connection; en2 size in 2..8 | 5 params, params key first | accepted, block on both connections |
| Antminer stock (S17/T17) | subscribe `cgminer/2.0.0`; extranonce.subscribe + authorize; configure after the auth reply | rolling `00c00000` (min 2 bits) | 6 params, 6th = rolled bits | accepted, block; bit 21 (inside the pool mask, outside `00c00000`) → 20 |
| Braiins OS (cgminer-based) | configure 0 with `version-rolling`, `sp-telemetry`, `info` (+ info.* options), subscribe `bOS_…`, authorize | rolling `1fffe000` (≥ 2 bits); `sp-telemetry`/`info` answered `false` | 6 params | accepted, block; bit outside the mask → 20 |
| Braiins V2→V1 translator | configure, subscribe `[fw, null, "host:port", null]`, authorize with `""`, back to back | rolling exactly `1fffe000` (min-bit-count 16) | 6 params | accepted, block; bit outside the mask → 20 |
| pooler cpuminer 2.5.1 | subscribe 1, authorize 2; answers `client.get_version` | fresh (non-clean) job every refresh interval on an idle chain | 5 params, every submit id 4 | answered in order (23 for a low share, then true), block |
| cpuminer-opt 26.1 | subscribe 1, authorize 2, extranonce.subscribe 3 (reply < 3 s), suggest `["0.500000"]` (string, id 1 again) | suggestion clamped, set before its notify | 5 params, every submit id 4 | answered in order (23, then true), block |
| NiceHash-style | subscribe, extranonce.subscribe (reply < 2 s: `true`), authorize | — | 5 params | accepted, block |
| bfgminer 5.5 | subscribe 0, then `"xnsub"` and `"auth"` (string ids) back to back | string ids echoed as strings | 5 params | accepted, block |
| bfgminer 5.5 `--request-diff` | `suggest_target` with id null, then subscribe 0; first line read as the subscribe reply | the id-null hint is not answered, so the first line is the subscribe reply; target applied | 5 params | accepted, block |
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import pool_config, running_pool
from tests.support.chain import arpc, wait_tip, wait_until
from tests.support.firmware import (
    DIFF1,
    FirmwareClient,
    Job,
    roll_bits,
    solve_block,
    solve_low,
)

pytestmark = pytest.mark.integration

POOL_MASK = 0x1FFFE000
CAP = 3e-10  # difficulty max of the pool used by profiles that suggest a difficulty (1000, 0.5, 0.00015 ...);
# below regtest's network difficulty (~4.66e-10), which the pool would otherwise send instead, and above
# 2**-32 so that a share target below the largest hash (low-difficulty shares) still exists
ERR_OTHER = 20
ERR_LOW_DIFF = 23


# ---- fixtures and helpers ----------------------------------------------------------------------------------

@pytest.fixture
async def capped_app(regtest, tmp_path: Path):
    """A pool whose difficulty max is small, so a suggested 1000 or 0.5 is clamped to something hashlib can mine."""
    async with running_pool(regtest, tmp_path / "capped",
                            difficulty={"max": CAP, "start": CAP / 10, "min": CAP / 100}) as app:
        yield app


async def _user(regtest, worker: str) -> str:
    return f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.{worker}"


def _ok(reply: dict[str, Any]) -> Any:
    assert reply.get("error") is None, reply
    return reply["result"]


def _error_code(reply: dict[str, Any]) -> int:
    assert reply.get("result") in (None, False), reply
    err = reply.get("error")
    assert isinstance(err, list) and len(err) >= 2, reply
    return err[0]


def _subscribe_result(reply: dict[str, Any]) -> tuple[bytes, int, str | None]:
    """(extranonce1, extranonce2_size, session id) the way cgminer reads a subscribe reply."""
    result = _ok(reply)
    assert isinstance(result, list) and len(result) >= 3, reply
    session = None
    for entry in result[0] if isinstance(result[0], list) else []:
        if isinstance(entry, list) and len(entry) >= 2 and str(entry[0]).lower().startswith("mining.notify"):
            session = entry[1]
    en1 = bytes.fromhex(result[1])
    assert isinstance(result[2], int), reply
    return en1, result[2], session


async def _first_line(fw: FirmwareClient, timeout: float = 5.0) -> dict[str, Any]:
    return await fw.wait_for(lambda: fw.lines[0] if fw.lines else None, timeout, "the first line")


def _check_difficulty_before_notify(fw: FirmwareClient) -> None:
    """Every notify has a set_difficulty before it, never two set_difficulty without a notify between them
    (cgminer stacks them), and the first line is never a notification (cgminer loses it)."""
    jobs = fw.jobs()
    assert jobs, f"{fw.name}: no mining.notify"
    assert all(j.difficulty is not None for j in jobs), f"{fw.name}: notify before any set_difficulty"
    assert "method" not in fw.lines[0], f"{fw.name}: first line is a notification: {fw.lines[0]}"
    work = [m["method"] for m in fw.lines if m.get("method") in ("mining.set_difficulty", "mining.notify")]
    pairs = list(zip(work, work[1:], strict=False))
    assert ("mining.set_difficulty", "mining.set_difficulty") not in pairs, f"{fw.name}: {work}"
    assert work[-1] == "mining.notify", f"{fw.name}: a set_difficulty with no job after it: {work}"


async def _job_on_tip(fw: FirmwareClient, regtest, after: int = -1, timeout: float = 10.0) -> Job:
    """The newest job built on bitcoind's current tip (received after line ``after``)."""
    tip = await arpc(regtest, "getbestblockhash")

    def newest() -> Job | None:
        jobs = [j for j in fw.jobs() if j.index > after and j.prevhash_display == tip]
        return jobs[-1] if jobs else None

    return await fw.wait_for(newest, timeout, f"a notify on tip {tip}")


def _metric(app, name: str, labels: dict[str, str] | None = None) -> float:
    return app.metrics.registry.get_sample_value(name, labels or {}) or 0.0


# ---- Bitaxe (ESP-Miner 2.x) --------------------------------------------------------------------------------

async def test_bitaxe_esp_miner(regtest, capped_app):
    app = capped_app
    user = await _user(regtest, "bitaxe")
    fw = await FirmwareClient("bitaxe").connect(app.server.port)
    try:
        # stratum_task: configure (1), subscribe (2), authorize (3) written one after another without waiting.
        await fw.send_lines([
            '{"jsonrpc": "2.0", "id": 1, "method": "mining.configure", "params": [["version-rolling"], '
            '{"version-rolling.mask": "ffffffff"}]}',
            '{"jsonrpc": "2.0", "id": 2, "method": "mining.subscribe", "params": ["bitaxe/BM1368/v2.4.0"]}',
            f'{{"jsonrpc": "2.0", "id": 3, "method": "mining.authorize", "params": ["{user}", "x"]}}',
        ])
        configure = _ok(await fw.reply(1))
        assert configure["version-rolling"] is True, configure
        mask = int(configure["version-rolling.mask"], 16)
        assert mask == POOL_MASK  # ffffffff AND the pool's mask
        en1, en2_size, _ = _subscribe_result(await fw.reply(2))
        assert _ok(await fw.reply(3)) is True
        # ESP-Miner classifies replies with id < 5 as setup replies: all three came back with their own ids.
        assert [m["id"] for m in fw.lines if "method" not in m][:3] == [1, 2, 3]

        # After the authorize reply: suggest_difficulty with an integer (STRATUM_DIFFICULTY 1000).
        await fw.send_line('{"jsonrpc": "2.0", "id": 4, "method": "mining.suggest_difficulty", "params": [1000]}')
        assert _ok(await fw.reply(4)) is True
        job = await fw.wait_job(after=fw.reply_index(4))
        assert job.difficulty == CAP, "a suggestion above the pool's max is clamped, and set before its notify"
        _check_difficulty_before_notify(fw)

        en2 = (1).to_bytes(en2_size, "little")
        # A share with a version bit outside the negotiated mask is refused even though its hash is good.
        bad_bits = roll_bits(mask) | 0x00001000
        bad = solve_block(job, en1, en2, job.version | bad_bits, job.difficulty)
        await fw.send_line(
            '{"jsonrpc": "2.0", "id": 5, "method": "mining.submit", "params": '
            f'["{user}", "{job.job_id}", "{en2.hex()}", "{bad.ntime:08x}", "{bad.nonce:08x}", '
            f'"{(bad.version ^ job.version):08x}"]}}'
        )
        assert _error_code(await fw.reply(5)) == ERR_OTHER

        # The real thing: the ASIC rolls bits inside the mask; 6th param = rolled version XOR job version.
        sol = solve_block(job, en1, en2, job.version | roll_bits(mask), job.difficulty)
        await fw.send_line(
            '{"jsonrpc": "2.0", "id": 6, "method": "mining.submit", "params": '
            f'["{user}", "{job.job_id}", "{en2.hex()}", "{sol.ntime:08x}", "{sol.nonce:08x}", '
            f'"{(sol.version ^ job.version):08x}"]}}'
        )
        assert _ok(await fw.reply(6)) is True
        await wait_tip(regtest, sol.block_hash, timeout=10)
        fw.check_reply_ids()
    finally:
        await fw.close()


async def test_bitaxe_older_suggest_before_authorize(regtest, capped_app):
    """Older ESP-Miner: subscribe 1, configure 2, suggest_difficulty 3, authorize 4, all without waiting, so
    that "the first job is sent with the proper difficulty set"."""
    app = capped_app
    user = await _user(regtest, "bitaxe-old")
    fw = await FirmwareClient("bitaxe-old").connect(app.server.port)
    try:
        await fw.send_lines([
            '{"id": 1, "method": "mining.subscribe", "params": ["bitaxe/BM1366/v2.1.0"]}',
            '{"id": 2, "method": "mining.configure", "params": [["version-rolling"], '
            '{"version-rolling.mask": "ffffffff"}]}',
            '{"id": 3, "method": "mining.suggest_difficulty", "params": [1000]}',
            f'{{"id": 4, "method": "mining.authorize", "params": ["{user}", "x"]}}',
        ])
        en1, en2_size, _ = _subscribe_result(await fw.reply(1))
        mask = int(_ok(await fw.reply(2))["version-rolling.mask"], 16)
        assert _ok(await fw.reply(3)) is True
        assert _ok(await fw.reply(4)) is True
        job = await fw.wait_job()
        assert fw.jobs()[0].difficulty == CAP, "the suggestion made before authorize applies to the first job"
        _check_difficulty_before_notify(fw)
        en2 = (9).to_bytes(en2_size, "little")
        sol = solve_block(job, en1, en2, job.version | roll_bits(mask), job.difficulty)
        await fw.send_line(
            f'{{"id": 5, "method": "mining.submit", "params": ["{user}", "{job.job_id}", "{en2.hex()}", '
            f'"{sol.ntime:08x}", "{sol.nonce:08x}", "{(sol.version ^ job.version):08x}"]}}'
        )
        assert _ok(await fw.reply(5)) is True
        await wait_tip(regtest, sol.block_hash, timeout=10)
        fw.check_reply_ids()
    finally:
        await fw.close()


# ---- NerdMiner v2 ------------------------------------------------------------------------------------------

async def test_nerdminer_v2(regtest, capped_app):
    app = capped_app
    user = await _user(regtest, "nerd")
    fw = await FirmwareClient("nerdminer").connect(app.server.port)
    try:
        await fw.send_line('{"id": 1, "method": "mining.subscribe", "params": ["NerdMinerV2"]}')
        # tx_mining_subscribe: client.readStringUntil('\n') -- the FIRST line must be the subscribe reply.
        first = await _first_line(fw)
        assert "method" not in first and first["id"] == 1, first
        en1, en2_size, _ = _subscribe_result(first)
        assert en2_size in (2, 4, 8), "NerdMiner only builds extranonce2 for sizes 2, 4 and 8"

        # tx_mining_auth then tx_suggest_difficulty ("%.10g" of 0.00015), neither reply awaited.
        await fw.send_line(f'{{"params": ["{user}", "x"], "id": 2, "method": "mining.authorize"}}')
        await asyncio.sleep(0.2)  # vTaskDelay(200)
        await fw.send_line('{"id": 3, "method": "mining.suggest_difficulty", "params": [0.00015]}')
        assert _ok(await fw.reply(2)) is True
        assert _ok(await fw.reply(3)) is True
        job = await fw.wait_job(after=fw.reply_index(3))
        assert job.difficulty == CAP
        _check_difficulty_before_notify(fw)

        # calculateMiningData: static char s_coinbase_buf[512] -- a longer coinbase is silently truncated.
        coinbase_hex = len(job.coinb1) + 2 * len(en1) + 2 * en2_size + len(job.coinb2)
        assert coinbase_hex < 512, f"coinbase is {coinbase_hex} hex chars, NerdMiner's buffer holds 511"

        en2 = bytes.fromhex({2: "0001", 4: "00000001", 8: "0000000000000001"}[en2_size])
        sol = solve_block(job, en1, en2, job.version, job.difficulty)
        nonce_hex = format(sol.nonce, "x")  # String(nonce, HEX): not zero-padded
        assert len(nonce_hex) < 8, "the share must exercise an unpadded nonce"
        await fw.send_line(
            f'{{"id": 4, "method": "mining.submit", "params": ["{user}","{job.job_id}","{en2.hex()}",'
            f'"{job.ntime}","{nonce_hex}"]}}'
        )
        assert _ok(await fw.reply(4)) is True
        await wait_tip(regtest, sol.block_hash, timeout=10)
        # The 30 s keepalive repeats the same suggestion: answered, and no difficulty churn.
        await fw.send_line('{"id": 5, "method": "mining.suggest_difficulty", "params": [0.00015]}')
        assert _ok(await fw.reply(5)) is True
        await asyncio.sleep(0.2)
        assert not [i for i, _ in fw.notifications("mining.set_difficulty") if i > fw.reply_index(5)]
        fw.check_reply_ids()
    finally:
        await fw.close()


# ---- cgminer 4.11 (session resume) -------------------------------------------------------------------------

@pytest.mark.one_process("reads the one process's sessions (app.server.sessions)")
async def test_cgminer_session_resume(regtest, pool_app):
    app = pool_app
    user = await _user(regtest, "cg")
    swork_id = 0  # cgminer's static counter: never reset, across reconnects too

    def next_id() -> int:
        nonlocal swork_id
        swork_id += 1
        return swork_id - 1

    async def session(fw: FirmwareClient, params: str) -> tuple[bytes, int, str | None]:
        sub_id = next_id()
        await fw.send_line(f'{{"id": {sub_id}, "method": "mining.subscribe", "params": [{params}]}}')
        first = await _first_line(fw)  # initiate_stratum: recv_line() once and parse it as the reply
        assert "method" not in first and first["id"] == sub_id, first
        en1, en2_size, sid = _subscribe_result(first)
        assert 2 <= en2_size <= 8, "cgminer submits nothing with extranonce2 above 8 bytes"
        auth_id = next_id()
        await fw.send_line(f'{{"id": {auth_id}, "method": "mining.authorize", "params": ["{user}", "x"]}}')
        assert _ok(await fw.reply(auth_id)) is True
        return en1, en2_size, sid

    async def mine(fw: FirmwareClient, en1: bytes, en2_size: int, nonce2: int) -> str:
        job = await _job_on_tip(fw, regtest)
        _check_difficulty_before_notify(fw)
        en2 = nonce2.to_bytes(8, "little")[:en2_size]  # htole64(nonce2), n2size bytes of it
        sol = solve_block(job, en1, en2, job.version, job.difficulty)
        share_id = next_id()
        await fw.send_line(
            f'{{"params": ["{user}", "{job.job_id}", "{en2.hex()}", "{job.ntime}", "{sol.nonce:08x}"], '
            f'"id": {share_id}, "method": "mining.submit"}}'
        )
        assert _ok(await fw.reply(share_id)) is True
        await wait_tip(regtest, sol.block_hash, timeout=10)
        return sol.block_hash

    fw1 = await FirmwareClient("cgminer#1", answer_version="cgminer/4.11.1").connect(app.server.port)
    try:
        en1, en2_size, sid = await session(fw1, '"cgminer/4.11.1"')
        assert sid is not None, "no mining.notify subscription id to resume with"
        await mine(fw1, en1, en2_size, 0)
        fw1.check_reply_ids()
    finally:
        await fw1.close()
    await wait_until(lambda: len(app.server.sessions) == 0, 5, what="the pool to release the first session")

    fw2 = await FirmwareClient("cgminer#2", answer_version="cgminer/4.11.1").connect(app.server.port)
    try:
        en1_again, en2_size_again, _ = await session(fw2, f'"cgminer/4.11.1", "{sid}"')
        assert en1_again == en1, "a session released seconds ago must be resumed with the same extranonce1"
        assert en2_size_again == en2_size
        await mine(fw2, en1_again, en2_size, 1)
        fw2.check_reply_ids()
    finally:
        await fw2.close()


# ---- Antminer stock firmware (S17/T17) ---------------------------------------------------------------------

async def test_antminer_stock(regtest, pool_app):
    app = pool_app
    user = await _user(regtest, "s17")
    fw = await FirmwareClient("antminer", answer_version="cgminer/2.0.0").connect(app.server.port)
    try:
        await fw.send_line('{"id": 0, "method": "mining.subscribe", "params": ["cgminer/2.0.0"]}')
        first = await _first_line(fw)
        assert "method" not in first and first["id"] == 0, first
        en1, en2_size, _ = _subscribe_result(first)
        # extranonce.subscribe right after the subscribe reply, then authorize without waiting for it. The
        # cgminer-style auth loop takes the first non-method line as the auth result, so it must be `true`.
        await fw.send_lines([
            '{"id": 1, "method": "mining.extranonce.subscribe", "params": []}',
            f'{{"id": 2, "method": "mining.authorize", "params": ["{user}", "x"]}}',
        ])
        assert _ok(await fw.reply(1)) is True
        assert _ok(await fw.reply(2)) is True
        # After the authorize reply, AsicBoost: configure with a 2-bit mask, not waiting for the reply.
        await fw.send_line(
            '{"id":3, "method":"mining.configure", "params":[["version-rolling"],'
            '{"version-rolling.mask":"00c00000","version-rolling.min-bit-count":2}]}'
        )
        configure = _ok(await fw.reply(3))
        assert configure["version-rolling"] is True, configure
        mask = int(configure["version-rolling.mask"], 16)
        assert mask == 0x00C00000 == 0x00C00000 & POOL_MASK

        job = await _job_on_tip(fw, regtest)
        _check_difficulty_before_notify(fw)
        en2 = (1).to_bytes(en2_size, "little")
        # Bit 21 is inside the pool's mask but outside the negotiated 00c00000: refused.
        bad = solve_block(job, en1, en2, job.version | 0x00200000, job.difficulty)
        await fw.send_line(
            f'{{"params": ["{user}", "{job.job_id}", "{en2.hex()}", "{job.ntime}", "{bad.nonce:08x}", '
            f'"00200000"], "id": 4, "method": "mining.submit"}}'
        )
        assert _error_code(await fw.reply(4)) == ERR_OTHER

        rolled = roll_bits(mask)
        assert rolled == 0x00C00000
        sol = solve_block(job, en1, en2, job.version | rolled, job.difficulty)
        await fw.send_line(
            f'{{"params": ["{user}", "{job.job_id}", "{en2.hex()}", "{job.ntime}", "{sol.nonce:08x}", '
            f'"{rolled:08x}"], "id": 5, "method": "mining.submit"}}'
        )
        assert _ok(await fw.reply(5)) is True
        await wait_tip(regtest, sol.block_hash, timeout=10)
        fw.check_reply_ids()
    finally:
        await fw.close()


# ---- Braiins OS (cgminer-based bosminer) -------------------------------------------------------------------

async def test_braiins_os(regtest, pool_app):
    app = pool_app
    user = await _user(regtest, "bos")
    fw = await FirmwareClient("braiins-os", answer_version="bosminer/1.0").connect(app.server.port)
    try:
        await fw.send_line(
            '{"id": 0, "method": "mining.configure", "params": [["version-rolling", "sp-telemetry", "info"], '
            '{"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 2, '
            f'"info.connection-url": "127.0.0.1:{app.server.port}", "info.hw-id": "f8a2b4c601", '
            '"info.hw-version": "am2-s17", "info.sw-version": "Braiins OS 22.08"}]}'
        )
        configure = _ok(await fw.reply(0))
        # bosminer gives up on the pool unless rolling is granted with at least 2 bits.
        assert configure.get("version-rolling") is True, configure
        mask = int(configure["version-rolling.mask"], 16)
        assert mask.bit_count() >= 2 and mask == POOL_MASK
        # Unknown features are answered (declined), they do not make the reply an error.
        assert configure.get("sp-telemetry") is False and configure.get("info") is False, configure

        await fw.send_line('{"id": 1, "method": "mining.subscribe", "params": ["bOS_am2-s17-22.08"]}')
        en1, en2_size, _ = _subscribe_result(await fw.reply(1))
        await fw.send_line(f'{{"id": 2, "method": "mining.authorize", "params": ["{user}", "x"]}}')
        assert _ok(await fw.reply(2)) is True

        job = await _job_on_tip(fw, regtest)
        _check_difficulty_before_notify(fw)
        en2 = (7).to_bytes(en2_size, "little")
        bad = solve_block(job, en1, en2, job.version | 0x00000400, job.difficulty)
        await fw.send_line(
            f'{{"params": ["{user}", "{job.job_id}", "{en2.hex()}", "{job.ntime}", "{bad.nonce:08x}", '
            f'"00000400"], "id": 3, "method": "mining.submit"}}'
        )
        assert _error_code(await fw.reply(3)) == ERR_OTHER

        rolled = roll_bits(mask)
        sol = solve_block(job, en1, en2, job.version | rolled, job.difficulty)
        await fw.send_line(
            f'{{"params": ["{user}", "{job.job_id}", "{en2.hex()}", "{job.ntime}", "{sol.nonce:08x}", '
            f'"{rolled:08x}"], "id": 4, "method": "mining.submit"}}'
        )
        assert _ok(await fw.reply(4)) is True
        await wait_tip(regtest, sol.block_hash, timeout=10)
        fw.check_reply_ids()
    finally:
        await fw.close()


# ---- Braiins V2->V1 translator -----------------------------------------------------------------------------

async def test_braiins_v2_translator(regtest, pool_app):
    app = pool_app
    user = await _user(regtest, "v2proxy")
    fw = await FirmwareClient("translator").connect(app.server.port)
    try:
        await fw.send_lines([
            '{"id":0,"method":"mining.configure","params":[["version-rolling"],'
            '{"version-rolling.mask":"1fffe000","version-rolling.min-bit-count":16}]}',
            f'{{"id":1,"method":"mining.subscribe","params":["Braiins OS 2023-06-01",null,'
            f'"127.0.0.1:{app.server.port}",null]}}',
            f'{{"id":2,"method":"mining.authorize","params":["{user}",""]}}',
        ])
        configure = _ok(await fw.reply(0))
        assert configure.get("version-rolling") is True, configure
        assert configure["version-rolling.mask"] == "1fffe000", "the translator aborts on any other mask"
        en1, en2_size, _ = _subscribe_result(await fw.reply(1))
        assert _ok(await fw.reply(2)) is True  # empty password

        job = await _job_on_tip(fw, regtest)
        _check_difficulty_before_notify(fw)
        mask = int(configure["version-rolling.mask"], 16)
        en2 = (3).to_bytes(en2_size, "big")
        bad = solve_block(job, en1, en2, job.version | 0x40000000, job.difficulty)
        await fw.send_line(
            f'{{"id":3,"method":"mining.submit","params":["{user}","{job.job_id}","{en2.hex()}",'
            f'"{job.ntime}","{bad.nonce:08x}","40000000"]}}'
        )
        assert _error_code(await fw.reply(3)) == ERR_OTHER

        rolled = 0x0FFFE000 & mask  # a V2 device rolls the whole 16-bit field
        sol = solve_block(job, en1, en2, job.version | rolled, job.difficulty)
        await fw.send_line(
            f'{{"id":4,"method":"mining.submit","params":["{user}","{job.job_id}","{en2.hex()}",'
            f'"{job.ntime}","{sol.nonce:08x}","{rolled:08x}"]}}'
        )
        assert _ok(await fw.reply(4)) is True
        await wait_tip(regtest, sol.block_hash, timeout=10)
        fw.check_reply_ids()
    finally:
        await fw.close()


# ---- pooler cpuminer 2.5.1 ---------------------------------------------------------------------------------

async def test_pooler_cpuminer(regtest, pool_app):
    app = pool_app
    user = await _user(regtest, "cpu")
    fw = await FirmwareClient("cpuminer", answer_version="cpuminer/2.5.1").connect(app.server.port)
    try:
        await fw.send_line('{"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]}')
        first = await _first_line(fw)
        assert "method" not in first and first["id"] == 1, first
        en1, en2_size, _ = _subscribe_result(first)
        await fw.send_line(f'{{"id": 2, "method": "mining.authorize", "params": ["{user}", "x"]}}')
        assert _ok(await fw.reply(2)) is True
        job = await _job_on_tip(fw, regtest)
        _check_difficulty_before_notify(fw)
        # cpuminer's answer to client.get_version went out; the pool must not answer it back.
        await fw.wait_for(lambda: fw.notifications("client.get_version"), 5, "client.get_version")

        # xnonce2 is a little-endian byte counter; every submit carries id 4, so replies must come in order.
        en2 = (1).to_bytes(en2_size, "little")
        low = solve_low(job, en1, en2, job.version, job.difficulty)
        sol = solve_block(job, en1, (2).to_bytes(en2_size, "little"), job.version, job.difficulty)
        lines = [
            f'{{"method": "mining.submit", "params": ["{user}", "{job.job_id}", "{s.extranonce2.hex()}", '
            f'"{job.ntime}", "{s.nonce:08x}"], "id":4}}'
            for s in (low, sol)
        ]
        await fw.send_lines(lines)  # a bad share then a block, back to back, both id 4
        assert _error_code(await fw.reply(4, 0)) == ERR_LOW_DIFF
        assert _ok(await fw.reply(4, 1)) is True
        await wait_tip(regtest, sol.block_hash, timeout=10)
        fw.check_reply_ids()
    finally:
        await fw.close()


async def test_pooler_cpuminer_gets_fresh_work_without_new_blocks(regtest, tmp_path: Path, monkeypatch):
    """pooler cpuminer stops hashing and reconnects after ~120 s without a new job: the pool must renew work
    before then even when the chain and mempool are idle. An unchanged template keeps its job until the job is
    JOB_MAX_AGE old (90 s; 2 s here), and is renewed at the next refresh (here refresh_interval = 1 s)."""
    from pool.app import PoolApp
    from pool.server import coordinator

    assert coordinator.JOB_MAX_AGE < 120
    monkeypatch.setattr(coordinator, "JOB_MAX_AGE", 2.0)

    cfg = await asyncio.to_thread(pool_config, regtest, tmp_path / "refresh")
    # pool_config's first parameter is called `node`, so the [node] section is overridden here instead.
    app = PoolApp(dataclasses.replace(cfg, node=dataclasses.replace(cfg.node, refresh_interval=1.0)))
    await app.start()
    user = await _user(regtest, "cpu-idle")
    fw = await FirmwareClient("cpuminer-idle", answer_version="cpuminer/2.5.1").connect(app.server.port)
    try:
        await fw.send_line('{"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]}')
        await fw.reply(1)
        await fw.send_line(f'{{"id": 2, "method": "mining.authorize", "params": ["{user}", "x"]}}')
        assert _ok(await fw.reply(2)) is True
        first = await fw.wait_job()
        again = await fw.wait_job(timeout=8, after=first.index)
        assert again.job_id != first.job_id and again.prevhash == first.prevhash
        assert again.clean is False
        _check_difficulty_before_notify(fw)
    finally:
        await fw.close()
        await app.stop()


# ---- cpuminer-opt 26.1 -------------------------------------------------------------------------------------

async def test_cpuminer_opt(regtest, capped_app):
    app = capped_app
    user = await _user(regtest, "opt")
    fw = await FirmwareClient("cpuminer-opt", answer_version="cpuminer-opt/26.1").connect(app.server.port)
    try:
        await fw.send_line('{"id": 1, "method": "mining.subscribe", "params": ["cpuminer-opt/26.1"]}')
        first = await _first_line(fw)
        assert "method" not in first and first["id"] == 1, first
        en1, en2_size, _ = _subscribe_result(first)
        assert 2 <= en2_size <= 16, "cpuminer-opt refuses extranonce2 sizes outside 2..16"
        await fw.send_line(f'{{"id": 2, "method": "mining.authorize", "params": ["{user}", "x"]}}')
        assert _ok(await fw.reply(2)) is True
        # Right after the authorize reply; socket_full(sock, 3): the reply must come within 3 s.
        await fw.send_line('{"id": 3, "method": "mining.extranonce.subscribe", "params": []}')
        assert _ok(await fw.reply(3, timeout=3)) is True

        # Keepalive: suggest_difficulty with a STRING param, and id 1 again.
        await fw.send_line('{"id": 1, "method": "mining.suggest_difficulty", "params": ["0.500000"]}')
        assert _ok(await fw.reply(1, nth=1)) is True
        job = await fw.wait_job(after=fw.reply_index(1, 1))
        assert job.difficulty == CAP
        _check_difficulty_before_notify(fw)

        low = solve_low(job, en1, (1).to_bytes(en2_size, "little"), job.version, job.difficulty)
        sol = solve_block(job, en1, (2).to_bytes(en2_size, "little"), job.version, job.difficulty)
        lines = [
            f'{{"method": "mining.submit", "params": ["{user}", "{job.job_id}", "{s.extranonce2.hex()}", '
            f'"{job.ntime}", "{s.nonce:08x}"], "id":4}}'
            for s in (low, sol)
        ]
        await fw.send_lines(lines)
        assert _error_code(await fw.reply(4, 0)) == ERR_LOW_DIFF
        assert _ok(await fw.reply(4, 1)) is True
        await wait_tip(regtest, sol.block_hash, timeout=10)
        fw.check_reply_ids()
    finally:
        await fw.close()


# ---- NiceHash-style client ---------------------------------------------------------------------------------

async def test_nicehash_style(regtest, pool_app):
    app = pool_app
    user = await _user(regtest, "nh")
    fw = await FirmwareClient("nicehash").connect(app.server.port)
    try:
        await fw.send_line('{"id": 1, "method": "mining.subscribe", "params": ["NiceHash/1.0.0"]}')
        en1, en2_size, _ = _subscribe_result(await fw.reply(1))
        await fw.send_line('{"id": 2, "method": "mining.extranonce.subscribe", "params": []}')
        xn = await fw.reply(2, timeout=2)  # waits 2 s; anything but true or [20, "Not supported."] drops the pool
        assert xn.get("result") is True or (xn.get("error") or [None])[0] == ERR_OTHER, xn
        await fw.send_line(f'{{"id": 3, "method": "mining.authorize", "params": ["{user}", "x"]}}')
        assert _ok(await fw.reply(3)) is True
        job = await _job_on_tip(fw, regtest)
        _check_difficulty_before_notify(fw)
        en2 = (5).to_bytes(en2_size, "big")
        sol = solve_block(job, en1, en2, job.version, job.difficulty)
        await fw.send_line(
            f'{{"id": 4, "method": "mining.submit", "params": ["{user}", "{job.job_id}", "{en2.hex()}", '
            f'"{job.ntime}", "{sol.nonce:08x}"]}}'
        )
        assert _ok(await fw.reply(4)) is True
        await wait_tip(regtest, sol.block_hash, timeout=10)
        fw.check_reply_ids()
    finally:
        await fw.close()


# ---- bfgminer 5.5 ------------------------------------------------------------------------------------------

async def _bfgminer_auth_and_mine(fw: FirmwareClient, regtest, user: str, en1: bytes, en2_size: int,
                                  share_id: int) -> None:
    # xnsub is written right after the subscribe reply and auth_stratum follows without waiting.
    await fw.send_lines([
        '{"id": "xnsub", "method": "mining.extranonce.subscribe", "params": []}',
        f'{{"id": "auth", "method": "mining.authorize", "params": ["{user}", "x"]}}',
    ])
    xnsub = await fw.reply("xnsub")
    auth = await fw.reply("auth")
    assert isinstance(xnsub["id"], str) and isinstance(auth["id"], str), "string ids must come back as strings"
    assert _ok(xnsub) is True and _ok(auth) is True
    job = await _job_on_tip(fw, regtest)
    en2 = (1).to_bytes(en2_size, "little")
    sol = solve_block(job, en1, en2, job.version, job.difficulty)
    await fw.send_line(
        f'{{"params": ["{user}", "{job.job_id}", "{en2.hex()}", "{job.ntime}", "{sol.nonce:08x}"], '
        f'"id": {share_id}, "method": "mining.submit"}}'
    )
    assert _ok(await fw.reply(share_id)) is True
    await wait_tip(regtest, sol.block_hash, timeout=10)


async def test_bfgminer(regtest, pool_app):
    app = pool_app
    user = await _user(regtest, "bfg")
    fw = await FirmwareClient("bfgminer", answer_version="bfgminer/5.5.0").connect(app.server.port)
    try:
        await fw.send_line('{"id": 0, "method": "mining.subscribe", "params": ["bfgminer/5.5.0"]}')
        first = await _first_line(fw)
        assert "method" not in first and first["id"] == 0, first
        en1, en2_size, _ = _subscribe_result(first)
        await _bfgminer_auth_and_mine(fw, regtest, user, en1, en2_size, share_id=1)
        _check_difficulty_before_notify(fw)
        fw.check_reply_ids()
    finally:
        await fw.close()


def _target_hex(difficulty: float) -> str:
    return f"{int(DIFF1 / difficulty):064x}"


async def test_bfgminer_request_diff_still_mines(regtest, capped_app):
    """bfgminer --request-diff: suggest_target (id null) then subscribe, first line read as the subscribe reply.

    If that line is not a usable subscribe result, bfgminer reconnects without the suggestion (its trysuggest
    fallback). Either way it must end up mining; the test below pins that the hint gets no reply.
    """
    app = capped_app
    user = await _user(regtest, "bfgdiff")
    fw = await FirmwareClient("bfgminer-rd", answer_version="bfgminer/5.5.0").connect(app.server.port)
    try:
        await fw.send_lines([
            f'{{"id": null, "method": "mining.suggest_target", "params": ["{_target_hex(1)}"]}}',
            '{"id": 0, "method": "mining.subscribe", "params": ["bfgminer/5.5.0"]}',
        ])
        first = await _first_line(fw)
        result = first.get("result")
        usable = isinstance(result, list) and len(result) >= 3 and isinstance(result[1], str)
        share_id = 1
        if not usable:  # "Failed to get nonce1 in initiate_stratum" -> resend without suggest_target
            await fw.close()
            fw = await FirmwareClient("bfgminer-rd#2", answer_version="bfgminer/5.5.0").connect(app.server.port)
            await fw.send_line('{"id": 1, "method": "mining.subscribe", "params": ["bfgminer/5.5.0"]}')
            first = await _first_line(fw)
            assert "method" not in first and first["id"] == 1, first
            share_id = 2
        en1, en2_size, _ = _subscribe_result(first)
        await _bfgminer_auth_and_mine(fw, regtest, user, en1, en2_size, share_id=share_id)
        _check_difficulty_before_notify(fw)
    finally:
        await fw.close()


async def test_bfgminer_suggest_target_notification_is_not_answered(regtest, capped_app):
    app = capped_app
    fw = await FirmwareClient("bfgminer-null").connect(app.server.port)
    try:
        await fw.send_lines([
            f'{{"id": null, "method": "mining.suggest_target", "params": ["{_target_hex(1)}"]}}',
            '{"id": 0, "method": "mining.subscribe", "params": ["bfgminer/5.5.0"]}',
        ])
        first = await _first_line(fw)
        assert "method" not in first and first["id"] == 0, f"first line is not the subscribe reply: {first}"
        _subscribe_result(first)
    finally:
        await fw.close()


# ---- the same rules, pool-side view ------------------------------------------------------------------------

async def test_profiles_leave_no_protocol_errors(regtest, pool_app):
    """A whole cgminer-style session with a get_version answer produces no protocol error on the pool."""
    app = pool_app
    user = await _user(regtest, "clean")
    before = _metric(app, "pool_protocol_errors_total", {"kind": "invalid"})
    fw = await FirmwareClient("clean", answer_version="cgminer/4.11.1").connect(app.server.port)
    try:
        await fw.send_lines([
            '{"id": 0, "method": "mining.subscribe", "params": ["cgminer/4.11.1"]}',
            f'{{"id": 1, "method": "mining.authorize", "params": ["{user}", "x"]}}',
        ])
        assert _ok(await fw.reply(1)) is True
        await fw.wait_for(lambda: fw.notifications("client.get_version"), 5, "client.get_version")
        await asyncio.sleep(0.2)  # let the pool read our answer to it
        assert json.dumps(fw.lines).count('"error": [') == 0
        fw.check_reply_ids()
    finally:
        await fw.close()
    assert _metric(app, "pool_protocol_errors_total", {"kind": "invalid"}) == before
