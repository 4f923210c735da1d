"""``pool report`` on the ledger of a pool that mined on regtest: two licensed operators at two sites find
blocks, the blocks mature, one ``sendmany`` pays them; the report (the real CLI, in a subprocess) shows the
blocks, each address's credits and payment with its txid, each operator, energy per site, and the audit head,
which ``pool audit verify --head`` then finds in the chain."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import running_pool
from tests.support.chain import arpc, connect_miner
from tests.support.payout_check import mine_share

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHARE_DIFF = 1e-11  # below regtest's network difficulty (~4.66e-10): most shares are not blocks


def iso(moment: datetime.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pool", *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


async def test_report_of_a_pool_that_mined_and_paid(regtest, tmp_path: Path):
    if "miners" not in await arpc(regtest, "listwallets"):
        await arpc(regtest, "createwallet", "miners")
    acme = await arpc(regtest, "getnewaddress", wallet="miners")
    bravo = await arpc(regtest, "getnewaddress", wallet="miners")
    sink = await arpc(regtest, "getnewaddress", wallet="pool")
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(f"# operators\n{acme}, Acme Mining Ltd, north-dam\n{bravo}, Bravo Energy, south-farm\n")
    started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    overrides: dict[str, Any] = {
        "authorization": {"mode": "allowlist", "allowlist_file": str(allowlist)},
        "difficulty": {"start": SHARE_DIFF, "min": 1e-12, "max": 1e6},
        "stratum": {"submit_rate": 1e5, "submit_burst": 1e6},
        "payout": {"scheme": "pplns", "maturity_check_interval": 3600, "payments_enabled": True,
                   "payment_threshold_sats": 10_000, "payment_interval": 86400, "payment_grace": 3600,
                   "wallet": "pool"},
    }
    async with running_pool(regtest, tmp_path / "pool", **overrides) as app:
        a = await connect_miner(app.server.port, f"{acme}.rig1", f"d={SHARE_DIFF}")
        b = await connect_miner(app.server.port, f"{bravo}.rig1", f"d={2 * SHARE_DIFF}")
        try:
            blocks = []
            for finder in (a, b):
                for _ in range(5):
                    await mine_share(a, regtest)
                    await mine_share(b, regtest)
                blocks.append(await mine_share(finder, regtest, block=True))
        finally:
            await a.close()
            await b.close()
        await arpc(regtest, "generatetoaddress", 101, sink)
        assert sorted(s for _, s in await app.maturity.check_once()) == ["confirmed", "confirmed"]
        txid = await app.payments.pay_once()
        assert txid
        ledger = app.ledger.path
        credited = {addr: int(v) for addr, v in app.ledger.query(
            "SELECT address, SUM(amount) FROM credits WHERE status = 'payable' GROUP BY address")}
        work = {addr: float(d) for addr, d in app.ledger.query(
            "SELECT address, SUM(difficulty) FROM shares GROUP BY address")}
    ended = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1)

    period = ["--from", iso(started), "--to", iso(ended)]
    res = cli("report", "--ledger", str(ledger), "--allowlist", str(allowlist), "--efficiency", "25", *period,
              "--format", "json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert [blk["hash"] for blk in report["blocks"]] == blocks
    assert [blk["operator"] for blk in report["blocks"]] == ["Acme Mining Ltd", "Bravo Energy"]
    rows = {r["address"]: r for r in report["addresses"]}
    assert set(rows) == {acme, bravo}
    for address, operator, site in ((acme, "Acme Mining Ltd", "north-dam"), (bravo, "Bravo Energy", "south-farm")):
        row = rows[address]
        assert (row["operator"], row["site"], row["blocks_found"]) == (operator, site, 1)
        assert row["credited_sats"] == row["paid_sats"] == credited[address] > 0
        assert row["txids"] == txid
        assert row["accepted_difficulty"] == pytest.approx(work[address])
    assert {p["txid"] for p in report["payments"]} == {txid}
    assert sum(blk["reward_sats"] - blk["fee_sats"] for blk in report["blocks"]) == sum(credited.values())
    operators = {o["operator"]: o for o in report["operators"]}
    assert operators["Bravo Energy"]["paid_sats"] == credited[bravo]
    energy = {e["site"]: e for e in report["energy"]}
    assert energy["north-dam"]["energy_kwh"] == pytest.approx(work[acme] * 2**32 / 1e12 * 25 / 3.6e6)
    assert energy["south-farm"]["accepted_difficulty"] == pytest.approx(work[bravo])

    head = report["report"]["audit_head_hash"]
    verified = cli("audit", "verify", "--ledger", str(ledger), "--head", head)
    assert verified.returncode == 0 and "chain intact" in verified.stdout, verified.stdout + verified.stderr
    kinds = json.loads(cli("audit", "export", "--ledger", str(ledger), "--format", "json").stdout)
    assert kinds[-1]["hash"] == head
    assert "allowlist_loaded" in {k["kind"] for k in kinds}

    res = cli("report", "--ledger", str(ledger), "--allowlist", str(allowlist), *period, "--site", "south-farm")
    assert res.returncode == 0, res.stderr
    assert bravo in res.stdout and acme not in res.stdout  # CSV by default; only the site's addresses
