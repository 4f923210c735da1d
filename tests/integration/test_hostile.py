"""Hostile clients against a live pool while an honest miner keeps mining on the same server.

Each test starts a pool on regtest (difficulty max 1e-7, so hashlib keeps up), connects an honest ``TestMiner``
that mines continuously in a task and records every reply, then runs one kind of abuse from 127.0.0.1:
garbage bytes, invalid JSON, wrong types, a 10 MB line, a connect storm, submits before subscribe, unknown
methods, submit floods, sustained invalid shares up to a ban. Afterwards the honest miner must have had no share
refused for any reason but a stale job (21, right after a block), must still be answered, and (except after
the ban) a new well-behaved miner must be able to connect and have a share accepted. The pool's metrics must
show what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import pool_config
from tests.support import miner as support_miner
from tests.support.chain import (
    arpc,
    batch_rpc,
    bits_target,
    connect_miner,
    share_target,
    solve_where,
    wait_job_on,
    wait_until,
)
from tests.support.firmware import FirmwareClient, solve_low

pytestmark = pytest.mark.integration

DIFF_MAX = 1e-7
ERR_OTHER = 20
ERR_STALE = 21
ERR_LOW_DIFF = 23
ERR_UNAUTHORIZED = 24
ERR_NOT_SUBSCRIBED = 25


# ---- the honest miner and the arena ------------------------------------------------------------------------

class Honest:
    """A TestMiner mining continuously (one share every ``pace`` seconds) at the difficulty the pool sets.

    With ``blocks`` false it submits only shares that are not blocks (the pool's difficulty must then lie below
    the network's), so the chain and the mempool stay as a test set them up.
    """

    def __init__(self, miner: support_miner.TestMiner, pace: float = 0.1, blocks: bool = True) -> None:
        self.miner = miner
        self.pace = pace
        self.blocks = blocks
        self.replies: list[dict[str, Any]] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="honest-miner")

    async def _run(self) -> None:
        for _ in range(100_000):  # bounded; a test stops it long before
            if self._stop.is_set():
                return
            job = self.miner.job
            assert job is not None
            en2, ntime, nonce, _ = self.miner.solve(job) if self.blocks else self._solve_no_block(job)
            self.replies.append(await self.miner.submit(job, en2, ntime, nonce))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.pace)

    def _solve_no_block(self, job: support_miner.NotifyJob) -> tuple[bytes, int, int, bytes]:
        share = share_target(self.miner.job_difficulty.get(job.job_id, self.miner.difficulty))
        block = bits_target(job.nbits)
        assert share > block, "shares that are not blocks need a pool difficulty below the network's"
        return solve_where(self.miner, job, lambda h: block < h <= share)

    @property
    def accepted(self) -> int:
        return sum(1 for r in self.replies if r.get("result") is True)

    @property
    def refused(self) -> list[dict[str, Any]]:
        """Replies that refused a valid share for another reason than a stale job."""
        return [r for r in self.replies if r.get("result") is not True and (r.get("error") or [None])[0] != ERR_STALE]

    def alive(self) -> None:
        if self._task is not None and self._task.done() and not self._stop.is_set():
            self._task.result()  # re-raises what killed it (e.g. a reply that never came)
            raise AssertionError("the honest miner stopped")

    async def progress(self, shares: int = 2, timeout: float = 10.0) -> None:
        """The pool keeps answering: ``shares`` more accepted shares within ``timeout``."""
        target = self.accepted + shares

        def moved() -> bool:
            self.alive()
            return self.accepted >= target

        await wait_until(moved, timeout, what=f"{shares} more accepted honest shares")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 15)


class Arena:
    def __init__(self, app, regtest, honest: Honest, user: str) -> None:
        self.app = app
        self.regtest = regtest
        self.honest = honest
        self.user = user
        self.port = app.server.port
        self.start_height = 0

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.app.metrics.registry.get_sample_value(name, labels or {}) or 0.0

    async def client(self, name: str) -> FirmwareClient:
        return await FirmwareClient(name).connect(self.port)

    async def handshake(self, fw: FirmwareClient, first_id: int = 1) -> tuple[bytes, int]:
        await fw.send_lines([
            f'{{"id": {first_id}, "method": "mining.subscribe", "params": ["hostile/0.1"]}}',
            f'{{"id": {first_id + 1}, "method": "mining.authorize", "params": ["{self.user}.bad", "x"]}}',
        ])
        sub = await fw.reply(first_id)
        assert (await fw.reply(first_id + 1))["result"] is True
        return bytes.fromhex(sub["result"][1]), sub["result"][2]

    async def finish(self, new_connection: bool = True) -> None:
        """The honest miner was served throughout; a new well-behaved miner still gets in."""
        await self.honest.progress(2)
        await self.honest.stop()
        assert self.honest.refused == [], self.honest.refused
        assert self.honest.accepted >= 3
        assert self.app.coordinator.blocks_found >= self.honest.accepted  # every share is a block here
        assert await arpc(self.regtest, "getblockcount") > self.start_height
        if new_connection:
            await self.newcomer_mines()

    async def newcomer_mines(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        for _ in range(100):  # refused while the per-IP connect bucket refills: retry, bounded
            if time.monotonic() > deadline:
                break
            miner = None
            try:
                miner = await connect_miner(self.port, f"{self.user}.newcomer", timeout=3)
                for _ in range(5):  # a block by the honest miner can make one share stale
                    reply, _ = await miner.mine_one()
                    if reply.get("result") is True:
                        return
                    assert reply["error"][0] == ERR_STALE, reply
                raise AssertionError("newcomer's shares stayed stale")
            except (ConnectionError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                last = exc
                await asyncio.sleep(0.2)
            finally:
                if miner is not None:
                    await miner.close()
        raise AssertionError(f"a well-behaved miner could not connect and mine: {last!r}")


@contextlib.asynccontextmanager
async def arena_on(regtest, data_dir: Path, honest_blocks: bool = True, **overrides: dict) -> AsyncIterator[Arena]:
    from pool.app import PoolApp

    difficulty = {"max": DIFF_MAX, **overrides.pop("difficulty", {})}
    cfg = await asyncio.to_thread(pool_config, regtest, data_dir, difficulty=difficulty, **overrides)
    app = PoolApp(cfg)
    await app.start()
    honest = None
    try:
        user = await arpc(regtest, "getnewaddress", wallet="pool")
        miner = await connect_miner(app.server.port, f"{user}.honest")
        honest = Honest(miner, blocks=honest_blocks)
        arena = Arena(app, regtest, honest, user)
        arena.start_height = await arpc(regtest, "getblockcount")
        honest.start()
        await honest.progress(2)
        yield arena
    finally:
        if honest is not None:
            with contextlib.suppress(Exception):
                await honest.stop()
            await honest.miner.close()
        await app.stop()


@pytest.fixture
async def arena(regtest, tmp_path: Path) -> AsyncIterator[Arena]:
    async with arena_on(regtest, tmp_path / "pool") as a:
        yield a


def _code(reply: dict[str, Any]) -> int | None:
    err = reply.get("error")
    return err[0] if isinstance(err, list) and err else None


# ---- garbage, invalid JSON, wrong types --------------------------------------------------------------------

async def test_garbage_invalid_json_and_wrong_types(arena):
    before_invalid = arena.metric("pool_protocol_errors_total", {"kind": "invalid"})
    fw = await arena.client("garbage")
    try:
        # Binary garbage: deterministic random bytes, cut into lines wherever they hold a newline.
        garbage = random.Random(20240601).randbytes(1500).replace(b"\n", b"") + b"\n"
        garbage += b"\x00\x01\x02\xff\xfe\x80\x7f\n" + b"\xde\xad\xbe\xef" * 64 + b"\n"
        garbage_lines = sum(1 for seg in garbage.split(b"\n") if seg.strip())
        invalid_json = [
            b"{", b'{"id": 1, "method": "mining.subscribe", "params": [}', b"not json at all", b"}{",
            b'{"id":1 "method":"mining.subscribe"}', b'"unterminated', b'{"id": 1, "params": [NaN]}',
            b'{"id": 2, "method": "mining.suggest_difficulty", "params": [1e999]}',
            b"[" * 6000 + b"]" * 6000,  # nesting deeper than the JSON parser's recursion limit
        ]
        not_objects = [b"[]", b"42", b'"mining.subscribe"', b"null", b"true", b"[1, 2, 3]"]
        await fw.send_raw(garbage + b"\n".join(invalid_json + not_objects) + b"\n")
        expected_null_replies = garbage_lines + len(invalid_json) + len(not_objects)
        await fw.wait_for(lambda: len(fw.lines) >= expected_null_replies, 5, "an error for every bad line")
        assert all(m.get("id") is None and _code(m) == ERR_OTHER for m in fw.lines), fw.lines
        assert len(fw.lines) == expected_null_replies

        # Wrong types in otherwise well-formed requests: each gets exactly one reply with its own id.
        requests: list[tuple[Any, str, Any, int | None]] = [
            (10, "mining.subscribe", "cgminer", ERR_OTHER),  # params not an array
            (11, "mining.extranonce.subscribe", "x", ERR_OTHER),
            (12, "mining.suggest_difficulty", ["abc"], ERR_OTHER),
            (13, "mining.suggest_difficulty", [-1], ERR_OTHER),
            (14, "mining.suggest_difficulty", [True], ERR_OTHER),
            (15, "mining.suggest_difficulty", None, ERR_OTHER),
            (16, "mining.suggest_target", [12], ERR_OTHER),
            (17, "mining.submit", [1, 2, 3, 4, 5], ERR_NOT_SUBSCRIBED),
            ("s18", "mining.subscribe", {"agent": ["x"]}, None),  # a dict: treated as no params, subscribes
            (19, "mining.authorize", [123, None], ERR_UNAUTHORIZED),
            (20, "mining.authorize", [["a"], {"b": 1}], ERR_UNAUTHORIZED),
            (21, "mining.submit", {"worker": 1}, ERR_UNAUTHORIZED),
            (22, "mining.submit", [None, None, None, None, None], ERR_UNAUTHORIZED),
            (23, "mining.configure", ["version-rolling", 5], None),
            (24, "mining.configure", [["version-rolling", 7, None], {"version-rolling.mask": "zz"}], None),
            (25, "mining.get_transactions", [5], ERR_UNAUTHORIZED),  # the largest reply: only after login
            ({"nested": [1, {"x": None}]}, "mining.ping", [], None),
            (2.5, "mining.ping", [], None),
            ([1, "a"], "mining.ping", [], None),
        ]
        lines = [json.dumps({"id": i, "method": m, "params": p}) for i, m, p, _ in requests]
        lines.append('{"id": 26, "method": 42, "params": []}')  # method not a string
        await fw.send_lines(lines)
        for req_id, method, _, code in requests:
            reply = await fw.reply(req_id)
            assert type(reply["id"]) is type(req_id), (method, reply)
            if code is None:
                assert reply.get("error") is None, (method, reply)
            else:
                assert _code(reply) == code, (method, reply)
        assert _code(await fw.reply(26)) == ERR_OTHER

        # Authorized, with a real job: submits whose fields have the wrong type or shape.
        await fw.send_line(f'{{"id": 27, "method": "mining.authorize", "params": ["{arena.user}.typed", "x"]}}')
        assert (await fw.reply(27))["result"] is True
        job = await fw.wait_job(timeout=5)
        w, j, en2 = f"{arena.user}.typed", job.job_id, "00" * 8
        bad_submits = [
            (30, [w, j, en2, 1795547638, 0]),  # ntime/nonce as numbers
            (31, [w, j, "zz" * 8, job.ntime, "00000000"]),  # extranonce2 not hex
            (32, [w, j, "00" * 3, job.ntime, "00000000"]),  # extranonce2 of the wrong size
            (33, [w, j, en2, job.ntime, "00000000", 7]),  # version bits as a number
            (34, [w, j, en2, job.ntime, "00000000", "ffffffff"]),  # rolling bits, none negotiated
            (35, [w, j, en2, job.ntime, "0000000g"]),  # nonce not hex
            (36, [w, j, en2, job.ntime]),  # too few params
            (37, [w, j, en2, job.ntime, "00000000", "00000000", "extra"]),  # too many
        ]
        await fw.send_lines([json.dumps({"id": i, "method": "mining.submit", "params": p}) for i, p in bad_submits])
        for req_id, params in bad_submits:
            assert _code(await fw.reply(req_id)) == ERR_OTHER, params
        fw.check_reply_ids()
        # Still a working connection after all that (fewer than the 50 errors that get it closed).
        await fw.send_line('{"id": 99, "method": "mining.ping", "params": []}')
        assert (await fw.reply(99))["result"] == "pong"
        assert not fw.eof
    finally:
        await fw.close()
    invalid = arena.metric("pool_protocol_errors_total", {"kind": "invalid"}) - before_invalid
    assert invalid >= expected_null_replies + 8, invalid
    await arena.finish()


HUGE = "1" + "0" * 400  # valid JSON, an exact integer; not representable as a float


async def test_huge_integer_difficulty_hurts_nobody_else(arena):
    crashed_before = arena.metric("pool_disconnects_total", {"reason": "error"})
    fw = await arena.client("huge-int")
    try:
        await fw.send_lines([
            f'{{"id": 1, "method": "mining.suggest_difficulty", "params": [{HUGE}]}}',
            '{"id": 2, "method": "mining.configure", "params": [["minimum-difficulty"], '
            f'{{"minimum-difficulty.value": {HUGE}}}]}}',
        ])
        # An error reply or a closed connection are both acceptable for the sender ...
        await fw.wait_for(lambda: fw.eof or (fw.replies(1) and fw.replies(2)), 5, "answers to both or a close")
        # ... but a close must be the pool's decision, not a session that crashed on the number (an EOF with
        # no reply at all used to pass here), and whatever was answered refuses the value.
        assert arena.metric("pool_disconnects_total", {"reason": "error"}) == crashed_before
        if not fw.eof:
            assert fw.replies(1)[0]["error"], fw.lines
            (configured,) = fw.replies(2)
            assert configured["error"] or configured["result"].get("minimum-difficulty") is not True, configured
        assert fw.lines or fw.eof
        assert all(m.get("result") is not True for m in fw.lines), fw.lines
    finally:
        await fw.close()
    # ... but the pool goes on serving everyone else.
    await arena.finish()


async def test_huge_integer_difficulty_is_answered_with_an_error(arena):
    fw = await arena.client("huge-int")
    try:
        await fw.send_line(f'{{"id": 1, "method": "mining.suggest_difficulty", "params": [{HUGE}]}}')
        assert _code(await fw.reply(1, timeout=3)) == ERR_OTHER
        await fw.send_line('{"id": 2, "method": "mining.ping", "params": []}')
        assert (await fw.reply(2, timeout=3))["result"] == "pong"
    finally:
        await fw.close()


async def test_too_many_errors_closes_the_connection(arena):
    fw = await arena.client("error-spammer")
    try:
        await fw.send_raw(b"nonsense\n" * 80)
        await fw.wait_eof(5)
        assert 50 <= len(fw.lines) <= 80
        assert all(_code(m) == ERR_OTHER for m in fw.lines)
    finally:
        await fw.close()
    assert arena.metric("pool_disconnects_total", {"reason": "too-many-errors"}) >= 1
    await arena.finish()


# ---- a 10 MB line ------------------------------------------------------------------------------------------

async def test_ten_megabyte_line_is_cut_off(arena):
    cap = arena.app.config.stratum.max_line_bytes
    before_fatal = arena.metric("pool_protocol_errors_total", {"kind": "fatal"})
    fw = await arena.client("10MB")
    try:
        await fw.send_raw(b'{"id": 1, "method": "mining.subscribe", "params": ["')
        chunk = b"A" * 65536
        started = time.monotonic()
        for _ in range(160):  # 10 MiB, no newline
            if fw.eof:
                break
            try:
                await asyncio.wait_for(fw.send_raw(chunk), 5)
            except (ConnectionError, OSError):
                break
        await fw.wait_eof(5)
        assert time.monotonic() - started < 10
        # Whatever came back before the close is one error about the line, never a reply to the request.
        assert all(_code(m) == ERR_OTHER for m in fw.lines), fw.lines
        assert len(fw.lines) <= 1
    finally:
        await fw.close()
    assert arena.metric("pool_protocol_errors_total", {"kind": "fatal"}) == before_fatal + 1
    assert arena.metric("pool_disconnects_total", {"reason": "protocol-error"}) >= 1
    assert cap == 16 * 1024
    await arena.finish()


# ---- connect storm -----------------------------------------------------------------------------------------

async def _open_and_close(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (ConnectionError, OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1)
    return True


async def test_thousand_rapid_connects(arena):
    limited_before = arena.metric("pool_disconnects_total", {"reason": "limit"})
    connects_before = arena.metric("pool_connects_total")
    honest_before = arena.honest.accepted
    started = time.monotonic()
    for _ in range(10):
        await asyncio.gather(*(_open_and_close(arena.port) for _ in range(100)))
    elapsed = time.monotonic() - started
    # Wait for the pool to have dealt with every one of them.
    await wait_until(
        lambda: arena.metric("pool_connects_total") - connects_before
        + arena.metric("pool_disconnects_total", {"reason": "limit"}) - limited_before >= 1000,
        10, what="the pool to account for 1000 connections",
    )
    refused = arena.metric("pool_disconnects_total", {"reason": "limit"}) - limited_before
    accepted = arena.metric("pool_connects_total") - connects_before
    assert refused > 0, "the per-IP connect rate limit never kicked in"
    assert accepted >= arena.app.config.stratum.guard.connect_burst_per_ip - 1
    await wait_until(lambda: len(arena.app.server.sessions) == 1, 5, what="closed connections to be gone")
    await arena.honest.progress(2)
    assert arena.honest.accepted > honest_before, f"honest miner starved during a {elapsed:.1f}s storm"
    await arena.finish()


# ---- submit before subscribe, unknown methods --------------------------------------------------------------

async def test_submit_before_subscribe_and_unknown_methods(arena):
    fw = await arena.client("early")
    try:
        await fw.send_lines([
            '{"id": 1, "method": "mining.submit", "params": ["w", "1", "00", "00000000", "00000000"]}',
            f'{{"id": 2, "method": "mining.authorize", "params": ["{arena.user}.early", "x"]}}',
            '{"id": 3, "method": "mining.submit", "params": ["w", "1", "00", "00000000", "00000000"]}',
            f'{{"id": "4", "method": "mining.submit", "params": ["{arena.user}.early", "1", "0000000000000000", '
            '"00000000", "00000000"]}',
        ])
        assert _code(await fw.reply(1)) == ERR_NOT_SUBSCRIBED
        assert (await fw.reply(2))["result"] is True  # authorize before subscribe is allowed
        assert _code(await fw.reply(3)) == ERR_NOT_SUBSCRIBED
        assert _code(await fw.reply("4")) == ERR_NOT_SUBSCRIBED
        assert not fw.jobs(), "no work before subscribe"

        unknown = ["mining.foo", "mining.notify", "mining.set_difficulty", "client.reconnect", "eth_submitLogin",
                   "", "MINING.SUBSCRIBE", "mining.subscribe ", "x" * 200]
        await fw.send_lines([json.dumps({"id": 100 + i, "method": m, "params": []}) for i, m in enumerate(unknown)])
        for i, m in enumerate(unknown):
            assert _code(await fw.reply(100 + i)) == ERR_OTHER, m
        fw.check_reply_ids()
        await fw.send_line('{"id": 200, "method": "mining.subscribe", "params": ["late"]}')
        assert isinstance((await fw.reply(200))["result"], list)
        await fw.wait_job(timeout=5)  # already authorized: work follows the subscribe
    finally:
        await fw.close()
    assert arena.metric("pool_share_rejects_total", {"reason": "not-subscribed"}) >= 3
    await arena.finish()


# ---- submit floods -----------------------------------------------------------------------------------------

def _submit(req_id: int, worker: str, job_id: str, en2: str, ntime: str = "00000000",
            nonce: str = "00000000") -> str:
    return (f'{{"id": {req_id}, "method": "mining.submit", "params": ["{worker}", "{job_id}", "{en2}", '
            f'"{ntime}", "{nonce}"]}}')


async def test_submit_flood_of_junk(arena):
    fw = await arena.client("junk-flood")
    try:
        _, en2_size = await arena.handshake(fw, first_id=10_000)
        worker = f"{arena.user}.bad"
        await fw.send_lines([_submit(i, worker, "nojob", "00" * en2_size) for i in range(1, 2001)])
        await fw.wait_for(lambda: fw.eof or len(fw.replies(2000)) == 1, 20, "all answers or a drop")
        answered = [m for m in fw.lines if "method" not in m and isinstance(m.get("id"), int) and m["id"] <= 2000]
        ids = [m["id"] for m in answered]
        assert ids == list(range(1, len(ids) + 1)), "submits must be answered in the order they were sent"
        assert all(_code(m) in (ERR_STALE, ERR_OTHER) for m in answered)
        if len(ids) < 2000:
            await fw.wait_eof(5)  # dropped for sustained invalid shares
        assert len(ids) >= 150
    finally:
        await fw.close()
    assert arena.metric("pool_protocol_errors_total", {"kind": "escalation-drop"}) == 1
    await arena.finish()


async def test_submit_flood_is_rate_limited_in_order(arena):
    fw = await arena.client("stale-flood")
    try:
        en1, en2_size = await arena.handshake(fw, first_id=10_000)
        first = await fw.wait_job(timeout=5)
        # A block by the honest miner makes this job stale: stale shares are not "invalid", so only the
        # submit rate limit applies to this flood.
        await fw.wait_for(lambda: any(j.clean and j.prevhash != first.prevhash for j in fw.jobs()), 10,
                          "a new block")
        worker = f"{arena.user}.bad"
        await fw.send_lines([_submit(i, worker, first.job_id, f"{i:0{2 * en2_size}x}") for i in range(1, 2001)])
        await fw.wait_for(lambda: fw.eof or len(fw.replies(2000)) == 1, 20, "all 2000 answers")
        assert not fw.eof
        answered = [m for m in fw.lines if "method" not in m and isinstance(m.get("id"), int) and m["id"] <= 2000]
        assert [m["id"] for m in answered] == list(range(1, 2001))
        codes = [_code(m) for m in answered]
        limited = [m for m in answered if _code(m) == ERR_OTHER and "Too many" in m["error"][1]]
        assert set(codes) <= {ERR_STALE, ERR_OTHER}
        assert codes.count(ERR_STALE) >= arena.app.config.stratum.guard.submit_burst
        assert len(limited) >= 1000, "beyond the burst, submits are refused as too many"
        await fw.send_line('{"id": 3000, "method": "mining.ping", "params": []}')
        assert (await fw.reply(3000))["result"] == "pong"
    finally:
        await fw.close()
    assert arena.metric("pool_share_rejects_total", {"reason": "rate-limited"}) >= 1000
    assert arena.metric("pool_share_rejects_total", {"reason": "stale"}) >= 500
    await arena.finish()


# ---- sustained invalid shares: fresh work, reconnect, drop, ban --------------------------------------------

async def _invalid_until_dropped(fw: FirmwareClient, worker: str, en1: bytes, en2_size: int,
                                 limit: int) -> dict[str, int]:
    """Submit low-difficulty shares on the newest job, one at a time, like a miner with a broken hasher.

    Stale answers (a block by the honest miner) do not count as invalid, so they are simply retried on the
    new job. Returns the line index of the n-th counted invalid reply.
    """
    counted: dict[int, int] = {}
    req_id = 0
    for _ in range(10 * limit):  # bounded
        if len(counted) == 3 * limit or fw.eof:
            break
        job = await fw.wait_job(timeout=5)
        req_id += 1
        low = solve_low(job, en1, req_id.to_bytes(en2_size, "big"), job.version, job.difficulty)
        await fw.send_line(_submit(req_id, worker, job.job_id, low.extranonce2.hex(), job.ntime, f"{low.nonce:08x}"))
        reply = await fw.reply(req_id)
        if _code(reply) == ERR_STALE:
            continue
        assert _code(reply) == ERR_LOW_DIFF, reply
        counted[len(counted) + 1] = fw.reply_index(req_id)
    return counted


def _next_line_after(fw: FirmwareClient, index: int, skip: tuple[str, ...] = ("mining.set_difficulty",)) -> dict:
    for m in fw.lines[index + 1:]:
        if m.get("method") in skip:
            continue
        return m
    return {}


async def test_invalid_share_escalation_then_ban(regtest, tmp_path: Path):
    limit = 5
    stratum = {"invalid_share_limit": limit, "strikes_to_ban": 2, "ban_seconds": 30,
               "connect_burst_per_ip": 5000, "connect_rate_per_ip": 1000}
    async with arena_on(regtest, tmp_path / "ban", stratum=stratum) as arena:
        worker = f"{arena.user}.bad"
        for strike in (1, 2):
            fw = await arena.client(f"broken-hasher#{strike}")
            try:
                en1, en2_size = await arena.handshake(fw, first_id=10_000)
                counted = await _invalid_until_dropped(fw, worker, en1, en2_size, limit)
                assert sorted(counted) == list(range(1, 3 * limit + 1)), counted
                # 1x limit: a fresh clean job, right after that reply.
                fresh = _next_line_after(fw, counted[limit])
                assert fresh.get("method") == "mining.notify" and fresh["params"][8] is True, fresh
                # 2x limit: client.reconnect, right after that reply.
                again = _next_line_after(fw, counted[2 * limit])
                assert again.get("method") == "client.reconnect", again
                # 3x limit: the connection is closed.
                await fw.wait_eof(5)
                assert not [m for m in fw.lines[counted[3 * limit] + 1:] if "method" not in m]
            finally:
                await fw.close()
            banned = arena.app.server.guard.banned("127.0.0.1", time.monotonic())
            assert banned is (strike == 2)

        # Banned: a new connection from 127.0.0.1 is closed at once, without a single byte.
        late = await arena.client("after-ban")
        try:
            with contextlib.suppress(ConnectionError, OSError):
                await late.send_line('{"id": 1, "method": "mining.subscribe", "params": []}')
            await late.wait_eof(3)
            assert late.lines == []
        finally:
            await late.close()

        m = arena.metric
        assert m("pool_protocol_errors_total", {"kind": "escalation-fresh-work"}) == 2
        assert m("pool_protocol_errors_total", {"kind": "escalation-reconnect"}) == 2
        assert m("pool_protocol_errors_total", {"kind": "escalation-drop"}) == 2
        assert m("pool_protocol_errors_total", {"kind": "ban"}) == 1
        assert m("pool_disconnects_total", {"reason": "banned"}) >= 1
        assert m("pool_share_rejects_total", {"reason": "low-difficulty"}) >= 6 * limit
        # The honest miner connected before the ban (same address, think NAT) is still served.
        await arena.finish(new_connection=False)


# ---- sessions and slow readers -----------------------------------------------------------------------------

async def test_resume_cannot_take_a_live_extranonce(arena):
    live = arena.honest.miner.extranonce1.hex()
    fw = await arena.client("thief")
    try:
        await fw.send_line(f'{{"id": 1, "method": "mining.subscribe", "params": ["cgminer/4.11.1", "{live}"]}}')
        reply = await fw.reply(1)
        assert reply["error"] is None and reply["result"][1] != live, "two live miners must never share an extranonce1"
        await fw.send_line('{"id": 2, "method": "mining.subscribe", "params": ["cgminer/4.11.1", "zz!"]}')
        assert (await fw.reply(2))["error"] is None  # nonsense session ids are ignored, not fatal
    finally:
        await fw.close()
    await arena.finish()


async def test_reader_that_never_reads_is_dropped(arena):
    """Requests whose answers are never read: the pool's write buffer must stay bounded (it drops the reader)."""
    dropped_before = arena.metric("pool_disconnects_total", {"reason": "dropped"})
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", arena.port), 5)
    try:
        big_id = json.dumps("x" * 8000)
        line = f'{{"id": {big_id}, "method": "mining.ping", "params": []}}\n'.encode()
        sent = 0
        for _ in range(4000):  # up to ~32 MB of requests, each answered with ~8 KB nobody reads
            try:
                writer.write(line * 16)
                await asyncio.wait_for(writer.drain(), 5)
            except (ConnectionError, OSError):
                break
            sent += 16
            if arena.metric("pool_disconnects_total", {"reason": "dropped"}) > dropped_before:
                break
        await wait_until(lambda: arena.metric("pool_disconnects_total", {"reason": "dropped"}) > dropped_before,
                         10, what="the slow reader to be dropped")
        assert sent < 4000 * 16
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1)
        del reader
    await arena.finish()


# ---- all of it at once ---------------------------------------------------------------------------------------

async def test_all_at_once(arena):
    """Garbage, a junk flood, a 10 MB line and a connect storm concurrently; the honest miner carries on."""
    garbage_fw, flood_fw, big_fw = [await arena.client(n) for n in ("all-garbage", "all-flood", "all-10MB")]
    try:
        _, en2_size = await arena.handshake(flood_fw, first_id=10_000)
        rng = random.Random(7)

        async def garbage() -> None:
            for _ in range(40):  # stays under the 50 errors that close a connection
                await garbage_fw.send_raw(rng.randbytes(200).replace(b"\n", b"") + b"\n")
                await asyncio.sleep(0.005)
            await garbage_fw.wait_for(lambda: len(garbage_fw.lines) >= 40, 10, "40 error replies")

        async def flood() -> None:
            worker = f"{arena.user}.bad"
            await flood_fw.send_lines([_submit(i, worker, "nojob", "00" * en2_size) for i in range(1, 2001)])
            await flood_fw.wait_for(lambda: flood_fw.eof or flood_fw.replies(2000), 20, "answers or a drop")
            ids = [m["id"] for m in flood_fw.lines if "method" not in m and isinstance(m.get("id"), int)
                   and m["id"] <= 2000]
            # In order, from the first; all 2000 unless the pool dropped the flooder (no replies is no pass).
            assert ids and ids == list(range(1, len(ids) + 1)), ids[:5]
            assert len(ids) == 2000 or flood_fw.eof, len(ids)

        async def big() -> None:
            await big_fw.send_raw(b'{"id": 1, "method": "mining.subscribe", "params": ["')
            for _ in range(160):
                if big_fw.eof:
                    break
                try:
                    await asyncio.wait_for(big_fw.send_raw(b"B" * 65536), 5)
                except (ConnectionError, OSError):
                    break
            await big_fw.wait_eof(5)

        async def storm() -> None:
            for _ in range(5):
                await asyncio.gather(*(_open_and_close(arena.port) for _ in range(100)))

        honest_before = arena.honest.accepted
        await asyncio.wait_for(asyncio.gather(garbage(), flood(), big(), storm()), 30)
        assert not garbage_fw.eof
        await arena.honest.progress(2)
        assert arena.honest.accepted > honest_before
    finally:
        for fw in (garbage_fw, flood_fw, big_fw):
            await fw.close()
    assert arena.metric("pool_disconnects_total", {"reason": "limit"}) > 0
    assert arena.metric("pool_protocol_errors_total", {"kind": "fatal"}) >= 1
    await arena.finish()


async def test_escalation_gives_an_extranonce_subscriber_a_new_extranonce(regtest, tmp_path: Path):
    """A miner that subscribed to extranonce changes gets a fresh extranonce1 (mining.set_extranonce) before
    the fresh clean job: sustained invalid shares may mean it re-hashes a range it already covered."""
    limit = 4
    stratum = {"invalid_share_limit": limit, "connect_burst_per_ip": 5000, "connect_rate_per_ip": 1000}
    async with arena_on(regtest, tmp_path / "xn", stratum=stratum) as arena:
        worker = f"{arena.user}.bad"
        fw = await arena.client("nicehash-like")
        try:
            en1, en2_size = await arena.handshake(fw, first_id=500)
            await fw.send_line('{"id": 502, "method": "mining.extranonce.subscribe", "params": []}')
            assert (await fw.reply(502))["result"] is True
            invalid = 0
            for req_id in range(10_000, 10_040):  # bounded; stale answers (honest blocks) do not count
                if invalid == limit:
                    break
                job = await fw.wait_job(timeout=5)
                low = solve_low(job, en1, req_id.to_bytes(en2_size, "big"), job.version, job.difficulty)
                await fw.send_line(
                    _submit(req_id, worker, job.job_id, low.extranonce2.hex(), job.ntime, f"{low.nonce:08x}")
                )
                reply = await fw.reply(req_id)
                if _code(reply) == ERR_LOW_DIFF:
                    invalid += 1
            assert invalid == limit
            await wait_until(lambda: any(m.get("method") == "mining.set_extranonce" for m in fw.lines), 5,
                             what="mining.set_extranonce after the invalid-share limit")
            index, change = next((i, m) for i, m in enumerate(fw.lines) if m.get("method") == "mining.set_extranonce")
            new_en1, new_size = change["params"]
            assert bytes.fromhex(new_en1) != en1 and new_size == en2_size
            following = _next_line_after(fw, index)
            assert following.get("method") == "mining.notify" and following["params"][8] is True, following
        finally:
            await fw.close()
        await arena.finish()


# ---- difficulty hint flood -------------------------------------------------------------------------------------

async def test_hint_flood_cannot_flood_the_job_book(arena):
    """100,000 suggest_difficulty hints (ids null and numbered, many values): a few re-send work at once, the rest
    are coalesced; the job book does not grow with hints and the honest miner's job is never evicted."""
    coalesced_before = arena.metric("pool_difficulty_hints_total", {"outcome": "coalesced"})
    fw = await arena.client("hint-flood")
    try:
        await arena.handshake(fw)
        await fw.wait_job()
        book_before = len(arena.app.coordinator.book)
        lines = []
        for i in range(100_000):
            value = 1e-9 * (1 + i % 997)
            req_id = "null" if i % 2 else str(10 + i)
            lines.append(f'{{"id": {req_id}, "method": "mining.suggest_difficulty", "params": [{value}]}}')
        for start in range(0, len(lines), 5000):
            await fw.send_lines(lines[start:start + 5000], record=False)
        # Numbered hints are all answered (true), in order; the last one proves the whole flood was read.
        last_id = 10 + 99_998
        await wait_until(lambda: any(m.get("id") == last_id and m.get("result") is True for m in fw.lines[-50:]),
                         60, interval=0.2, what="the reply to the last numbered hint")
        applied = arena.metric("pool_difficulty_hints_total", {"outcome": "applied"})
        coalesced = arena.metric("pool_difficulty_hints_total", {"outcome": "coalesced"}) - coalesced_before
        assert coalesced > 90_000
        assert applied <= 8  # the burst allowance, not one per hint
        assert len(fw.notifications("mining.set_difficulty")) <= 10
        assert len(arena.app.coordinator.book) <= book_before + 2  # hints add no jobs
    finally:
        await fw.close()
    await arena.finish()


# ---- output nobody reads: a get_transactions amplifier, ping and unknown-method floods ---------------------

N_MEMPOOL_TXS = 1000  # each transaction list is then about 67 KB
NO_BLOCKS = {"start": 1e-10, "min": 1e-10, "max": 1e-10}  # below regtest's 4.66e-10: shares need not be blocks
COIN_AMOUNT = Decimal("0.00100000")
TX_FEE = Decimal("0.00001000")
RSS_GROWTH_LIMIT_KB = 30 * 1024


def _spendable_coins(node, n: int) -> list[dict[str, Any]]:
    """``n`` confirmed coins in a wallet of their own, each to be spent by a transaction of its own."""
    node.ensure_wallet("spender")
    mine_to = node.rpc("getnewaddress", wallet="pool")
    node.rpc("generatetoaddress", 101, mine_to)
    dests = batch_rpc(node, [("getnewaddress", ["", "bech32"])] * n, wallet="spender")
    node.rpc("sendmany", "", {a: COIN_AMOUNT for a in dests}, wallet="pool")
    node.rpc("generatetoaddress", 1, mine_to)
    coins = node.rpc("listunspent", 1, 9999999, dests, wallet="spender")
    assert len(coins) == n, len(coins)
    return coins


def _spend_each(node, coins: list[dict[str, Any]]) -> set[str]:
    """One mempool transaction per coin; returns their txids."""
    dest = node.rpc("getnewaddress", wallet="pool")
    raws = batch_rpc(node, [("createrawtransaction", [[{"txid": c["txid"], "vout": c["vout"]}],
                                                      {dest: c["amount"] - TX_FEE}]) for c in coins])
    signed = batch_rpc(node, [("signrawtransactionwithwallet", [raw]) for raw in raws], wallet="spender")
    assert all(s["complete"] for s in signed)
    return set(batch_rpc(node, [("sendrawtransaction", [s["hex"]]) for s in signed]))


def _kb(field: str) -> int:
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith(field + ":"):
            return int(row.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


class RssWatch:
    """Growth of this process's resident memory (the pool runs in-process) over a stretch of the test.

    The kernel's peak (VmHWM) is reset at the start, so a spike that is freed again before the end still
    counts; where the reset is not allowed, the resident size at the end is used.
    """

    def __init__(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.peak = True
        except OSError:
            self.peak = False
        self.start = _kb("VmRSS")

    def growth_kb(self) -> int:
        return (_kb("VmHWM") if self.peak else _kb("VmRSS")) - self.start


def _carries(arena: Arena, job_id: Any, txids: set[str]) -> bool:
    """Whether the pool's job ``job_id`` is live and its template holds all of ``txids``."""
    from pool.mining.jobs import Job

    found = arena.app.coordinator.book.get(job_id) if isinstance(job_id, str) else None
    return isinstance(found, Job) and txids <= {tx.txid[::-1].hex() for tx in found.template.transactions}


async def _wait_mempool_work(arena: Arena, txids: set[str]) -> None:
    """Until the honest miner's newest job carries ``txids``. bitcoind serves a cached template for 5 s unless
    the tip moved, so the pool is asked to refetch until it does (bounded)."""

    def carried() -> bool:
        return arena.honest.miner.job is not None and _carries(arena, arena.honest.miner.job.job_id, txids)

    async def refreshed() -> bool:
        if carried():
            return True
        assert await asyncio.wait_for(arena.app.source.fetch("test"), 30)
        await asyncio.sleep(0.1)
        return carried()

    await wait_until(refreshed, 30, interval=0.5, what="a job carrying the mempool")


async def _never_reading_amplifier(arena: Arena, txids: set[str]) -> int:
    """Log in, read up to the job notify, then send 256 KiB of get_transactions for that job and never read
    again. Returns how many bytes of requests were written before the pool dropped the connection."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", arena.port), 5)
    sent = 0
    try:
        writer.write(
            b'{"id": 1, "method": "mining.subscribe", "params": ["amplifier/1.0"]}\n'
            + f'{{"id": 2, "method": "mining.authorize", "params": ["{arena.user}.amp", "x"]}}\n'.encode()
        )
        for _ in range(20):  # bounded: subscribe, authorize, set_difficulty, notify, get_version
            msg = json.loads(await asyncio.wait_for(reader.readline(), 5))
            if msg.get("method") == "mining.notify":
                job_id = msg["params"][0]
                assert _carries(arena, job_id, txids), "the amplifier must get a job carrying the mempool"
                break
        else:
            raise AssertionError("no job for the amplifier")
        requests = [f'{{"id": {i}, "method": "mining.get_transactions", "params": ["{job_id}"]}}\n'
                    for i in range(10, 10_000)]
        flood = "".join(requests).encode()
        for start in range(0, 4 * 65536, 65536):  # each 64 KiB read holds ~960 requests
            try:
                writer.write(flood[start:start + 65536])
                await asyncio.wait_for(writer.drain(), 5)
            except (ConnectionError, OSError, TimeoutError):
                break
            sent += 65536
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1)
        del reader
    return sent


async def test_get_transactions_amplifier_that_never_reads(regtest, tmp_path: Path):
    """64 KiB of get_transactions for a 1,000-transaction template (about 67 KB per answer) once queued 65 MB.

    Now the list goes only to authorized sessions, once per job, at a limited rate; the amplifier is dropped at
    once, the pool's memory hardly moves, and the honest miner beside it is served throughout.
    """
    coins = await asyncio.to_thread(_spendable_coins, regtest, N_MEMPOOL_TXS)
    async with arena_on(regtest, tmp_path / "amp", honest_blocks=False, difficulty=NO_BLOCKS) as arena:
        txids = await asyncio.to_thread(_spend_each, regtest, coins)
        await _wait_mempool_work(arena, txids)

        sessions_before = len(arena.app.server.sessions)
        drops_before = sum(arena.metric("pool_disconnects_total", {"reason": r}) for r in ("dropped", "too-many-errors"))
        rss = RssWatch()
        started = time.monotonic()
        sent = await _never_reading_amplifier(arena, txids)
        await wait_until(lambda: len(arena.app.server.sessions) == sessions_before, 10,
                         what="the amplifier to be dropped")
        dropped_after = time.monotonic() - started
        growth = rss.growth_kb()
        assert growth < RSS_GROWTH_LIMIT_KB, f"RSS grew {growth} kB (peak={rss.peak})"
        assert sent >= 65536  # at least one full read of requests reached the pool
        assert sum(arena.metric("pool_disconnects_total", {"reason": r})
                   for r in ("dropped", "too-many-errors")) == drops_before + 1
        assert dropped_after < 10

        # A client that reads: nothing before login; after it, the job's transactions once, then an error.
        fw = await arena.client("tx-reader")
        try:
            await fw.send_line('{"id": 1, "method": "mining.get_transactions", "params": []}')
            assert _code(await fw.reply(1)) == ERR_UNAUTHORIZED
            await arena.handshake(fw, first_id=2)
            job_id = (await fw.wait_job()).job_id
            assert _carries(arena, job_id, txids)
            await fw.send_lines([f'{{"id": {i}, "method": "mining.get_transactions", "params": ["{job_id}"]}}'
                                 for i in (4, 5)])
            listed = (await fw.reply(4))["result"]
            assert set(listed) >= txids and len(listed) == len(set(listed)), len(listed)
            assert _code(await fw.reply(5)) == ERR_OTHER

            # Rate limit: eight new jobs in quick succession (each refresh renews work that is made to look old
            # enough to be renewed), all asked for at once: only the first few get a list.
            seen = len(fw.jobs())
            for _ in range(8):
                arena.app.coordinator._prepared_at -= 3600
                assert await asyncio.wait_for(arena.app.source.fetch("refresh"), 30)
            await fw.wait_for(lambda: len(fw.jobs()) >= seen + 8, 10, "eight new jobs")
            new_ids = [j.job_id for j in fw.jobs()[seen:]]
            assert len(set(new_ids)) == len(new_ids)
            await fw.send_lines([json.dumps({"id": 100 + i, "method": "mining.get_transactions", "params": [j]})
                                 for i, j in enumerate(new_ids)])
            replies = [await fw.reply(100 + i) for i in range(len(new_ids))]
            lists = [r for r in replies if isinstance(r.get("result"), list)]
            limited = [r for r in replies if _code(r) == ERR_OTHER and "slow down" in r["error"][1]]
            assert 1 <= len(lists) <= 5 and len(lists) + len(limited) == len(new_ids), replies
            assert arena.metric("pool_protocol_errors_total", {"kind": "get-transactions-limited"}) == len(limited)
            assert not fw.eof
        finally:
            await fw.close()

        # The honest miner beside it: never refused, still answered, and new work still reaches it.
        await arena.honest.progress(2)
        tip = (await arpc(regtest, "generatetoaddress", 1, arena.user))[0]
        await wait_job_on(arena.honest.miner, tip)
        await arena.honest.progress(2)
        await arena.honest.stop()
        assert arena.honest.refused == [], arena.honest.refused
        await arena.newcomer_mines()


@pytest.mark.parametrize(("method", "reasons"), [
    ("mining.ping", {"dropped"}),
    ("mining.no_such_method", {"dropped", "too-many-errors"}),  # each is an error too: whichever comes first
])
async def test_flood_nobody_reads_is_dropped_within_the_budget(regtest, tmp_path: Path, method: str,
                                                               reasons: set[str]):
    """Requests with 8 KB ids, answered by the core itself and never read: the pool keeps at most its output
    budget per connection (beside what the kernel's socket buffers hold) and drops the reader."""
    async with arena_on(regtest, tmp_path / "flood", stratum={"max_pending_output_bytes": 65536}) as arena:
        before = {r: arena.metric("pool_disconnects_total", {"reason": r}) for r in reasons}
        rss = RssWatch()
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", arena.port), 5)
        sent = 0
        try:
            big_id = json.dumps("x" * 8000)
            line = f'{{"id": {big_id}, "method": "{method}", "params": []}}\n'.encode()
            for _ in range(1000):  # at most 128 MB of requests; the kernel's buffers take a few MB
                try:
                    writer.write(line * 16)
                    await asyncio.wait_for(writer.drain(), 5)
                except (ConnectionError, OSError, TimeoutError):
                    break
                sent += 16
                if any(arena.metric("pool_disconnects_total", {"reason": r}) > before[r] for r in reasons):
                    break
            await wait_until(lambda: any(arena.metric("pool_disconnects_total", {"reason": r}) > before[r]
                                         for r in reasons), 10, what="the flood to be dropped")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)
            del reader
        assert sent * len(line) < 16 * 1024 * 1024
        assert rss.growth_kb() < RSS_GROWTH_LIMIT_KB


# ---- the admin API -----------------------------------------------------------------------------------------

ADMIN_TOKEN = "hostile-test-admin-token-0123456789"


async def test_admin_requests_without_wrong_and_right_token(regtest, tmp_path: Path):
    """Unauthenticated and wrongly authenticated admin requests change nothing and reach no miner; the right
    token works; the honest miner mines on throughout."""
    import aiohttp

    admin = {"token": ADMIN_TOKEN, "reconnect_allowlist": ["pool2.example.com"]}
    async with arena_on(regtest, tmp_path / "admin", admin=admin) as arena:
        base = f"http://127.0.0.1:{arena.app.http.port}"
        hijack = "/admin/reconnect?host=attacker.example&port=3333"
        mask = "/admin/version-mask?mask=00006000"
        attempts: list[tuple[str, dict[str, str]]] = [
            (hijack, {}),
            (hijack, {"Authorization": "Bearer not-the-token-not-the-token"}),
            (hijack + f"&token={ADMIN_TOKEN}", {}),
            (hijack, {"Authorization": f"Bearer {ADMIN_TOKEN}", "Origin": "https://attacker.example"}),
            (mask, {}),
            (mask, {"Authorization": "Bearer not-the-token-not-the-token"}),
        ]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            for path, headers in attempts * 20:
                async with http.post(base + path, headers=headers) as resp:
                    assert resp.status in (401, 403), (path, headers, resp.status)
            assert arena.app.server._proto_config.pool_version_mask == 0x1FFFE000
            await arena.honest.progress(2)
            assert not [n for n in arena.honest.miner.notifications if n.get("method") == "client.reconnect"]
            # The right token: the allowlist still refuses the attacker's host, the mask change goes through.
            right = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with http.post(base + hijack, headers=right) as resp:
                assert resp.status == 403
            async with http.post(base + mask, headers=right) as resp:
                assert resp.status == 200
                assert (await resp.json())["mask"] == "00006000"
        assert arena.app.server._proto_config.pool_version_mask == 0x00006000
        assert not [n for n in arena.honest.miner.notifications if n.get("method") == "client.reconnect"]
        failures = sum(
            arena.metric("pool_admin_auth_failures_total", {"reason": r})
            for r in ("missing", "wrong", "malformed", "query-token", "cross-origin")
        )
        assert failures == len(attempts) * 20
        await arena.finish()
