"""Licensed operators on a live pool (regtest, real TCP): refusal at authorize with error 24, reloads by the
admin API and by SIGHUP to the real ``pool run``, a bad file refused with the old list kept, and the paced
drain of sessions whose address was removed. Every change must be in the hash-chained audit log."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pool.node.regtest import free_port
from tests.conftest import running_pool
from tests.support import live
from tests.support.chain import arpc, connect_miner, wait_until
from tests.support.miner import TestMiner as Miner
from tests.support.pool_run import pool_run

pytestmark = pytest.mark.integration

TOKEN = "licensing-admin-token-0123456789"
ERR_UNAUTHORIZED = 24
ERR_STALE = 21


async def post(port: int, path: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        async with http.post(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            return r.status, json.loads(await r.text())


def audit(app: Any, kind: str) -> list[dict[str, Any]]:
    return [json.loads(e.payload) for e in app.ledger.audit_entries() if e.kind == kind]


async def metric(app: Any, name: str, labels: dict[str, str] | None = None) -> float:
    """From every Stratum process (the merged registry /metrics renders)."""
    return await live.metric(app, name, labels) or 0.0


async def addresses(node: Any, n: int) -> list[str]:
    return [await arpc(node, "getnewaddress", wallet="pool") for _ in range(n)]


async def share_accepted(miner: Miner) -> bool:
    """One share; True if accepted (a stale reply from a racing new tip is retried once)."""
    for _ in range(2):
        reply, _ = await miner.mine_one()
        if reply.get("result") is True:
            return True
        if reply["error"][0] != ERR_STALE:
            return False
    return False


async def test_unlisted_address_is_refused_with_error_24(regtest, tmp_path: Path):
    licensed, stranger = await addresses(regtest, 2)
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(f"# licensed\n{licensed}, Acme Mining, north-dam\n")
    auth = {"mode": "allowlist", "allowlist_file": str(allowlist)}
    async with running_pool(regtest, tmp_path / "pool", authorization=auth) as app:
        ok = await connect_miner(app.server.port, f"{licensed}.rig1")
        refused = Miner("127.0.0.1", app.server.port, f"{stranger}.rig1")
        await refused.connect()
        try:
            assert await share_accepted(ok)
            await refused.request("mining.subscribe", ["testminer/1.0"])
            reply = await refused.request("mining.authorize", [f"{stranger}.rig1", "x"])
            assert reply["result"] in (None, False) and reply["error"][0] == ERR_UNAUTHORIZED, reply
            assert "not licensed" in reply["error"][1] and stranger in reply["error"][1]
            reply = await refused.request("mining.authorize", ["not-an-address.rig1", "x"])
            assert reply["error"][0] == ERR_UNAUTHORIZED and "invalid payout address" in reply["error"][1]
            # A licensed address on the same connection still works: the refusal is per address.
            reply = await refused.request("mining.authorize", [f"{licensed}.rig2", "x"])
            assert reply["result"] is True, reply
        finally:
            await ok.close()
            await refused.close()
        assert await metric(app, "pool_authorize_refusals_total", {"reason": "not-allowlisted"}) == 1
        assert await metric(app, "pool_authorize_refusals_total", {"reason": "invalid-username"}) == 1
        assert await metric(app, "pool_allowlist_entries") == 1
        loaded = audit(app, "allowlist_loaded")
        assert len(loaded) == 1 and loaded[0]["entries"] == 1 and loaded[0]["mode"] == "allowlist"


async def test_reload_adds_removes_and_drains_paced(regtest, tmp_path: Path):
    kept, removed, added = await addresses(regtest, 3)
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(f"{kept}, Keeper Ltd\n{removed}, Leaver Ltd\n")
    auth = {"mode": "allowlist", "allowlist_file": str(allowlist), "drain_rate": 0.5}
    async with running_pool(regtest, tmp_path / "pool", authorization=auth, admin={"token": TOKEN}) as app:
        stays = await connect_miner(app.server.port, f"{kept}.a")
        leaving = [await connect_miner(app.server.port, f"{removed}.r{i}") for i in range(3)]
        closed_at: dict[int, float] = {}
        for i, miner in enumerate(leaving):
            assert miner._reader_task is not None
            miner._reader_task.add_done_callback(lambda _, i=i: closed_at.setdefault(i, time.monotonic()))
        try:
            assert await share_accepted(leaving[0])
            allowlist.write_text(f"{kept}, Keeper Ltd\n{added}, Newcomer Co, south-farm\n")
            status, body = await post(app.http.port, "/admin/allowlist/reload")
            assert status == 200, body
            assert (body["entries"], body["added"], body["removed"], body["draining"]) == (2, 1, 1, 3), body
            # The removed address earns nothing more, even on a connection still waiting for its turn to close.
            still_open = [m for i, m in enumerate(leaving) if i not in closed_at]
            assert still_open, "drain_rate = 0.5/s: not every session may close at once"
            reply, _ = await still_open[-1].mine_one()
            assert reply.get("error") and reply["error"][0] == ERR_UNAUTHORIZED, reply
            await wait_until(lambda: len(closed_at) == 3, 30, what="the removed address's sessions closed")
            # Paced: three sessions at one per two seconds take well over a second from the first to the last.
            assert max(closed_at.values()) - min(closed_at.values()) >= 1.0, closed_at
            told = [n for m in leaving for n in m.notifications if n["method"] == "client.show_message"]
            assert len(told) == 3 and "no longer licensed" in told[0]["params"][0]
            # The kept address mines on, and the added one may now connect.
            assert await share_accepted(stays)
            newcomer = await connect_miner(app.server.port, f"{added}.n")
            assert await share_accepted(newcomer)
            await newcomer.close()
            late = Miner("127.0.0.1", app.server.port, f"{removed}.again")
            await late.connect()
            await late.request("mining.subscribe", [])
            reply = await late.request("mining.authorize", [f"{removed}.again", "x"])
            assert reply["error"][0] == ERR_UNAUTHORIZED, reply
            await late.close()
        finally:
            await stays.close()
            for miner in leaving:
                await miner.close()
        assert await metric(app, "pool_allowlist_drained_sessions_total") == 3
        assert await metric(app, "pool_allowlist_reloads_total", {"result": "ok"}) == 1
        assert await metric(app, "pool_share_rejects_total", {"reason": "unlicensed"}) >= 1
        reloaded = audit(app, "allowlist_reloaded")
        assert len(reloaded) == 1
        entry = reloaded[0]
        assert (entry["source"], entry["added_addresses"], entry["removed_addresses"]) == ("admin", [added], [removed])
        assert audit(app, "allowlist_drain")[0]["sessions"] == 3
        await wait_until(lambda: bool(audit(app, "allowlist_drain_done")), 10, what="drain-done audit entry")
        assert audit(app, "allowlist_drain_done") == [{"closed": 3}]
        actions = audit(app, "admin_action")
        assert [a["action"] for a in actions] == ["allowlist-reload"] and actions[0]["outcome"] == "ok"


async def test_bad_file_on_reload_is_refused_and_the_old_list_kept(regtest, tmp_path: Path):
    licensed, other = await addresses(regtest, 2)
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(f"{licensed}\n")
    auth = {"mode": "allowlist", "allowlist_file": str(allowlist)}
    async with running_pool(regtest, tmp_path / "pool", authorization=auth, admin={"token": TOKEN}) as app:
        allowlist.write_text(f"{other}\nnot-an-address, Typo Ltd\n")
        status, body = await post(app.http.port, "/admin/allowlist/reload")
        assert status == 422, body
        assert "line 2" in body["error"] and "not a valid regtest address" in body["error"] and body["kept"] is True
        miner = await connect_miner(app.server.port, f"{licensed}.still")  # the old list is in force
        await miner.close()
        allowlist.unlink()
        status, body = await post(app.http.port, "/admin/allowlist/reload")
        assert status == 422 and "cannot read" in body["error"], body
        assert await metric(app, "pool_allowlist_reloads_total", {"result": "refused"}) == 2
        refused = audit(app, "allowlist_reload_refused")
        assert len(refused) == 2 and "line 2" in refused[0]["error"]
        assert await metric(app, "pool_allowlist_entries") == 1


async def test_sighup_reloads_the_allowlist_of_pool_run(regtest, tmp_path: Path):
    first, second = await addresses(regtest, 2)
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(f"{first}\n")
    port = free_port()
    pool_address = await arpc(regtest, "getnewaddress", wallet="pool")
    settings = (f'[stratum]\nhost = "127.0.0.1"\nport = {port}\n'
                f'[authorization]\nmode = "allowlist"\nallowlist_file = "{allowlist}"\n')
    async with pool_run(regtest, tmp_path, pool_address, settings) as (proc, _):

        async def authorize(address: str) -> dict[str, Any]:
            miner = Miner("127.0.0.1", port, f"{address}.w")
            await miner.connect()
            try:
                await miner.request("mining.subscribe", [])
                return await miner.request("mining.authorize", [f"{address}.w", "x"])
            finally:
                await miner.close()

        assert (await authorize(second))["error"][0] == ERR_UNAUTHORIZED
        allowlist.write_text(f"{first}\n{second}, Second Operator\n")
        proc.send_signal(signal.SIGHUP)

        async def second_admitted() -> bool:
            return (await authorize(second)).get("result") is True

        await wait_until(second_admitted, 15, interval=0.2, what="the reloaded allowlist")
        assert proc.returncode is None
