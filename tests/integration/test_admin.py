"""The admin API over real HTTP on 127.0.0.1, against a running pool on regtest.

Off without a token (404), bearer token only (401 and a counter otherwise, never from the query string), no
cross-site browser requests, an allowlist for ``/admin/reconnect``, BIP 320 bits only for the version mask, an
optional listener of its own, and every action or refused attempt in the hash-chained audit log. Also: the
address API reads live worker stats on the event loop, never in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pool import reports
from tests.conftest import running_pool
from tests.support.chain import arpc, connect_miner, wait_until

pytestmark = pytest.mark.integration

TOKEN = "test-admin-token-0123456789abcdef"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)
BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def post(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | str]:
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        async with http.post(f"http://127.0.0.1:{port}{path}", headers=headers or {}) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, await resp.text()


def metric(app: Any, name: str, labels: dict[str, str] | None = None) -> float:
    return app.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def admin_audit(app: Any) -> list[dict[str, Any]]:
    return [json.loads(e.payload) for e in app.ledger.audit_entries() if e.kind == "admin_action"]


async def test_admin_routes_are_absent_without_a_token(regtest, tmp_path: Path):
    async with running_pool(regtest, tmp_path / "pool") as app:
        miner = await connect_miner(app.server.port, f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.w")
        try:
            for path in ("/admin/reconnect?host=evil.example&port=3333", "/admin/version-mask?mask=00006000"):
                status, _ = await post(app.http.port, path)
                assert status == 404, path
                status, _ = await post(app.http.port, path, BEARER)
                assert status == 404, path
            await asyncio.sleep(0.3)
            assert not [n for n in miner.notifications if n.get("method") == "client.reconnect"]
            assert (await get(app.http.port, "/metrics"))[0] == 200
        finally:
            await miner.close()


@pytest.mark.one_process("reads the one process's protocol settings (app.server._proto_config)")
async def test_admin_needs_the_bearer_token(regtest, tmp_path: Path):
    async with running_pool(regtest, tmp_path / "pool", admin={"token": TOKEN}) as app:
        user = f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.w"
        miner = await connect_miner(app.server.port, user)
        port = app.http.port
        path = "/admin/version-mask?mask=00006000"
        try:
            refused = [
                ({}, "missing"),
                ({"Authorization": "Bearer wrong-token-wrong-token-wrong"}, "wrong"),
                ({"Authorization": f"Bearer {TOKEN}x"}, "wrong"),
                ({"Authorization": f"Basic {TOKEN}"}, "malformed"),
                ({"Authorization": TOKEN}, "malformed"),
            ]
            for headers, reason in refused:
                before = metric(app, "pool_admin_auth_failures_total", {"reason": reason})
                status, _ = await post(port, path, headers)
                assert status == 401, (headers, status)
                assert metric(app, "pool_admin_auth_failures_total", {"reason": reason}) == before + 1, reason
            # The token in the query string is never accepted, not even with a right header beside it.
            for query in (f"&token={TOKEN}", f"&access_token={TOKEN}"):
                status, _ = await post(port, path + query)
                assert status in (400, 401)
                status, _ = await post(port, path + query, BEARER)
                assert status in (400, 401)
            assert metric(app, "pool_admin_auth_failures_total", {"reason": "query-token"}) >= 4
            assert app.server._proto_config.pool_version_mask == 0x1FFFE000  # nothing changed so far

            status, body = await post(port, path, BEARER)
            assert status == 200, body
            assert body["mask"] == "00006000"
            assert app.server._proto_config.pool_version_mask == 0x00006000
            assert metric(app, "pool_admin_actions_total", {"action": "version-mask", "outcome": "ok"}) == 1
        finally:
            await miner.close()
        entries = admin_audit(app)
        done = [e for e in entries if e["outcome"] == "ok"]
        assert len(done) == 1 and done[0]["action"] == "version-mask" and done[0]["params"]["mask"] == "00006000"
        assert done[0]["peer"].startswith("127.0.0.1")
        assert isinstance(done[0]["miners"], int)
        refused_entries = [e for e in entries if e["outcome"] == "refused"]
        assert {e["reason"] for e in refused_entries} >= {"missing", "wrong", "malformed", "query-token"}
        assert all(TOKEN not in json.dumps(e) for e in entries), "the token must never reach the audit log"
    ok, message = await asyncio.to_thread(reports.audit_verify, app.config.ledger_file)
    assert ok, message


@pytest.mark.one_process("reads the one process's protocol settings (app.server._proto_config)")
async def test_cross_site_browser_requests_are_refused(regtest, tmp_path: Path):
    async with running_pool(regtest, tmp_path / "pool", admin={"token": TOKEN}) as app:
        port = app.http.port
        path = "/admin/version-mask?mask=00006000"
        for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Origin": "null"}):
            status, _ = await post(port, path, {**BEARER, **headers})
            assert status == 403, headers
        assert app.server._proto_config.pool_version_mask == 0x1FFFE000
        assert metric(app, "pool_admin_auth_failures_total", {"reason": "cross-origin"}) == 3
        # The listener's own origin (a same-origin tool) is fine.
        status, _ = await post(port, path, {**BEARER, "Origin": f"http://127.0.0.1:{port}"})
        assert status == 200


async def test_reconnect_allowlist_and_force(regtest, tmp_path: Path):
    admin = {"token": TOKEN, "reconnect_allowlist": ["pool2.example.com"]}
    async with running_pool(regtest, tmp_path / "pool", admin=admin) as app:
        user = f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.w"
        miners = [await connect_miner(app.server.port, user) for _ in range(2)]
        port = app.http.port
        try:
            status, body = await post(port, "/admin/reconnect?host=evil.example&port=3333", BEARER)
            assert status == 403, body
            await asyncio.sleep(0.3)
            assert not [n for m in miners for n in m.notifications if n.get("method") == "client.reconnect"]

            status, body = await post(port, "/admin/reconnect?host=POOL2.example.com&port=3334&wait=5", BEARER)
            assert status == 200 and body["sent"] == 2, body

            def reconnects() -> list[list[Any]]:
                return [n["params"] for m in miners for n in m.notifications if n.get("method") == "client.reconnect"]

            await wait_until(lambda: len(reconnects()) == 2, 5, what="client.reconnect to both miners")
            assert all(p[:2] == ["POOL2.example.com", 3334] or p[:2] == ["pool2.example.com", 3334]
                       for p in reconnects())

            status, body = await post(port, "/admin/reconnect?host=10.9.8.7&port=3333&force=1", BEARER)
            assert status == 200 and body["sent"] == 2, body
        finally:
            for m in miners:
                await m.close()
        entries = admin_audit(app)
        assert [(e["action"], e["outcome"], e.get("miners")) for e in entries] == [
            ("reconnect", "refused", 0), ("reconnect", "ok", 2), ("reconnect", "ok", 2),
        ]
        assert entries[0]["reason"] == "host-not-allowlisted" and entries[0]["params"]["host"] == "evil.example"
        assert entries[2]["params"]["force"] is True


@pytest.mark.one_process("reads the one process's protocol settings (app.server._proto_config)")
async def test_runtime_version_mask_outside_bip320_is_refused(regtest, tmp_path: Path):
    async with running_pool(regtest, tmp_path / "pool", admin={"token": TOKEN}) as app:
        for mask in ("ffffffff", "3fffe000", "00001000", "zz"):
            status, body = await post(app.http.port, f"/admin/version-mask?mask={mask}", BEARER)
            assert status == 400, (mask, body)
        assert app.server._proto_config.pool_version_mask == 0x1FFFE000


@pytest.mark.one_process("reads the one process's protocol settings (app.server._proto_config)")
async def test_admin_on_its_own_listener(regtest, tmp_path: Path):
    async with running_pool(regtest, tmp_path / "pool", admin={"token": TOKEN, "port": 0}) as app:
        admin_port = app.http.admin_port
        assert admin_port and admin_port != app.http.port
        # Not on the metrics listener, which keeps serving Prometheus ...
        status, _ = await post(app.http.port, "/admin/version-mask?mask=00006000", BEARER)
        assert status == 404
        assert (await get(app.http.port, "/metrics"))[0] == 200
        # ... and the admin listener serves only admin routes.
        assert (await get(admin_port, "/metrics"))[0] == 404
        status, _ = await post(admin_port, "/admin/version-mask?mask=00006000")
        assert status == 401
        status, body = await post(admin_port, "/admin/version-mask?mask=00006000", BEARER)
        assert status == 200, body
        assert app.server._proto_config.pool_version_mask == 0x00006000


async def test_address_api_reads_live_stats_on_the_loop(regtest, tmp_path: Path):
    """Live worker stats are changed by the event loop; reading them from a worker thread races it."""
    async with running_pool(regtest, tmp_path / "pool") as app:
        address = await arpc(regtest, "getnewaddress", wallet="pool")
        miner = await connect_miner(app.server.port, f"{address}.w1", password="d=1e-10")
        try:
            reply, _ = await miner.mine_one()
            assert reply.get("result") is True, reply
        finally:
            await miner.close()

        loop_thread = threading.get_ident()
        stats = app.coordinator.stats
        touched: list[int] = []

        class Recording:
            """The real stats, noting the thread of every read the HTTP API makes."""

            def __getattr__(self, name: str) -> Any:
                touched.append(threading.get_ident())
                return getattr(stats, name)

        app.coordinator.stats = Recording()
        try:
            status, text = await get(app.http.port, f"/api/address/{address}")
        finally:
            app.coordinator.stats = stats
        assert status == 200, text
        body = json.loads(text)
        assert [w["worker"] for w in body["workers"]] == ["w1"] and body["workers"][0]["accepted"] == 1
        assert touched and set(touched) == {loop_thread}


async def test_address_api_while_stats_change(regtest, tmp_path: Path):
    """Many API reads while the loop adds and evicts workers: every answer is a 200."""
    async with running_pool(regtest, tmp_path / "pool") as app:
        address = await arpc(regtest, "getnewaddress", wallet="pool")
        stats = app.coordinator.stats
        stats.accepted(address, "seed", 1.0, 1.0)
        stop = asyncio.Event()

        async def churn() -> None:
            i = 0
            while not stop.is_set():
                for _ in range(200):
                    i += 1
                    stats.accepted(address, f"w{i % 5000}", 1.0, float(i))
                    if i % 7 == 0:
                        stats.workers.pop(next(iter(stats.workers)), None)
                # A short pause, not sleep(0): a loop that never idles starves the reader thread of the GIL on a
                # busy 2-core machine, and the test would time out instead of catching the race.
                await asyncio.sleep(0.002)

        task = asyncio.create_task(churn())
        try:
            async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
                for _ in range(150):
                    async with http.get(f"http://127.0.0.1:{app.http.port}/api/address/{address}") as resp:
                        assert resp.status in (200, 404), await resp.text()
        finally:
            stop.set()
            await task


async def test_admin_listener_without_metrics(regtest, tmp_path: Path):
    """metrics.enabled = false and admin.port set: only the admin listener runs."""
    overrides = {"admin": {"token": TOKEN, "port": 0}, "metrics": {"enabled": False}}
    async with running_pool(regtest, tmp_path / "pool", **overrides) as app:
        assert app.http.port == 0 and app.http.admin_port
        status, body = await post(app.http.admin_port, "/admin/version-mask?mask=00006000", BEARER)
        assert status == 200, body
        assert (await get(app.http.admin_port, "/metrics"))[0] == 404
