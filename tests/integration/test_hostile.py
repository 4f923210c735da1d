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
from pathlib import Path
from typing import Any

import pytest

from tests.support.arena import (
    ERR_LOW_DIFF,
    ERR_NOT_SUBSCRIBED,
    ERR_OTHER,
    ERR_STALE,
    ERR_UNAUTHORIZED,
    arena_on,
    error_code,
)
from tests.support.chain import (
    wait_until,
)
from tests.support.firmware import FirmwareClient, solve_low

pytestmark = pytest.mark.integration

_code = error_code


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
    invalid = await arena.metric_fresh("pool_protocol_errors_total", {"kind": "invalid"}) - before_invalid
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
    assert await arena.metric_fresh("pool_disconnects_total", {"reason": "too-many-errors"}) >= 1
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
            except (ConnectionError, OSError, RuntimeError):  # RuntimeError: uvloop, transport closed by the pool
                break
        await fw.wait_eof(5)
        assert time.monotonic() - started < 10
        # Whatever came back before the close is one error about the line, never a reply to the request.
        assert all(_code(m) == ERR_OTHER for m in fw.lines), fw.lines
        assert len(fw.lines) <= 1
    finally:
        await fw.close()
    assert await arena.metric_fresh("pool_protocol_errors_total", {"kind": "fatal"}) == before_fatal + 1
    assert await arena.metric_fresh("pool_disconnects_total", {"reason": "protocol-error"}) >= 1
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


@pytest.mark.one_process("reads the one process's sessions (app.server.sessions)")
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
    assert await arena.metric_fresh("pool_share_rejects_total", {"reason": "not-subscribed"}) >= 3
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
    assert await arena.metric_fresh("pool_protocol_errors_total", {"kind": "escalation-drop"}) == 1
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
    assert await arena.metric_fresh("pool_share_rejects_total", {"reason": "rate-limited"}) >= 1000
    assert await arena.metric_fresh("pool_share_rejects_total", {"reason": "stale"}) >= 500
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


@pytest.mark.one_process("reads the one process's connection guard (app.server.guard)")
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
            except (ConnectionError, OSError, RuntimeError):  # RuntimeError: uvloop, transport closed by the pool
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
    assert await arena.metric_fresh("pool_disconnects_total", {"reason": "limit"}) > 0
    assert await arena.metric_fresh("pool_protocol_errors_total", {"kind": "fatal"}) >= 1
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


