"""The allowlist and sites/curtailment with ``stratum.processes = 2``: the coordinator reads, decides and audits
once; every front-end process enforces, refuses, pauses and closes its own miners. Real regtest bitcoind, real
TCP on 127.0.0.1; miners are connected until both processes hold some (told apart by extranonce1's process
bit, as in test_multiprocess.py).
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import running_pool
from tests.integration.test_multiprocess import EASY, TWO, mine_share, miners_on_both, process_of
from tests.support import live
from tests.support.chain import arpc, wait_until
from tests.support.live import http
from tests.support.miner import TestMiner as Miner

pytestmark = pytest.mark.integration

TOKEN = "mp-programme-admin-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ERR_UNAUTHORIZED = 24
LAB = [{"name": "lab", "cidrs": ["127.0.0.1/32"], "power_budget_kw": 2, "efficiency_j_per_th": 20}]



def audit(app: Any, kind: str) -> list[dict[str, Any]]:
    return [json.loads(e.payload) for e in app.ledger.audit_entries() if e.kind == kind]


def closed(m: Miner) -> bool:
    return m._reader_task is not None and m._reader_task.done()


def shown(m: Miner) -> list[str]:
    return [n["params"][0] for n in m.notifications if n.get("method") == "client.show_message"]


def watch_closes(miners: list[Miner]) -> dict[int, float]:
    """When each miner's connection was closed by the pool (monotonic), filled in as it happens."""
    at: dict[int, float] = {}
    for i, m in enumerate(miners):
        assert m._reader_task is not None
        m._reader_task.add_done_callback(lambda _, i=i: at.setdefault(i, time.monotonic()))
    return at


async def subscribed_on_both(port: int, user: str, per_process: int = 1, limit: int = 40) -> list[list[Miner]]:
    """Connections subscribed (not authorized) until each process holds ``per_process``: [[on 0], [on 1]]."""
    held: list[list[Miner]] = [[], []]
    for _ in range(limit):
        m = Miner("127.0.0.1", port, user)
        await m.connect()
        reply = await m.request("mining.subscribe", ["testminer/1.0"])
        m.extranonce1 = bytes.fromhex(reply["result"][1])
        side = held[process_of(m.extranonce1)]
        if len(side) < per_process:
            side.append(m)
        else:
            await m.close()
        if min(len(h) for h in held) >= per_process:
            return held
    for m in held[0] + held[1]:
        await m.close()
    raise AssertionError(f"connections landed on one process only: {[len(h) for h in held]}")


async def authorize(m: Miner, user: str) -> dict[str, Any]:
    return await m.request("mining.authorize", [user, "x"])


async def accepted_share(m: Miner) -> None:
    reply, _ = await mine_share(m)
    assert reply["result"] is True, reply


async def test_allowlist_enforced_reloaded_and_drained_in_every_process(regtest, tmp_path: Path):
    kept, removed, added, stranger = [await arpc(regtest, "getnewaddress", wallet="pool") for _ in range(4)]
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(f"{kept}, Keeper Ltd\n{removed}, Leaver Ltd\n")
    auth = {"mode": "allowlist", "allowlist_file": str(allowlist), "drain_rate": 2}
    async with running_pool(regtest, tmp_path / "pool", stratum=TWO, difficulty=EASY, authorization=auth,
                            admin={"token": TOKEN}) as app:
        port, http_port = app.server.port, app.http.port
        stays = await miners_on_both(port, f"{kept}.k")
        leaving = await miners_on_both(port, f"{removed}.r", per_process=2)
        opened: list[Miner] = [*stays, *leaving]
        try:
            # Refused at authorize in each process, with error 24, counted once per refusal.
            strangers = await subscribed_on_both(port, f"{stranger}.s")
            opened += strangers[0] + strangers[1]
            for m in strangers[0] + strangers[1]:
                reply = await authorize(m, f"{stranger}.s")
                assert reply["error"][0] == ERR_UNAUTHORIZED and "not licensed" in reply["error"][1], reply
            assert await live.metric(app, "pool_authorize_refusals_total", {"reason": "not-allowlisted"}) == 2
            for m in [*stays, *leaving]:
                await accepted_share(m)

            # A bad file is refused and the list in force stays in every process.
            allowlist.write_text(f"{kept}\nnot-an-address\n")
            status, body = await http("POST", http_port, "/admin/allowlist/reload", BEARER)
            assert status == 422 and "line 2" in body["error"], body
            for m in leaving:
                await accepted_share(m)

            # A good file: the removed address's sessions in both processes are closed, paced (2/s for the pool).
            allowlist.write_text(f"{kept}, Keeper Ltd\n{added}, Newcomer Co\n")
            closes = watch_closes(leaving)
            status, body = await http("POST", http_port, "/admin/allowlist/reload", BEARER)
            assert status == 200, body
            assert (body["added"], body["removed"], body["draining"]) == (1, 1, 4), body
            await wait_until(lambda: len(closes) == 4, 20, what="the removed address's sessions to close")
            assert max(closes.values()) - min(closes.values()) >= 0.5, closes  # 2 at once, then 1 per process/s
            for m in leaving:
                assert any("no longer licensed" in text for text in shown(m)), m.notifications[-3:]
            for m in stays:  # the kept address mines on in both processes
                await accepted_share(m)
            newcomers = await miners_on_both(port, f"{added}.n")
            opened += newcomers
            for m in newcomers:
                await accepted_share(m)
            assert await live.metric(app, "pool_allowlist_drained_sessions_total") == 4

            # SIGHUP's reload (the coordinator's handler) reaches every process too.
            allowlist.write_text(f"{kept}, Keeper Ltd\n")
            app.sighup()
            await wait_until(lambda: all(closed(m) for m in newcomers), 20, what="the newcomers drained")

            # A front-end started again after a crash gets the list in force, not the one read at start.
            os.kill(app.server.slots[0].pid, signal.SIGKILL)
            await wait_until(lambda: live.metric_now(app, "pool_frontend_restarts_total", {"process": "0"}) == 1
                             and app.server.slots[0].link is not None, 30, what="front-end 0 started again")
            late = await subscribed_on_both(port, f"{removed}.late")
            opened += late[0] + late[1]
            for m in late[0] + late[1]:
                reply = await authorize(m, f"{removed}.late")
                assert reply["error"][0] == ERR_UNAUTHORIZED, (process_of(m.extranonce1), reply)
        finally:
            for m in opened:
                await m.close()
        # Written once, by the coordinator: load, each reload, one refusal, and one end per drain.
        assert len(audit(app, "allowlist_loaded")) == 1
        assert [e["source"] for e in audit(app, "allowlist_reloaded")] == ["admin", "sighup"]
        assert len(audit(app, "allowlist_reload_refused")) == 1
        assert [e["sessions"] for e in audit(app, "allowlist_drain")] == [4, 2]
        await wait_until(lambda: len(audit(app, "allowlist_drain_done")) == 2, 10, what="two drain-done entries")
        assert audit(app, "allowlist_drain_done") == [{"closed": 4}, {"closed": 2}]


async def test_sites_figures_and_a_manual_curtailment_across_processes(regtest, tmp_path: Path):
    programme = {"curtail_close_rate": 2, "resume_admit_rate": 2}
    async with running_pool(regtest, tmp_path / "pool", stratum=TWO, difficulty=EASY, site=LAB, programme=programme,
                            admin={"token": TOKEN}) as app:
        port, http_port = app.server.port, app.http.port
        address = await arpc(regtest, "getnewaddress", wallet="pool")
        lab = await miners_on_both(port, f"{address}.rig", per_process=2)
        opened: list[Miner] = list(lab)
        try:
            for m in lab:
                await accepted_share(m)
            # One site book on the coordinator: the figures of both processes, on the API, /metrics and the CLI.
            await wait_until(lambda: app.sites.book.sites["lab"].accepted == 4, 5, what="4 accepted in the book")
            status, body = await http("GET", http_port, "/api/sites")
            view = next(s for s in body["sites"] if s["name"] == "lab")
            assert (view["miners"], view["workers"], view["accepted"]) == (4, 1, 4), view
            assert view["hashrate"] > 0 and view["power_watts"] == pytest.approx(view["hashrate"] / 1e12 * 20)
            _, text = await http("GET", http_port, "/metrics")
            assert 'pool_site_connected_miners{site="lab"} 4.0' in text
            assert 'pool_site_shares_total{result="accepted",site="lab"} 4.0' in text

            # Curtailed once, by the coordinator; every process stops its miners' work and closes them, paced
            # for the pool as a whole (2 per second).
            until = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
            closes = watch_closes(lab)
            path = f"/admin/sites/lab/curtail?until={until.isoformat().replace('+00:00', 'Z')}"
            status, body = await http("POST", http_port, path, BEARER)
            assert status == 200, body
            await wait_until(lambda: len(closes) == 4, 20, what="the lab miners to be closed")
            assert max(closes.values()) - min(closes.values()) >= 0.7, closes
            for m in lab:
                assert any("Site lab is curtailed until" in text for text in shown(m)), m.notifications[-3:]

            # Logins refused in each process, told why.
            refused = await subscribed_on_both(port, f"{address}.again")
            opened += refused[0] + refused[1]
            for m in refused[0] + refused[1]:
                reply = await authorize(m, f"{address}.again")
                assert reply["error"][0] == ERR_UNAUTHORIZED and "curtailed" in reply["error"][1], reply
                assert any("Site lab is curtailed until" in text for text in shown(m))
            await wait_until(lambda: live.metric_now(app, "pool_site_refused_logins_total",
                                                     {"site": "lab", "reason": "curtailed"}) == 2, 5,
                             what="two refusals counted by the coordinator")
            assert await live.metric(app, "pool_site_curtailment_closed_connections_total", {"site": "lab"}) == 4
            assert await live.metric(app, "pool_disconnects_total", {"reason": "curtailed"}) == 6
            _, body = await http("GET", http_port, "/api/sites")
            view = next(s for s in body["sites"] if s["name"] == "lab")
            assert view["miners"] == 0 and view["curtailment"]["state"] == "curtailed"
            assert view["curtailment"]["miners_shed"] == 4

            # Resumed: a ramp of 2 logins per second for the pool, split evenly: each process admits one now
            # and refuses the next.
            status, body = await http("POST", http_port, "/admin/sites/lab/resume", BEARER)
            assert status == 200 and body["curtailment"]["state"] == "ramping", body
            waiting = await subscribed_on_both(port, f"{address}.back", per_process=2)
            opened += waiting[0] + waiting[1]
            for side in waiting:
                first = await authorize(side[0], f"{address}.back")
                assert first["result"] is True, first
                second = await authorize(side[1], f"{address}.back")
                assert second["error"][0] == ERR_UNAUTHORIZED and "resuming" in second["error"][1], second
            await wait_until(lambda: live.metric_now(app, "pool_site_refused_logins_total",
                                                     {"site": "lab", "reason": "ramp"}) == 2, 5,
                             what="two ramp refusals counted")
        finally:
            for m in opened:
                await m.close()
        records = audit(app, "site_curtailment")
        assert [(r["change"], r["reason"]) for r in records] == [("start", "manual"), ("end", "manual")]
        assert records[0]["miners"] == 4 and records[0]["hashrate_shed"] > 0


async def test_a_scheduled_curtailment_applies_in_every_process(regtest, tmp_path: Path):
    start = (datetime.now(UTC) + timedelta(hours=2)).replace(second=0, microsecond=0)
    end = start + timedelta(minutes=30)
    window = {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M"), "timezone": "UTC"}
    sites = [{**LAB[0], "curtailment": [window]}]
    programme = {"curtail_close_rate": 100, "resume_admit_rate": 100}
    async with running_pool(regtest, tmp_path / "pool", stratum=TWO, difficulty=EASY, site=sites,
                            programme=programme) as app:
        port = app.server.port
        offset = [0.0]
        app.sites.clock = lambda: time.time() + offset[0]  # the coordinator's clock decides for every process
        address = await arpc(regtest, "getnewaddress", wallet="pool")
        lab = await miners_on_both(port, f"{address}.rig")
        opened: list[Miner] = list(lab)
        try:
            offset[0] = start.timestamp() - time.time() + 1
            await wait_until(lambda: all(closed(m) for m in lab), 10, what="the scheduled curtailment's closes")
            refused = await subscribed_on_both(port, f"{address}.rig")
            opened += refused[0] + refused[1]
            for m in refused[0] + refused[1]:
                reply = await authorize(m, f"{address}.rig")
                assert reply["error"][0] == ERR_UNAUTHORIZED and "curtailed" in reply["error"][1], reply
            offset[0] = end.timestamp() - time.time() + 1
            await wait_until(lambda: live.metric_now(app, "pool_site_curtailed", {"site": "lab"}) == 0, 10,
                             what="the window's end")
            back = await miners_on_both(port, f"{address}.rig")
            opened += back
            for m in back:
                await accepted_share(m)
            await wait_until(lambda: len(app.sites.book.sites["lab"].sessions) == 2, 5, what="two lab miners")
            # A front-end that dies takes its miners with it: they leave the coordinator's site book.
            os.kill(app.server.slots[1].pid, signal.SIGKILL)
            await wait_until(lambda: len(app.sites.book.sites["lab"].sessions) == 1, 10,
                             what="the dead front-end's miner gone from the site book")
            _, body = await http("GET", app.http.port, "/api/sites")
            assert next(s for s in body["sites"] if s["name"] == "lab")["miners"] == 1
        finally:
            for m in opened:
                await m.close()
        records = audit(app, "site_curtailment")
        assert [(r["change"], r["reason"]) for r in records] == [("start", "schedule"), ("end", "schedule")]
