"""The read-only web dashboard and the JSON history API behind its charts, on the metrics listener.

Pages: ``/`` (pool overview), ``/address/ADDRESS`` (one payout address), ``/sites`` (only when the pool
serves ``/api/sites``). Each page is a static HTML shell from ``pool/ops/web`` (shipped in the package, no
CDN) whose script fetches the JSON API and builds the page with DOM text nodes, never markup, so miner-chosen
strings (worker names) and the address in the URL are shown as text. The Content-Security-Policy allows
scripts, styles and requests from this origin only and no inline script at all, so even a string that got
through as markup could not run. Nothing here changes state: no admin action is reachable from a page.

History endpoints (``/api/history/pool``, ``/api/history/address/ADDRESS``) read the minutely and hourly
roll-ups (``ledger/history.py``) in a worker thread and add the work still in memory, read on the event loop
that changes it, so the newest point is current without waiting for the next flush.
"""

from __future__ import annotations

import asyncio
import html
import time
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from pool.ledger import history

if TYPE_CHECKING:
    from pool.app import PoolApp

ASSETS = {  # the only files served from /static/, with their types: nothing else can be named
    "dashboard.js": "text/javascript; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
PAGES = ("overview", "address", "sites")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
       " base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
MAX_ADDRESS = 100
MAX_WORKER = 64
DEFAULT_SPAN = "24h"


def _read(name: str) -> bytes:
    return resources.files("pool.ops").joinpath("web", name).read_bytes()


class Dashboard:
    """Routes of the web pages and of the history API for one PoolApp."""

    def __init__(self, pool: PoolApp) -> None:
        self.pool = pool
        self.config = pool.config.dashboard
        self._assets = {name: _read(name) for name in ASSETS}
        self._layout = _read("layout.html").decode()
        self._bodies = {page: _read(f"{page}.html").decode() for page in PAGES}
        self._rendered: dict[tuple[str, bool], bytes] = {}

    def api_routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/history/pool", self.history_pool),
            web.get("/api/history/address/{address}", self.history_address),
            web.get("/api/address/{address}/payments", self.payments),
        ]

    def page_routes(self) -> list[web.RouteDef]:
        if not self.config.enabled:
            return []
        return [
            web.get("/", self.overview),
            web.get("/address", self.search),
            web.get("/address/{address}", self.address),
            web.get("/sites", self.sites),
            web.get("/static/{name}", self.asset),
        ]

    # ---- pages ---------------------------------------------------------------------------------------------

    def has_sites(self, request: web.Request) -> bool:
        """Whether this listener serves /api/sites (the sites feature) and sites are configured: the Sites page
        is linked only then."""
        configured = getattr(getattr(self.pool.config, "programme", None), "sites", ())
        return bool(configured) and any(r.canonical == "/api/sites" for r in request.app.router.resources())

    def _page(self, page: str, sites: bool, status: int = 200) -> web.Response:
        body = self._rendered.get((page, sites))
        if body is None:
            nav_sites = '<a href="/sites" id="nav-sites">Sites</a>' if sites else ""
            text = (self._layout.replace("%%TITLE%%", html.escape(self.config.title))
                    .replace("%%PAGE%%", page).replace("%%NAV_SITES%%", nav_sites)
                    .replace("%%MAIN%%", self._bodies[page]))
            body = self._rendered[(page, sites)] = text.encode()
        return web.Response(body=body, status=status, content_type="text/html", charset="utf-8",
                            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    async def overview(self, request: web.Request) -> web.Response:
        return self._page("overview", self.has_sites(request))

    async def address(self, request: web.Request) -> web.Response:
        return self._page("address", self.has_sites(request))

    async def sites(self, request: web.Request) -> web.Response:
        if not self.has_sites(request):
            raise web.HTTPNotFound(text="this pool has no sites configured", headers=SECURITY_HEADERS)
        return self._page("sites", True)

    async def search(self, request: web.Request) -> web.Response:
        """The search box's form (it works without script too): to the address page, or home when empty."""
        text = request.query.get("address", "").strip()[:MAX_ADDRESS]
        target = f"/address/{quote(text, safe='')}" if text else "/"
        raise web.HTTPSeeOther(target, headers=SECURITY_HEADERS)

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = self._assets.get(name)
        if body is None:
            raise web.HTTPNotFound(headers=SECURITY_HEADERS)
        return web.Response(body=body, headers={**SECURITY_HEADERS, "Content-Type": ASSETS[name],
                                                "Cache-Control": "no-cache"})

    # ---- JSON ----------------------------------------------------------------------------------------------

    def _span(self, request: web.Request) -> tuple[int, int, int]:
        span = history.parse_span(request.query.get("span", DEFAULT_SPAN))
        minutely_keep = self.pool.config.history.minutely_keep_hours * 3600
        resolution, step = history.plan(span, minutely_keep)
        return span, resolution, step

    async def _series(self, request: web.Request, address: str | None, worker: str | None) -> web.Response:
        try:
            span, resolution, step = self._span(request)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        now = time.time()
        since = int(now - span) // step * step
        coordinator = self.pool.coordinator
        fresh = coordinator.history.snapshot(address, worker) if coordinator is not None else []  # on the loop
        ledger = self.pool.ledger
        stored: list[tuple[int, int, float]] = []
        if ledger is not None:
            stored = await asyncio.get_running_loop().run_in_executor(
                None, history.read, ledger.query, resolution, since, address, worker)
        body = history.series(stored + fresh, span, step, now)
        body["resolution"] = resolution
        if address is not None:
            body["address"] = address
        if worker is not None:
            body["worker"] = worker
        return web.json_response(body)

    async def history_pool(self, request: web.Request) -> web.Response:
        return await self._series(request, None, None)

    async def history_address(self, request: web.Request) -> web.Response:
        address = request.match_info["address"]
        worker = request.query.get("worker")
        if not address or len(address) > MAX_ADDRESS:
            return web.json_response({"error": "address must be 1-100 characters"}, status=400)
        if worker is not None and len(worker) > MAX_WORKER:
            return web.json_response({"error": "worker must be at most 64 characters"}, status=400)
        return await self._series(request, address, worker)

    async def payments(self, request: web.Request) -> web.Response:
        address = request.match_info["address"]
        if not address or len(address) > MAX_ADDRESS:
            return web.json_response({"error": "address must be 1-100 characters"}, status=400)
        try:
            limit = min(max(int(request.query.get("limit", "50")), 1), 500)
        except ValueError:
            return web.json_response({"error": "limit must be an integer"}, status=400)
        ledger = self.pool.ledger
        rows: list[tuple[Any, ...]] = []
        if ledger is not None:
            rows = await asyncio.get_running_loop().run_in_executor(
                None, ledger.query,
                "SELECT created_at, updated_at, amount, status, txid FROM payments WHERE address = ?"
                " ORDER BY created_at DESC, id DESC LIMIT ?", (address, limit))
        keys = ("created_at", "updated_at", "amount", "status", "txid")
        return web.json_response({"address": address,
                                  "payments": [dict(zip(keys, row, strict=True)) for row in rows]})
