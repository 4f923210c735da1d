"""The web dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a
pool that mined blocks on regtest: every page loads with no console error and no failed request, the charts
draw the stored history, the search box leads to the address page, and a hostile worker name is shown as text.

A screenshot of each page is written to ``$POOL_SCREENSHOT_DIR`` or to ``screenshots/`` under the test's
temp dir; the path is printed (``pytest -s`` shows it).

The browser is never downloaded: without /usr/bin/chromium (``scripts/setup.sh`` installs it as root) or the
``playwright`` package the browser test skips with the reason, except on CI, where it fails.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pool.ledger import book
from pool.ledger.history import HASHES_PER_DIFF1
from pool.ledger.sqlite import ShareRecord
from tests.conftest import running_pool
from tests.support.chain import arpc, connect_miner, wait_until
from tests.support.miner import TestMiner

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS = "<img src=x onerror=alert(1)>"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)
BLOCKS = 3


def _browser_or_skip() -> Any:
    """Playwright's async API, or a skip naming what is missing (a failure on CI)."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: run scripts/setup.sh as root (it runs apt-get install -y chromium)"
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        reason = reason or "the playwright package is missing: run scripts/setup.sh (pip install -e '.[test]')"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return async_playwright


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    path = Path(os.environ.get("POOL_SCREENSHOT_DIR") or tmp_path / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard screenshots: {path}")
    return path


class Watch:
    """Everything a page does wrong: console errors, uncaught exceptions, failed or refused requests, dialogs."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        self.allowed: list[str] = []  # substrings of expected failures (an unknown address answers 404)
        page.on("console", lambda m: m.type in ("error", "warning") and self._add(f"console {m.type}: {m.text}"))
        page.on("pageerror", lambda e: self._add(f"page error: {e}"))
        page.on("requestfailed", lambda r: self._add(f"request failed: {r.url} {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and self._add(f"HTTP {r.status}: {r.url}"))
        page.on("dialog", lambda d: self._add(f"dialog opened: {d.message}"))

    def _add(self, problem: str) -> None:
        if not any(a in problem for a in self.allowed):
            self.problems.append(problem)

    def check(self) -> None:
        assert self.problems == [], self.problems


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    """A Chromium context with a new empty profile, closed (and its processes with it) after the test."""
    async_playwright = _browser_or_skip()
    async with async_playwright() as p:
        with tempfile.TemporaryDirectory(dir=tmp_path, prefix="chromium-profile-") as profile:
            context = await p.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
                viewport={"width": 1280, "height": 900})
            try:
                yield context
            finally:
                await context.close()


async def mine_blocks(node: Any, miner: TestMiner, count: int) -> list[str]:
    """Up to ``count`` blocks, each from a share that is also a block (at difficulty 1e-8 on regtest nearly
    every share is; one that is not stays a plain share); the blocks' hashes."""
    found: list[str] = []
    for _ in range(count):
        reply, h = await miner.mine_one(1e-8)
        assert reply.get("result") is True, reply
        block = h[::-1].hex()

        async def moved(b: str = block) -> bool:
            return await arpc(node, "getbestblockhash") == b

        try:
            await wait_until(moved, 15, what=f"block {block}")
        except TimeoutError:
            continue
        await wait_until(lambda b=block: _on(miner, b), 15, what=f"work on {block}")
        found.append(block)
    return found


def _on(miner: TestMiner, block_hash: str) -> bool:
    internal = bytes.fromhex(block_hash)[::-1]
    want = b"".join(internal[i:i + 4][::-1] for i in range(0, 32, 4)).hex()
    return miner.job is not None and miner.job.prevhash == want


async def test_dashboard_in_chromium(regtest, tmp_path: Path, browser, screenshot_dir: Path):
    async with running_pool(regtest, tmp_path / "pool", history={"flush_interval": 1}) as app:
        address = await arpc(regtest, "getnewaddress", wallet="pool")
        base = f"http://127.0.0.1:{app.http.port}"
        miner = await connect_miner(app.server.port, f"{address}.rig1", "d=1e-8")
        try:
            found = await mine_blocks(regtest, miner, BLOCKS)
            assert found, "no share became a block"
        finally:
            await miner.close()

        # A hostile worker name cannot authorize over Stratum ...
        hostile = TestMiner("127.0.0.1", app.server.port, f"{address}.{XSS}")
        await hostile.connect()
        try:
            await hostile.request("mining.subscribe", ["test"])
            reply = await hostile.request("mining.authorize", [f"{address}.{XSS}", "x"])
            assert reply.get("result") is not True, reply
        finally:
            await hostile.close()
        # ... but ledgers outlive versions and front-ends: one in the ledger must still be shown as text.
        now = time.time()
        await app.ledger.record_share(ShareRecord(now, address, XSS, 1e-8, 1e-8, "x", 1, "00" * 32, False))
        app.coordinator.history.add(address, XSS, 1e-8, now)
        # Earlier hours, recorded the way live shares are (in memory, then flushed), to draw a day of history.
        for hours in range(2, 24):
            step = (now - hours * 3600) // 300 * 300  # three shares in minutes of one 5-minute chart step
            for k in range(3):
                app.coordinator.history.add(address, "rig1", 2e-8, step + 10 + k * 60)
        # A payment row as the payment processor writes it (sending, then sent with its txid).
        txid = "ab" * 32
        await app.ledger.submit(lambda c: c.execute(
            "INSERT INTO payments (batch, address, amount, status, txid, created_at, updated_at)"
            " VALUES ('b1', ?, 123456, 'sending', NULL, ?, ?)", (address, now, now)))
        await app.ledger.submit(lambda c: book.finish_payments(c, "b1", "sent", txid))
        await app.history.flush()

        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            await check_api(http, base, address, len(found), txid)
            async with http.get(f"{base}/api/address/{address}") as resp:
                has_best = "best_shares" in await resp.json()  # the best-share feature, where it is built in
        await check_pages(browser, base, address, len(found), screenshot_dir, has_best)


async def check_api(http: aiohttp.ClientSession, base: str, address: str, blocks: int, txid: str) -> None:
    async def get(path: str) -> tuple[int, Any, Any]:
        async with http.get(base + path, allow_redirects=False) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, body, resp.headers

    status, body, _ = await get("/api/history/pool?span=24h")
    assert status == 200, body
    assert body["step"] == 300 and body["resolution"] == 60 and len(body["points"]) == 288
    shares = sum(p[2] for p in body["points"])
    assert shares >= blocks + 1 + 22 * 3  # the mined shares, the hostile-name row, the earlier hours
    assert all(p[1] >= 0 for p in body["points"])
    top = max(body["points"], key=lambda p: p[2] if p[0] < time.time() - 3600 else 0)
    assert top[1] == pytest.approx(3 * 2e-8 * HASHES_PER_DIFF1 / 300)  # one earlier hour: 3 shares in 5 min

    status, body, _ = await get(f"/api/history/address/{address}?span=7d")
    assert status == 200 and body["resolution"] == 3600 and body["step"] == 3600
    assert sum(p[2] for p in body["points"]) == shares  # every share of the pool is this address's
    status, body, _ = await get(f"/api/history/address/{address}?span=1h&worker=rig1")
    assert status == 200 and sum(p[2] for p in body["points"]) >= blocks
    status, body, _ = await get("/api/history/pool?span=1y")
    assert status == 400 and "span" in body["error"]

    status, body, _ = await get(f"/api/address/{address}/payments")
    assert status == 200
    assert body["payments"] == [{"created_at": pytest.approx(time.time(), abs=600), "updated_at": pytest.approx(
        time.time(), abs=600), "amount": 123456, "status": "sent", "txid": txid}]

    status, body, headers = await get("/")
    assert status == 200 and "<title>pool</title>" in body
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in body and not re.search(r"\son\w+=", body)  # no inline script or handler
    assert 'href="/sites"' not in body  # this pool serves no /api/sites
    status, _, _ = await get("/sites")
    assert status == 404
    status, _, headers = await get("/address?address=" + "%20bc1q%2Fx%20")
    assert status == 303 and headers["Location"] == "/address/bc1q%2Fx"
    for name in ("../dashboard.py", "..%2Fdashboard.py", "layout.html", "nope.js"):
        status, _, _ = await get("/static/" + name)
        assert status == 404, name
    status, body, headers = await get("/static/chart.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and "PoolChart" in body


async def check_pages(context: Any, base: str, address: str, blocks: int, shots: Path, has_best: bool) -> None:
    page = await context.new_page()
    watch = Watch(page)
    # The pages' CSP forbids eval, so waits here are selectors (Playwright's wait_for_function evaluates
    # strings in the page and would be refused).

    # Overview: cards, the day's chart drawn from stored history, the blocks found.
    await page.goto(base + "/")
    await page.wait_for_selector("#pool-chart svg path.line")
    await page.locator("#blocks-table tbody tr").first.wait_for()
    d = await page.get_attribute("#pool-chart path.line", "d")
    assert d is not None and d.count("L") >= 287  # a point per 5 minutes over 24 h
    assert await page.locator("#pool-chart circle.point").count() >= 22  # the hours with work
    assert await page.locator("#blocks-table tbody tr").count() >= blocks
    assert (await page.inner_text("#pool-height")).isdigit()
    assert await page.inner_text("#pool-netdiff") != "–"
    await page.screenshot(path=str(shots / "overview.png"), full_page=True)
    watch.check()

    # The search box leads to the address page.
    await page.fill("#search-address", address)
    await page.press("#search-address", "Enter")
    await page.wait_for_url(re.compile(r".*/address/" + re.escape(address) + "$"))
    await page.wait_for_selector("#address-chart svg path.line")
    await page.locator("#shares-table tbody tr").nth(1).wait_for()
    assert await page.inner_text("#address-title") == address
    shares_text = await page.inner_text("#shares-table")
    assert XSS in shares_text and "rig1" in shares_text  # the hostile name, as text
    assert await page.locator("main img").count() == 0
    assert await page.locator("#shares-table th.best").first.is_visible() is has_best
    if has_best:  # each worker's best share, kept by the ledger, beside its totals
        rig = page.locator("#shares-table tbody tr", has_text="rig1")
        assert await rig.locator("td.best").nth(1).inner_text() != "–"
    assert await page.evaluate("document.querySelectorAll('img[src=x]').length") == 0
    assert await page.locator("#payments-table tbody tr").count() == 1
    assert "0.00123456 BTC" in await page.inner_text("#payments-table")
    assert await page.locator("#address-chart circle.point").count() >= 22
    # The span buttons redraw the chart from the hourly roll-up.
    await page.click(".spans button[data-span='7d']")
    await page.wait_for_selector("#address-chart[data-loaded='7d'] svg")
    assert await page.locator("#address-chart circle.point").count() >= 22
    await page.click(".spans button[data-span='24h']")
    await page.wait_for_selector("#address-chart[data-loaded='24h'] svg")
    await page.screenshot(path=str(shots / "address.png"), full_page=True)
    watch.check()

    # A hostile "address" in the URL is text too (its API lookups answer 400/404, which is expected here).
    watch.allowed = ["status of 404", "status of 400", "HTTP 404", "HTTP 400"]
    await page.goto(base + "/address/" + XSS.replace(" ", "%20"))
    await page.locator("#updated", has_text="Updated").wait_for()
    assert await page.inner_text("#address-title") == XSS
    assert await page.evaluate("document.querySelectorAll('img[src=x]').length") == 0
    assert await page.is_visible("#address-unknown")
    await page.screenshot(path=str(shots / "address-unknown.png"), full_page=True)
    watch.check()
    await page.close()
    await asyncio.sleep(0)


async def test_dashboard_disabled_keeps_the_api(regtest, tmp_path: Path):
    """``dashboard.enabled = false``: no pages or assets, the history API still answers."""
    async with running_pool(regtest, tmp_path / "pool", dashboard={"enabled": False}) as app:
        base = f"http://127.0.0.1:{app.http.port}"
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            for path in ("/", "/address/x", "/static/chart.js"):
                async with http.get(base + path) as resp:
                    assert resp.status == 404, path
            async with http.get(base + "/api/history/pool?span=1h") as resp:
                assert resp.status == 200
                body = await resp.json()
                assert len(body["points"]) == 60 and all(p[2] == 0 for p in body["points"])


SITES = [{"name": "lab", "cidrs": ["127.0.0.1/32"], "power_budget_kw": 2, "efficiency_j_per_th": 20}]
ADMIN_TOKEN = "dashboard-test-token-0123456789"


async def test_sites_page_in_chromium(regtest, tmp_path: Path, browser, screenshot_dir: Path):
    """With sites configured: the Sites link appears, each site shows hashrate and power against its budget,
    and a curtailment (made over the admin API, never from the page) shows as the site's state."""
    try:
        from pool.ops.sites import SitesApi  # noqa: F401  (the sites feature)
    except ImportError:
        pytest.skip("this build has no sites feature (/api/sites)")
    async with running_pool(regtest, tmp_path / "pool", site=SITES, admin={"token": ADMIN_TOKEN}) as app:
        address = await arpc(regtest, "getnewaddress", wallet="pool")
        base = f"http://127.0.0.1:{app.http.port}"
        miner = await connect_miner(app.server.port, f"{address}.rig1", "d=1e-8")
        try:
            assert await mine_blocks(regtest, miner, 2)
        finally:
            await miner.close()
        page = await browser.new_page()
        watch = Watch(page)
        await page.goto(base + "/")
        await page.click("#nav-sites")
        await page.wait_for_url(re.compile(r".*/sites$"))
        card = page.locator(".site", has_text="lab")
        await card.wait_for()
        text = await card.inner_text()
        assert "normal" in text and "of 2.0 kW budget" in text and "Next scheduled curtailment" in text
        assert await card.locator(".budget-fill").count() == 1
        await page.screenshot(path=str(screenshot_dir / "sites.png"), full_page=True)
        watch.check()

        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            async with http.post(f"{base}/admin/sites/lab/curtail?until={until}",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
                assert resp.status == 200, await resp.text()
        await page.reload()
        await page.locator(".site .badge-off", has_text="curtailed").wait_for()
        assert "Curtailed" in await page.locator(".site", has_text="lab").inner_text()
        await page.screenshot(path=str(screenshot_dir / "sites-curtailed.png"), full_page=True)
        watch.check()
        await page.close()
