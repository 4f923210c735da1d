"""HTTP endpoints beside the pool (aiohttp): /metrics, /healthz, /readyz, the JSON stats API, the read-only web
dashboard (pool/ops/dashboard.py) and the admin API.

Same process and port as the metrics, bound to 127.0.0.1 by default: it serves operators and their
Prometheus, not the public. The admin routes (pool/ops/admin.py) exist only with an admin token, and with
``admin.port`` they move to a listener of their own so /metrics can be exposed without exposing control.

Live state (worker stats, sessions) is read on the event loop that changes it; only ledger queries run in a
worker thread, so the Stratum loop never waits on disk and no thread iterates a dict the loop is mutating.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pool.ops.admin import AdminApi
from pool.ops.dashboard import Dashboard
from pool.ops.sites import SitesApi

if TYPE_CHECKING:
    from pool.app import PoolApp

log = structlog.get_logger("pool.http")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpApi:
    """The operator HTTP server of one PoolApp."""

    def __init__(self, app: PoolApp) -> None:
        self.pool = app
        admin_config = app.config.admin
        self.admin = AdminApi(app) if admin_config.enabled else None
        self.web = web.Application()
        self.web.add_routes(
            [
                web.get("/metrics", self.metrics),
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/api/pool", self.api_pool),
                web.get("/api/address/{address}", self.api_address),
                web.get("/api/blocks", self.api_blocks),
                *SitesApi(app).routes(),
            ]
        )
        self.dashboard = Dashboard(app)  # read-only pages and the history API (pool/ops/dashboard.py)
        self.web.add_routes(self.dashboard.api_routes() + self.dashboard.page_routes())
        self.admin_web: web.Application | None = None
        if self.admin is not None:
            if admin_config.port is None:
                self.web.add_routes(self.admin.routes())
            else:
                self.admin_web = web.Application()
                self.admin_web.add_routes(self.admin.routes())
        self._runners: list[web.AppRunner] = []
        self.port = 0
        self.admin_port = 0

    async def start(self) -> int:
        """Start the metrics listener (if metrics are enabled) and the admin listener (if it has its own)."""
        cfg = self.pool.config
        if cfg.metrics_enabled:
            self.port = await self._serve(self.web, cfg.metrics_host, cfg.metrics_port)
            log.info("http_listening", host=cfg.metrics_host, port=self.port,
                     admin=self.admin is not None and self.admin_web is None)
            if self.admin_web is None and self.admin is not None:
                self.admin_port = self.port
        if self.admin_web is not None and cfg.admin.port is not None:
            self.admin_port = await self._serve(self.admin_web, cfg.admin.host, cfg.admin.port)
            log.info("admin_listening", host=cfg.admin.host, port=self.admin_port)
        if self.admin is not None:
            host = cfg.metrics_host if self.admin_web is None else cfg.admin.host
            if not _loopback(host):
                # The bearer token crosses the network in clear HTTP: fine behind a VPN or in a container whose
                # port is published on loopback only, a risk anywhere else.
                log.warning("admin_api_not_on_loopback", host=host, port=self.admin_port)
        return self.port

    async def _serve(self, application: web.Application, host: str, port: int) -> int:
        runner = web.AppRunner(application, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def metrics(self, request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        self.pool.metrics.pending_payouts.set(await loop.run_in_executor(None, self.pool.pending_payouts))
        self.pool.refresh_gauges()
        body = generate_latest(self.pool.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        problems = self.pool.readiness_problems()
        status = 200 if not problems else 503
        return web.json_response({"ready": not problems, "problems": problems}, status=status)

    async def api_pool(self, request: web.Request) -> web.Response:
        return web.json_response(self.pool.pool_summary())

    async def api_address(self, request: web.Request) -> web.Response:
        address = request.match_info["address"]
        if len(address) > 100:
            return web.json_response({"error": "address too long"}, status=400)
        workers = self.pool.address_workers(address)  # live stats: read here, on the loop that changes them
        loop = asyncio.get_running_loop()
        body: dict[str, Any] = await loop.run_in_executor(None, self.pool.address_summary, address, workers)
        return web.json_response(body, status=200 if body.get("known") else 404)

    async def api_blocks(self, request: web.Request) -> web.Response:
        try:
            limit = min(max(int(request.query.get("limit", "50")), 1), 500)
        except ValueError:
            return web.json_response({"error": "limit must be an integer"}, status=400)
        loop = asyncio.get_running_loop()
        blocks = await loop.run_in_executor(None, self.pool.recent_blocks, limit)
        return web.json_response({"blocks": blocks, "generated_at": time.time()})
