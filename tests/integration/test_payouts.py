"""PPLNS payouts end to end on a real regtest bitcoind: shares from several workers on different addresses,
blocks found through the pool, maturity, one sendmany, and every address receiving exactly what the ledger
credited; plus a block orphaned by invalidateblock and brought back by reconsiderblock.

The maturity tracker and the payment processor are driven by hand (``check_once`` / ``pay_once``), their own
loops being configured with hour-long intervals. Every test runs on both ledger backends (SQLite, PostgreSQL).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from pool.app import PoolApp
from pool.ledger import book
from tests.conftest import pool_config
from tests.support.chain import arpc, connect_miner
from tests.support.payout_check import (
    btc_to_sats,
    chain_reward_and_difficulty,
    credits_by_address,
    mine_share,
    recompute_pplns,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FEE_BP = 100  # fee_percent 1.0
FACTOR = 2.0
SHARE_DIFF = 1e-11  # regtest network difficulty ≈ 4.66e-10: a window of 2 × that ≈ 93 such shares


def payout_overrides(**payout: object) -> dict:
    return {
        "difficulty": {"start": SHARE_DIFF, "min": 1e-12, "max": 1e6},
        "stratum": {"submit_rate": 1e5, "submit_burst": 1e6},
        "payout": {
            "scheme": "pplns",
            "fee_percent": 1.0,
            "pplns_factor": FACTOR,
            "maturity_margin": 1,
            "maturity_check_interval": 3600,
            "payments_enabled": True,
            "payment_threshold_sats": 10_000,
            "payment_interval": 86400,
            "payment_grace": 3600,
            "wallet": "pool",
            **payout,
        },
    }


def ledger_section(targets) -> dict:  # noqa: ANN001
    """``[ledger]`` of the test's backend: a new PostgreSQL database, or the default SQLite file."""
    return {"url": str(targets())} if targets.is_pg else {}


def ensure_wallet(node, name: str) -> None:
    if name not in node.rpc("listwallets"):
        node.rpc("createwallet", name)


async def payable_by_address(app: PoolApp) -> dict[str, int]:
    rows = app.ledger.query("SELECT address, SUM(amount) FROM credits WHERE status='payable' GROUP BY address")
    return {a: int(v) for a, v in rows}


def audit_verify_cli(ledger_path: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pool", "audit", "verify", "--ledger", str(ledger_path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


async def test_pplns_payouts_reach_each_address_exactly(regtest, tmp_path: Path, ledger_target):
    ensure_wallet(regtest, "miners")
    addr = {k: await arpc(regtest, "getnewaddress", wallet="miners") for k in "ABC"}
    sink = await arpc(regtest, "getnewaddress", wallet="pool")
    app = PoolApp(pool_config(regtest, tmp_path / "pool", ledger=ledger_section(ledger_target),
                              **payout_overrides()))
    await app.start()
    miners = {}
    try:
        port = app.server.port
        # Two workers on address A, one each on B and C; C mines at twice the difficulty.
        specs = {
            "A1": (f"{addr['A']}.rigA1", f"d={SHARE_DIFF}"),
            "A2": (f"{addr['A']}.rigA2", f"d={SHARE_DIFF}"),
            "B": (f"{addr['B']}.rigB", f"d={SHARE_DIFF}"),
            "C": (f"{addr['C']}.rigC", f"d={2 * SHARE_DIFF}"),
        }
        for key, (user, password) in specs.items():
            miners[key] = await connect_miner(port, user, password)
        assert miners["A1"].difficulty == pytest.approx(SHARE_DIFF)
        assert miners["C"].difficulty == pytest.approx(2 * SHARE_DIFF)

        # A1 submits 3 shares for every one of B (same difficulty): A1 has 3× B's hashrate.
        pattern = ["A1", "A1", "A1", "B", "A2", "C"]
        finders = ["A1", "B", "C", "A2"]
        acked: Counter[str] = Counter()
        block_hashes = []
        for finder in finders:
            for _ in range(6):
                for key in pattern:
                    await mine_share(miners[key], regtest)
                    acked[key] += 1
            block_hashes.append(await mine_share(miners[finder], regtest, block=True))
            acked[finder] += 1
        assert app.coordinator.blocks_found == len(finders)

        # The ledger holds exactly the acknowledged shares, per worker.
        rows = app.ledger.query("SELECT worker, COUNT(*) FROM shares GROUP BY worker")
        assert {w: n for w, n in rows} == {f"rig{k}": n for k, n in acked.items()}
        ledger_blocks = dict(app.ledger.query("SELECT block_hash, status FROM blocks"))
        assert set(ledger_blocks) == set(block_hashes)
        assert set(ledger_blocks.values()) == {"pending"}

        # Independent recomputation of every block's split from the shares table.
        splits = recompute_pplns(app.ledger.target, FEE_BP, FACTOR)
        for h in block_hashes:
            fee, credits = splits[h]
            got = app.ledger.query("SELECT address, worker, amount, status FROM credits WHERE block_hash=?", (h,))
            assert {(a, w): v for a, w, v, _ in got} == credits
            assert {s for *_, s in got} == {"pending"}
            reward, ledger_fee = app.ledger.query("SELECT reward, fee FROM blocks WHERE block_hash=?", (h,))[0]
            assert ledger_fee == fee and sum(credits.values()) + fee == reward
            # The window spans about 93 shares of difficulty 1e-11: well past the previous block.
            assert len(credits) == 4
        a1 = sum(splits[h][1][(addr["A"], "rigA1")] for h in block_hashes)
        b = sum(splits[h][1][(addr["B"], "rigB")] for h in block_hashes)
        assert 2.4 < a1 / b < 3.6, (a1, b)

        # Mature the blocks: 101 blocks on top (maturity 100 + margin 1) to an unrelated address.
        assert await app.maturity.check_once() == []  # all still pending
        await arpc(regtest, "generatetoaddress", 101, sink)
        changes = await app.maturity.check_once()
        assert sorted(changes) == sorted((h, "confirmed") for h in block_hashes)
        payable = await payable_by_address(app)
        expected = credits_by_address(splits, set(block_hashes))
        assert payable == expected
        assert set(payable) == set(addr.values())

        # One payment round: one sendmany paying each address its balance.
        before = {k: btc_to_sats(await arpc(regtest, "getreceivedbyaddress", a, 0, wallet="miners"))
                  for k, a in addr.items()}
        assert before == {k: 0 for k in addr}
        txid = await app.payments.pay_once()
        assert txid
        rows = app.ledger.query("SELECT address, amount, status, txid FROM payments")
        assert {a: v for a, v, _, _ in rows} == expected
        assert {(s, t) for _, _, s, t in rows} == {("sent", txid)}
        await arpc(regtest, "generatetoaddress", 1, sink)
        received = {a: btc_to_sats(await arpc(regtest, "getreceivedbyaddress", a, 1, wallet="miners"))
                    for a in addr.values()}
        assert received == expected
        tx = await arpc(regtest, "gettransaction", txid, wallet="pool")
        assert tx["confirmations"] == 1 and tx.get("comment", "").startswith("pool-payout-")

        # Nothing left to pay: another round sends nothing.
        assert {a: v for a, v in app.ledger.run_sync(book.balances).items() if v} == {}
        assert await app.payments.pay_once() is None
        assert app.ledger.query("SELECT COUNT(DISTINCT batch) FROM payments") == [(1,)]

        res = audit_verify_cli(app.ledger.url or app.ledger.path)
        assert res.returncode == 0, res.stdout + res.stderr
        report = subprocess.run([sys.executable, "-m", "pool", "payouts", "--ledger", str(app.ledger.url or app.ledger.path), "--json"],
                                capture_output=True, text=True, timeout=60, cwd=ROOT)
        by_address = {r["address"]: r for r in json.loads(report.stdout)}
        for a, v in expected.items():
            assert (by_address[a]["credited_sats"], by_address[a]["paid_sats"], by_address[a]["balance_sats"]) == (v, v, 0)
        print(f"\npayouts: blocks={len(block_hashes)} shares={sum(acked.values())} "
              f"paid={ {k: received[a] for k, a in addr.items()} } txid={txid}")
    finally:
        for m in miners.values():
            await m.close()
        await app.stop()


async def test_orphaned_block_credits_void_then_back(regtest, tmp_path: Path, ledger_target):
    ensure_wallet(regtest, "miners")
    a = await arpc(regtest, "getnewaddress", wallet="miners")
    b = await arpc(regtest, "getnewaddress", wallet="miners")
    sink = await arpc(regtest, "getnewaddress", wallet="pool")
    app = PoolApp(pool_config(regtest, tmp_path / "pool", ledger=ledger_section(ledger_target),
                              **payout_overrides()))
    await app.start()
    miners = []
    try:
        ma = await connect_miner(app.server.port, f"{a}.w", f"d={SHARE_DIFF}")
        miners.append(ma)
        mb = await connect_miner(app.server.port, f"{b}.w", f"d={SHARE_DIFF}")
        miners.append(mb)
        for _ in range(5):
            await mine_share(ma, regtest)
            await mine_share(mb, regtest)
        h = await mine_share(ma, regtest, block=True)
        assert await app.maturity.check_once() == []

        def status() -> tuple[str, set[str]]:
            (s,), = app.ledger.query("SELECT status FROM blocks WHERE block_hash=?", (h,))
            return s, {r[0] for r in app.ledger.query("SELECT status FROM credits WHERE block_hash=?", (h,))}

        def balances() -> dict[str, int]:
            return {k: v for k, v in app.ledger.run_sync(book.balances).items() if v}

        assert status() == ("pending", {"pending"})
        credited = dict(app.ledger.query("SELECT address, amount FROM credits WHERE block_hash=?", (h,)))
        assert set(credited) == {a, b}

        # Reorg the block away: orphaned, credits void.
        await arpc(regtest, "invalidateblock", h)
        assert await app.maturity.check_once() == [(h, "orphaned")]
        assert status() == ("orphaned", {"void"})
        assert balances() == {}
        # Back in the main chain: pending again.
        await arpc(regtest, "reconsiderblock", h)
        assert await arpc(regtest, "getbestblockhash") == h
        assert await app.maturity.check_once() == [(h, "pending")]
        assert status() == ("pending", {"pending"})

        # Matured: payable; then orphaned after maturity (a deep reorg) and back again.
        await arpc(regtest, "generatetoaddress", 101, sink)
        assert await app.maturity.check_once() == [(h, "confirmed")]
        assert status() == ("confirmed", {"payable"})
        assert balances() == credited
        await arpc(regtest, "invalidateblock", h)
        assert await app.maturity.check_once() == [(h, "orphaned")]
        assert status() == ("orphaned", {"void"})
        assert balances() == {}
        await arpc(regtest, "reconsiderblock", h)
        assert await app.maturity.check_once() == [(h, "confirmed")]
        assert balances() == credited
        kinds = [(e.kind, json.loads(e.payload).get("to")) for e in app.ledger.audit_entries()]
        assert kinds == [("block_found", None), ("block_status", "orphaned"), ("block_status", "pending"),
                         ("block_status", "confirmed"), ("block_status", "orphaned"), ("block_status", "confirmed")]
        res = audit_verify_cli(app.ledger.url or app.ledger.path)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        for m in miners:
            await m.close()
        await app.stop()


async def test_block_reward_and_window_difficulty_match_the_chain(regtest, tmp_path: Path, ledger_target):
    """With fee-paying transactions in the mempool, the ledger records the coinbase's full value (subsidy +
    fees) as bitcoind has it, and the PPLNS window uses the network difficulty of the block's own bits: the
    credits recomputed from bitcoind's numbers equal the ledger's. (Recording the subsidy alone, or another
    difficulty, passed every test while the mempool was empty and the check trusted the ledger.)"""
    ensure_wallet(regtest, "miners")
    funding = await arpc(regtest, "getnewaddress", wallet="pool")
    await arpc(regtest, "generatetoaddress", 101, funding)  # spendable coins for the fee-paying transactions
    for _ in range(6):
        await arpc(regtest, "sendtoaddress", await arpc(regtest, "getnewaddress", wallet="miners"), 0.5,
                   wallet="pool")
    mempool = await arpc(regtest, "getrawmempool", True)
    assert len(mempool) >= 6
    a = await arpc(regtest, "getnewaddress", wallet="miners")
    b = await arpc(regtest, "getnewaddress", wallet="miners")
    share_diff = 1e-10  # window 2 × ~4.66e-10: about 9.3 of these shares, so its edge cuts a share
    overrides = payout_overrides()
    overrides["difficulty"] = {"start": share_diff, "min": 1e-12, "max": 1e6}
    app = PoolApp(pool_config(regtest, tmp_path / "pool", ledger=ledger_section(ledger_target), **overrides))
    await app.start()
    miners = []
    try:
        assert app.coordinator.prepared.template.total_fees > 0  # the work carries the mempool
        ma = await connect_miner(app.server.port, f"{a}.wa", f"d={share_diff}")
        miners.append(ma)
        mb = await connect_miner(app.server.port, f"{b}.wb", f"d={share_diff}")
        miners.append(mb)
        for i in range(14):
            await mine_share(ma if i % 3 else mb, regtest)
        h = await mine_share(ma, regtest, block=True)

        coinbase_value, fees, difficulty = await chain_reward_and_difficulty(regtest, h)
        assert fees > 0 and await arpc(regtest, "getrawmempool") == []
        reward, subsidy, ledger_difficulty = app.ledger.query(
            "SELECT reward, subsidy, network_difficulty FROM blocks WHERE block_hash=?", (h,))[0]
        assert reward == coinbase_value, (reward, coinbase_value, fees)
        assert subsidy == coinbase_value - fees
        assert ledger_difficulty == difficulty

        fee, credits = recompute_pplns(app.ledger.target, FEE_BP, FACTOR, chain={h: (coinbase_value, difficulty)})[h]
        got = app.ledger.query("SELECT address, worker, amount FROM credits WHERE block_hash=?", (h,))
        assert {(ad, w): v for ad, w, v in got} == credits
        assert app.ledger.query("SELECT fee FROM blocks WHERE block_hash=?", (h,)) == [(fee,)]
        # 15 shares of 1e-10 are more than the window: it is full, N = factor × bitcoind's difficulty exactly.
        found = json.loads(app.ledger.audit_entries()[-1].payload)
        assert found["window_difficulty"] == str(Fraction(FACTOR) * Fraction(difficulty))
        assert found["first_share_id"] > 1
        res = audit_verify_cli(app.ledger.url or app.ledger.path)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        for m in miners:
            await m.close()
        await app.stop()
