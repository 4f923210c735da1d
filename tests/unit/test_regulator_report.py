"""``pool report`` on a ledger built row by row: blocks, rewards, credits and payments (txids) per address and
operator, energy per site, the audit head the report was read against, the period's bounds and ``--site``."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest

from pool import reports
from pool.__main__ import main
from pool.ledger import book
from pool.ledger.book import Policy
from pool.ledger.sqlite import BlockRecord, Ledger, ShareRecord
from pool.mining.allowlist import parse_allowlist
from tests.unit.helpers import regtest_address

ACME, BRAVO, STRANGER = regtest_address(11), regtest_address(12), regtest_address(13)
DAY = 86400.0


def share(address: str, worker: str, difficulty: float, ts: float) -> ShareRecord:
    return ShareRecord(ts=ts, address=address, worker=worker, difficulty=difficulty, share_difficulty=difficulty,
                       job_id="1", height=1, block_hash="00" * 32, is_block=False, network_difficulty=10.0)


@pytest.fixture
def ledger_path(ledger_target) -> Path:  # noqa: ANN001 - a SQLite file or a PostgreSQL URL: both backends
    """Old work (10 days ago), then today: shares of three addresses, one block, its credits, one payment."""
    path = ledger_target()
    ledger = Ledger(path, Policy("pplns", 100, 2.0), rollup_interval=0)
    now = time.time()
    policy = ledger.policy
    try:
        def fill(conn):  # noqa: ANN001, ANN202
            book.insert_share(conn, policy, share(ACME, "rig1", 1000.0, now - 10 * DAY), 10.0, 0, 0)
            for address, worker, difficulty in ((ACME, "rig1", 4.0), (ACME, "rig2", 2.0), (BRAVO, "a", 3.0),
                                                (STRANGER, "x", 1.0)):
                book.insert_share(conn, policy, share(address, worker, difficulty, now - 60), 10.0, 0, 0)
            book.insert_block(conn, policy, BlockRecord("ab" * 32, 101, ACME, "rig1", 5_000_000_000, 5_000_000_000,
                                                        10.0, now - 30))
            book.set_block_status(conn, "ab" * 32, book.CONFIRMED, 101)
            book.create_payments(conn, "batch-1", 1_000_000)
            book.finish_payments(conn, "batch-1", "sent", "cd" * 32)

        ledger.run_sync(fill)
    finally:
        ledger.close()
    return path


ALLOWLIST = f"{ACME}, Acme Mining Ltd, north-dam\n{BRAVO}, Bravo Energy, south-farm\n"


def today() -> reports.Period:
    day = time.strftime("%Y-%m-%d", time.gmtime())
    return reports.parse_period(day, day)


def test_report_per_address_operator_and_site(ledger_path: Path) -> None:
    allowlist = parse_allowlist(ALLOWLIST, "regtest")
    report = reports.regulator_report(ledger_path, today(), allowlist, fleet_efficiency=30.0,
                                      site_efficiency={"north-dam": 20.0})
    rows = {r["address"]: r for r in report["addresses"]}
    acme, bravo, stranger = rows[ACME], rows[BRAVO], rows[STRANGER]
    assert (acme["operator"], acme["site"], bravo["operator"], stranger["operator"], stranger["site"]) == (
        "Acme Mining Ltd", "north-dam", "Bravo Energy", "", "unassigned")
    assert (acme["shares"], acme["accepted_difficulty"]) == (2, 6.0)  # the 10-day-old share is outside
    assert (acme["blocks_found"], acme["rewards_sats"]) == (1, 5_000_000_000)
    # The block's credits were created today (its PPLNS window reaches back into the old share, which does not
    # matter here): credits + fee = reward, all payable, all paid in the one batch.
    credited = sum(r["credited_sats"] for r in report["addresses"])
    assert credited + 50_000_000 == 5_000_000_000
    assert all(r["paid_sats"] == r["credited_sats"] for r in report["addresses"])
    assert acme["txids"] == "cd" * 32 and report["payments"][0]["txid"] == "cd" * 32
    assert [b["hash"] for b in report["blocks"]] == ["ab" * 32]
    assert report["blocks"][0]["operator"] == "Acme Mining Ltd" and report["blocks"][0]["fee_sats"] == 50_000_000
    operators = {o["operator"]: o for o in report["operators"]}
    assert operators["Acme Mining Ltd"]["addresses"] == 1 and operators["Acme Mining Ltd"]["credited_sats"] == (
        acme["credited_sats"])
    energy = {e["site"]: e for e in report["energy"]}
    assert set(energy) == {"north-dam", "south-farm", "unassigned"}
    assert energy["north-dam"]["efficiency_j_per_th"] == 20.0 and energy["south-farm"]["efficiency_j_per_th"] == 30.0
    # 6 difficulty x 2^32 hashes at 20 J per 10^12 hashes, in kWh
    assert energy["north-dam"]["energy_kwh"] == pytest.approx(6 * 2**32 / 1e12 * 20 / 3.6e6)
    assert energy["north-dam"]["hashes"] == 6 * 2**32


def test_report_names_the_audit_head_it_was_read_against(ledger_path: Path) -> None:
    report = reports.regulator_report(ledger_path, today())
    entries = reports.audit_entries(ledger_path)
    head = report["report"]
    assert (head["audit_head_seq"], head["audit_head_hash"]) == (entries[-1].seq, entries[-1].hash)
    ok, message = reports.audit_verify(ledger_path, head["audit_head_hash"])
    assert ok and f"is entry {entries[-1].seq}" in message
    ok, message = reports.audit_verify(ledger_path, "ee" * 32)
    assert not ok and "not in this ledger's chain" in message


def test_site_filter_and_unknown_site(ledger_path: Path) -> None:
    allowlist = parse_allowlist(ALLOWLIST, "regtest")
    report = reports.regulator_report(ledger_path, today(), allowlist, site="south-farm")
    assert [r["address"] for r in report["addresses"]] == [BRAVO]
    assert report["blocks"] == [] and [e["site"] for e in report["energy"]] == ["south-farm"]
    assert [p["address"] for p in report["payments"]] == [BRAVO]
    with pytest.raises(ValueError, match="unknown site 'nowhere'.*known: north-dam, south-farm"):
        reports.regulator_report(ledger_path, today(), allowlist, site="nowhere")
    with pytest.raises(ValueError, match="no allowlist file"):
        reports.regulator_report(ledger_path, today(), None, site="north-dam")


def test_period_bounds() -> None:
    whole = reports.parse_period("2026-11-01", "2026-11-30")
    assert whole.end - whole.start == 30 * DAY  # --to is inclusive for a date
    exact = reports.parse_period("2026-11-01T06:00:00Z", "2026-11-01T07:30:00+00:00")
    assert exact.end - exact.start == 5400
    with pytest.raises(ValueError, match="after"):
        reports.parse_period("2026-11-02", "2026-11-01")
    with pytest.raises(ValueError, match="not a date"):
        reports.parse_period("yesterday", "2026-11-01")


def test_old_period_has_only_old_work(ledger_path: Path) -> None:
    start = time.time() - 11 * DAY
    report = reports.regulator_report(ledger_path, reports.Period(start, start + 2 * DAY))
    assert [(r["address"], r["shares"], r["accepted_difficulty"]) for r in report["addresses"]] == [(ACME, 1, 1000.0)]
    assert report["blocks"] == [] and report["payments"] == []


def test_cli_csv_and_json(ledger_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(ALLOWLIST)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    args = ["report", "--ledger", str(ledger_path), "--from", day, "--to", day, "--allowlist", str(allowlist)]
    assert main([*args, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {r["operator"] for r in report["addresses"]} == {"Acme Mining Ltd", "Bravo Energy", ""}
    assert main([*args, "--format", "csv", "--efficiency", "25"]) == 0
    text = capsys.readouterr().out
    sections = {}
    for chunk in text.strip().split("\n\n"):
        name, _, body = chunk.partition("\n")
        sections[name.lstrip("# ")] = list(csv.DictReader(io.StringIO(body)))
    assert set(sections) == {"report", "blocks", "addresses", "operators", "payments", "energy"}
    meta = {r["key"]: r["value"] for r in sections["report"]}
    assert meta["audit_head_hash"] == report["report"]["audit_head_hash"]
    assert meta["fleet_efficiency_j_per_th"] == "25.0"
    assert sections["payments"][0]["txid"] == "cd" * 32
    assert main([*args, "--site", "nowhere"]) == 2
    assert "unknown site" in capsys.readouterr().err
    assert main(["report", "--ledger", str(ledger_path), "--from", "x", "--to", day]) == 2
    assert main(["audit", "verify", "--ledger", str(ledger_path), "--head", meta["audit_head_hash"]]) == 0


def test_cli_takes_operators_and_efficiency_from_the_config(ledger_path: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(ALLOWLIST)
    config = tmp_path / "pool.toml"
    config.write_text(
        f'[node]\nnetwork = "regtest"\nrpc_url = "http://127.0.0.1:18443"\n'
        f'[payout]\npool_address = "{regtest_address(20)}"\n'
        f'[ledger]\n{"url" if str(ledger_path).startswith("postgresql://") else "path"} = "{ledger_path}"\n'
        f'[authorization]\nallowlist_file = "{allowlist}"\n'  # mode open: the file only names operators
        '[report]\nefficiency_j_per_th = 17.5\n'
        '[[site]]\nname = "north-dam"\nworker_prefix = "n-"\npower_budget_kw = 100\nefficiency_j_per_th = 21.5\n'
    )
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert main(["report", "--config", str(config), "--from", day, "--to", day, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["report"]["fleet_efficiency_j_per_th"] == 17.5
    energy = {e["site"]: e for e in report["energy"]}
    assert energy["north-dam"]["efficiency_j_per_th"] == 21.5  # its [[site]] figure
    assert energy["south-farm"]["efficiency_j_per_th"] == 17.5  # not a configured site: the fleet's
    assert {r["address"]: r["operator"] for r in report["addresses"]}[BRAVO] == "Bravo Energy"
    assert report["report"]["allowlist_sha256"] == parse_allowlist(ALLOWLIST, "regtest").digest
