"""Sites, energy and curtailment on a real regtest pool with real miners over TCP on 127.0.0.0/8.

Sites are assigned by source network (``127.0.0.1/32``; a miner connecting from 127.0.0.2 is unassigned) and by
worker-name prefix; their figures show on ``/api/sites``, on ``/metrics`` and through ``pool sites``. A manual
curtailment over the admin API closes the site's miners with a message, refuses new logins with that message
and admits them again when it is ended; a scheduled one is driven by stepping the site controller's clock.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import running_pool
from tests.support import live
from tests.support.chain import arpc, mine_block_on, ready_miner, wait_until
from tests.support.live import HTTP_TIMEOUT, http
from tests.support.miner import TestMiner as Miner

pytestmark = pytest.mark.integration

TOKEN = "test-admin-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SITES = [
    {"name": "east", "worker_prefix": "east-", "power_budget_kw": 1.5, "efficiency_j_per_th": 30},
    {"name": "lab", "cidrs": ["127.0.0.1/32"], "power_budget_kw": 2, "efficiency_j_per_th": 20,
     "worker_efficiency": {"s21-*": 15}},
]
FAST = {"curtail_close_rate": 100, "resume_admit_rate": 100}



async def metric(app: Any, name: str, **labels: str) -> float | None:
    """From every Stratum process (the merged registry /metrics renders)."""
    return await live.metric(app, name, labels)


def sites_of(app: Any) -> dict[str, str]:
    """Worker name -> site of each live login, from the site book (reported by every Stratum process)."""
    return {worker.split(".", 1)[1]: site for site, workers in app.sites.book.logins() for worker in workers[:1]}


def audit(app: Any, kind: str) -> list[dict[str, Any]]:
    return [json.loads(e.payload) for e in app.ledger.audit_entries() if e.kind == kind]


async def miner(port: int, user: str, local_host: str = "127.0.0.1") -> Miner:
    m = Miner("127.0.0.1", port, user, "d=1e-8")
    m.local_host = local_host
    return await ready_miner(m)


async def one_share(m: Miner) -> None:
    """One accepted share; on regtest most shares solve a block, so a job can go stale under a miner: retry."""
    for _ in range(5):
        reply, _ = await m.mine_one()
        if reply["result"] is True:
            return
        assert reply["error"][0] == 21, reply  # stale: the new tip's job is on its way
        await asyncio.sleep(0.2)
    raise AssertionError(f"no accepted share in 5 tries: {m.rejected}")


def disconnected(m: Miner) -> bool:
    return m._reader_task is not None and m._reader_task.done()


def shown(m: Miner) -> list[str]:
    return [n["params"][0] for n in m.notifications if n.get("method") == "client.show_message"]


async def refused_login(port: int, user: str) -> tuple[dict[str, Any], Miner]:
    """Subscribe and authorize by hand; the authorize reply (expected: refused) and the miner, left to close."""
    m = Miner("127.0.0.1", port, user)
    await m.connect()
    await m.request("mining.subscribe", ["testminer/1.0"])
    reply = await m.request("mining.authorize", [user, "x"])
    await wait_until(lambda: disconnected(m), 5, what="the refused miner's connection to close")
    return reply, m


async def cli(*args: str) -> str:
    """``pool ARGS`` in a process of its own (as an operator runs it); its standard output."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "pool", *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_sites_assignment_metrics_api_and_cli(regtest, tmp_path: Path):
    async with running_pool(regtest, tmp_path / "pool", site=SITES, programme={"silent_after_minutes": 1}) as app:
        port = app.server.port
        address = await arpc(regtest, "getnewaddress", wallet="pool")
        east = await miner(port, f"{address}.east-1")  # 127.0.0.1 too: east comes first in config order
        lab = await miner(port, f"{address}.s21-a")
        idle = await miner(port, f"{address}.idle")  # lab, never submits
        other = await miner(port, f"{address}.rig", local_host="127.0.0.2")
        miners = [east, lab, idle, other]
        try:
            expected = {"east-1": "east", "s21-a": "lab", "idle": "lab", "rig": "unassigned"}
            await wait_until(lambda: sites_of(app) == expected, 5, what=f"sites {expected}, not {sites_of(app)}")
            # On regtest most shares also solve a block, so a miner's job can go stale under it: mine on.
            for m, shares in ((east, 3), (lab, 5), (other, 2)):
                for _ in range(3 * shares):
                    if m.accepted == shares:
                        break
                    reply, _ = await m.mine_one()
                    assert reply["result"] is True or reply["error"][0] == 21, reply
                    if reply["result"] is not True:
                        await asyncio.sleep(0.2)  # the new tip's job is on its way
                assert m.accepted == shares
            for _ in range(5):  # a block of lab's own for certain
                tip = await arpc(regtest, "getbestblockhash")
                reply, _, _ = await mine_block_on(lab, tip)
                if reply["result"] is True:
                    break
            assert reply["result"] is True, reply  # answered once the block's ledger row is written

            status, body = await http("GET", app.http.port, "/api/sites")
            assert status == 200
            sites = {s["name"]: s for s in body["sites"]}
            assert list(sites) == ["east", "lab", "unassigned"]
            assert (sites["east"]["miners"], sites["lab"]["miners"], sites["unassigned"]["miners"]) == (1, 2, 1)
            assert (sites["east"]["accepted"], sites["lab"]["accepted"], sites["unassigned"]["accepted"]) == (3, 6, 2)
            assert [sites[n]["rejected"] for n in ("east", "lab", "unassigned")] == [
                len(east.rejected), len(lab.rejected), len(other.rejected)]
            # On regtest most shares also solve a block: each site counts its own, as the ledger does.
            found = dict(await asyncio.to_thread(app.ledger.query, "SELECT worker, COUNT(*) FROM blocks GROUP BY worker"))
            assert sites["lab"]["blocks"] == found.get("s21-a", 0) >= 1
            assert sites["east"]["blocks"] == found.get("east-1", 0)
            assert sites["unassigned"]["blocks"] == found.get("rig", 0)
            for name in ("east", "lab", "unassigned"):
                assert sites[name]["hashrate"] > 0, name
            # lab's shares all came from an s21-* worker: 15 J/TH, not the fleet's 20.
            assert sites["lab"]["power_watts"] == pytest.approx(sites["lab"]["hashrate"] / 1e12 * 15)
            assert sites["east"]["power_watts"] == pytest.approx(sites["east"]["hashrate"] / 1e12 * 30)
            assert sites["lab"]["power_budget_watts"] == 2000
            assert sites["lab"]["budget_share"] == pytest.approx(sites["lab"]["power_watts"] / 2000)
            assert sites["unassigned"]["power_watts"] == 0
            assert sites["lab"]["curtailment"]["state"] == "normal"
            assert sites["lab"]["silent_workers"] == 0

            # Silent workers: step the controller's clock past programme.silent_after_minutes.
            real = app.sites.clock
            app.sites.clock = lambda: real() + 61
            status, detail = await http("GET", app.http.port, "/api/sites/lab")
            assert status == 200
            assert {w["worker"] for w in detail["silent"]} == {f"{address}.idle", f"{address}.s21-a"}
            assert detail["silent_workers"] == 2
            assert (await http("GET", app.http.port, "/api/sites/nowhere"))[0] == 404

            assert await metric(app, "pool_site_connected_miners", site="lab") == 2
            assert await metric(app, "pool_site_shares_total", site="east", result="accepted") == 3
            assert await metric(app, "pool_site_blocks_total", site="lab") == sites["lab"]["blocks"]
            assert await metric(app, "pool_site_silent_workers", site="lab") == 2
            assert await metric(app, "pool_site_power_budget_watts", site="east") == 1500
            assert await metric(app, "pool_site_hashrate_hashes_per_second", site="unassigned") > 0
            async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session:
                async with session.get(f"http://127.0.0.1:{app.http.port}/metrics") as resp:
                    text = await resp.text()
            labels = {line.split('site="')[1].split('"')[0] for line in text.splitlines()
                      if line.startswith("pool_site_") and 'site="' in line}
            assert labels == {"east", "lab", "unassigned"}  # bounded: configured sites + unassigned
            app.sites.clock = real

            url = f"http://127.0.0.1:{app.http.port}"
            out = await cli("sites", "--url", url, "--json")
            assert [s["name"] for s in json.loads(out)["sites"]] == ["east", "lab", "unassigned"]
            table = (await cli("sites", "--url", url)).splitlines()
            assert table[0].split()[:3] == ["site", "miners", "hashrate"]
            assert [line.split()[0] for line in table[2:]] == ["east", "lab", "unassigned"]
        finally:
            for m in miners:
                await m.close()


async def test_manual_curtailment_closes_refuses_and_admits_again(regtest, tmp_path: Path):
    async with running_pool(regtest, tmp_path / "pool", site=SITES, programme=FAST, admin={"token": TOKEN}) as app:
        port, http_port = app.server.port, app.http.port
        address = await arpc(regtest, "getnewaddress", wallet="pool")
        lab = [await miner(port, f"{address}.rig{i}") for i in range(3)]
        east = await miner(port, f"{address}.east-1")
        try:
            for m in lab:
                await one_share(m)
            until = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
            path = f"/admin/sites/lab/curtail?until={until.isoformat().replace('+00:00', 'Z')}"
            assert (await http("POST", http_port, path))[0] == 401  # the token is needed
            status, body = await http("POST", http_port, "/admin/sites/lab/curtail?until=2020-01-01T00:00:00Z",
                                      BEARER)
            assert status == 400 and "past" in body["error"]
            status, body = await http("POST", http_port, "/admin/sites/lab/curtail?until=tomorrow", BEARER)
            assert status == 400
            status, body = await http("POST", http_port, "/admin/sites/nowhere/curtail?until=" + until.isoformat(),
                                      BEARER)
            assert status == 400

            status, body = await http("POST", http_port, path, BEARER)
            assert status == 200, body
            assert body["curtailment"]["state"] == "curtailed" and body["curtailment"]["reason"] == "manual"
            await wait_until(lambda: all(disconnected(m) for m in lab), 10, what="the lab miners to be closed")
            for m in lab:
                assert any("Site lab is curtailed until" in text for text in shown(m)), m.notifications[-3:]
            assert not disconnected(east)
            await one_share(east)  # other sites keep mining

            reply, refused = await refused_login(port, f"{address}.rig9")
            assert reply["error"][0] == 24 and "Site lab is curtailed until" in reply["error"][1]
            assert any("curtailed" in text for text in shown(refused))
            assert not [n for n in refused.notifications if n.get("method") == "mining.notify"]
            await refused.close()

            status, body = await http("GET", http_port, "/api/sites")
            lab_view = next(s for s in body["sites"] if s["name"] == "lab")
            assert lab_view["miners"] == 0
            assert lab_view["curtailment"]["state"] == "curtailed"
            assert lab_view["curtailment"]["miners_shed"] == 3 and lab_view["curtailment"]["hashrate_shed"] > 0
            assert await metric(app, "pool_site_curtailed", site="lab") == 1
            assert await metric(app, "pool_site_curtailments_total", site="lab", reason="manual") == 1
            assert await metric(app, "pool_site_curtailment_closed_connections_total", site="lab") == 3
            assert await metric(app, "pool_site_refused_logins_total", site="lab", reason="curtailed") == 1
            assert await metric(app, "pool_disconnects_total", reason="curtailed") == 4

            status, body = await http("POST", http_port, "/admin/sites/lab/resume", BEARER)
            assert status == 200 and body["was_curtailed"] is True
            assert body["curtailment"]["state"] == "ramping"
            back = await miner(port, f"{address}.rig0")
            await one_share(back)
            await back.close()
            assert await metric(app, "pool_site_curtailed", site="lab") == 0

            records = audit(app, "site_curtailment")
            assert [(r["change"], r["reason"]) for r in records] == [("start", "manual"), ("end", "manual")]
            assert records[0]["miners"] == 3 and records[0]["hashrate_shed"] > 0
            assert records[0]["power_shed_watts"] == pytest.approx(records[0]["hashrate_shed"] / 1e12 * 20)
            assert records[1]["early"] is True and records[1]["hashrate_shed"] == records[0]["hashrate_shed"]
            assert await metric(app, "pool_site_curtailment_ends_total", site="lab", reason="manual") == 1
            actions = [(a["action"], a["outcome"]) for a in audit(app, "admin_action")]
            assert ("site-curtail", "ok") in actions and ("site-resume", "ok") in actions
        finally:
            for m in [*lab, east]:
                await m.close()


async def test_scheduled_curtailment_with_a_stepped_clock(regtest, tmp_path: Path):
    # A window two hours ahead of the real time; the controller's clock is stepped into and out of it.
    start = (datetime.now(UTC) + timedelta(hours=2)).replace(second=0, microsecond=0)
    end = start + timedelta(minutes=30)
    window = {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M"), "timezone": "UTC"}
    sites = [SITES[0], {**SITES[1], "curtailment": [window]}]
    async with running_pool(regtest, tmp_path / "pool", site=sites, programme=FAST) as app:
        port = app.server.port
        offset = [0.0]
        app.sites.clock = lambda: time.time() + offset[0]
        address = await arpc(regtest, "getnewaddress", wallet="pool")
        lab = await miner(port, f"{address}.rig1")
        try:
            await one_share(lab)
            _, body = await http("GET", app.http.port, "/api/sites")
            view = next(s for s in body["sites"] if s["name"] == "lab")["curtailment"]
            assert view["state"] == "normal"
            assert view["next_window"]["start"] == start.isoformat().replace("+00:00", "Z")

            offset[0] = start.timestamp() - time.time() + 1  # one second into the window
            await wait_until(lambda: disconnected(lab), 10, what="the scheduled curtailment to close the miner")
            assert any("Site lab is curtailed until" in text for text in shown(lab))
            reply, refused = await refused_login(port, f"{address}.rig2")
            assert reply["error"][0] == 24
            await refused.close()
            _, body = await http("GET", app.http.port, "/api/sites")
            view = next(s for s in body["sites"] if s["name"] == "lab")["curtailment"]
            assert (view["state"], view["reason"]) == ("curtailed", "schedule")
            assert view["until"] == end.isoformat().replace("+00:00", "Z")
            assert view["next_window"]["start"] == (start + timedelta(days=1)).isoformat().replace("+00:00", "Z")

            offset[0] = end.timestamp() - time.time() + 1  # past the window's end
            await wait_until(lambda: live.metric_now(app, "pool_site_curtailed", {"site": "lab"}) == 0, 10,
                             what="the scheduled curtailment to end")
            back = await miner(port, f"{address}.rig1")
            await one_share(back)
            await back.close()
            records = audit(app, "site_curtailment")
            assert [(r["change"], r["reason"]) for r in records] == [("start", "schedule"), ("end", "schedule")]
            assert records[0]["until"] == end.isoformat().replace("+00:00", "Z") and records[1]["early"] is False
            assert await metric(app, "pool_site_curtailments_total", site="lab", reason="schedule") == 1
        finally:
            await lab.close()


async def test_a_manual_curtailment_outlives_a_restart(regtest, tmp_path: Path):
    data_dir = tmp_path / "pool"
    until = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    async with running_pool(regtest, data_dir, site=SITES, programme=FAST, admin={"token": TOKEN}) as app:
        status, _ = await http("POST", app.http.port, f"/admin/sites/lab/curtail?until={until}", BEARER)
        assert status == 200
    async with running_pool(regtest, data_dir, site=SITES, programme=FAST, admin={"token": TOKEN}) as app:
        await wait_until(lambda: live.metric_now(app, "pool_site_curtailed", {"site": "lab"}) == 1, 10,
                         what="the restored curtailment")
        address = await arpc(regtest, "getnewaddress", wallet="pool")
        reply, refused = await refused_login(app.server.port, f"{address}.rig1")
        assert reply["error"][0] == 24 and "curtailed" in reply["error"][1]
        await refused.close()
        records = audit(app, "site_curtailment")
        assert [(r["change"], r.get("restored", False)) for r in records] == [("start", False), ("start", True)]
        assert records[1]["until"] == until


async def test_after_a_curtailment_logins_come_back_as_a_ramp(regtest, tmp_path: Path):
    programme = {"curtail_close_rate": 100, "resume_admit_rate": 1}
    async with running_pool(regtest, tmp_path / "pool", site=SITES, programme=programme,
                            admin={"token": TOKEN}) as app:
        if live.several_processes(app):
            pytest.skip("each Stratum process admits its share of the rate; which process a login lands on is the"
                        " kernel's choice: test_multiprocess_programme.py covers the ramp with several processes")
        port, http_port = app.server.port, app.http.port
        address = await arpc(regtest, "getnewaddress", wallet="pool")
        lab = [await miner(port, f"{address}.rig{i}") for i in range(3)]
        try:
            until = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0).isoformat()
            assert (await http("POST", http_port, f"/admin/sites/lab/curtail?until={until.replace('+00:00', 'Z')}",
                               BEARER))[0] == 200
            await wait_until(lambda: all(disconnected(m) for m in lab), 10, what="the lab miners to be closed")
            assert (await http("POST", http_port, "/admin/sites/lab/resume", BEARER))[0] == 200
            # One login per second: the first is in, the next one in the same second is told to retry.
            first = await miner(port, f"{address}.rig0")
            reply, refused = await refused_login(port, f"{address}.rig1")
            assert reply["error"][0] == 24 and "resuming after a curtailment" in reply["error"][1]
            assert any("admits 1 miners per second" in text for text in shown(refused))
            await refused.close()
            assert await metric(app, "pool_site_ramping", site="lab") == 1
            assert await metric(app, "pool_site_refused_logins_total", site="lab", reason="ramp") == 1
            await asyncio.sleep(1.1)
            second = await miner(port, f"{address}.rig1")
            for m in (first, second):
                await one_share(m)
            await first.close()
            await second.close()
        finally:
            for m in lab:
                await m.close()


async def test_the_allowlists_site_column_places_miners_no_rule_matches(regtest, tmp_path: Path):
    listed = await arpc(regtest, "getnewaddress", wallet="pool")
    other = await arpc(regtest, "getnewaddress", wallet="pool")
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(f"{listed}, Acme Mining, east\n")
    auth = {"mode": "open", "allowlist_file": str(allowlist)}  # open: the file only names operators and sites
    async with running_pool(regtest, tmp_path / "pool", site=SITES, authorization=auth) as app:
        port = app.server.port
        miners = [await miner(port, f"{listed}.rig", local_host="127.0.0.2"),
                  await miner(port, f"{other}.rig", local_host="127.0.0.2"),
                  await miner(port, f"{listed}.rig2")]  # 127.0.0.1: lab's rule comes first
        try:
            expected = sorted([(listed, "east"), (other, "unassigned"), (listed, "lab")])

            def placed() -> list[tuple[str, str]]:
                return sorted((workers[0].split(".", 1)[0], site) for site, workers in app.sites.book.logins())

            await wait_until(lambda: placed() == expected, 5, what=f"placement {expected}")
        finally:
            for m in miners:
                await m.close()
