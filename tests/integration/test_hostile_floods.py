"""Hostile clients that try to make the pool do or hold too much, beside an honest miner: a difficulty-hint flood
(the job book must not grow), output nobody reads (a get_transactions amplifier, ping and unknown-method floods:
the per-connection output budget), and admin requests without, with a wrong and with the right token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.support.arena import (
    ERR_OTHER,
    ERR_UNAUTHORIZED,
    Arena,
    arena_on,
    error_code,
)
from tests.support.chain import (
    arpc,
    batch_rpc,
    wait_job_on,
    wait_until,
)

pytestmark = pytest.mark.integration

_code = error_code


# ---- difficulty hint flood -------------------------------------------------------------------------------------

@pytest.mark.one_process("reads the one process's job book")
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


@pytest.mark.one_process("reads the one process's job book")
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


@pytest.mark.one_process("reads the one process's protocol settings (app.server._proto_config)")
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
