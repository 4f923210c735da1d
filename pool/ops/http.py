"""HTTP endpoints beside the pool (aiohttp): /metrics, /healthz, /readyz and the JSON stats API.

Same process and port as the metrics, bound to 127.0.0.1 by default: it serves operators and their
Prometheus, not the public. Reads of the ledger run in a worker thread so the Stratum loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from pool.app import PoolApp


class HttpApi:
    """The operator HTTP server of one PoolApp."""

    def __init__(self, app: PoolApp) -> None:
        self.pool = app
        self.web = web.Application()
        self.web.add_routes(
            [
                web.get("/metrics", self.metrics),
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/api/pool", self.api_pool),
                web.get("/api/address/{address}", self.api_address),
                web.get("/api/blocks", self.api_blocks),
                web.post("/admin/reconnect", self.admin_reconnect),
                web.post("/admin/version-mask", self.admin_version_mask),
            ]
        )
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.web, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

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
        loop = asyncio.get_running_loop()
        body: dict[str, Any] = await loop.run_in_executor(None, self.pool.address_summary, address)
        return web.json_response(body, status=200 if body.get("known") else 404)

    async def admin_reconnect(self, request: web.Request) -> web.Response:
        """Drain this host: every miner gets ``client.reconnect`` to ``host:port`` (after ``wait`` seconds)."""
        try:
            host = request.query["host"]
            port = int(request.query["port"])
            wait = int(request.query.get("wait", "0"))
        except (KeyError, ValueError):
            return web.json_response({"error": "need host, port and optional wait (integers)"}, status=400)
        if not 0 < port < 65536 or not host or len(host) > 255:
            return web.json_response({"error": "bad host or port"}, status=400)
        server = self.pool.server
        count = server.reconnect_all(host, port, wait) if server else 0
        return web.json_response({"sent": count})

    async def admin_version_mask(self, request: web.Request) -> web.Response:
        """Change the version-rolling mask at run time; rolling miners get ``mining.set_version_mask``."""
        try:
            mask = int(request.query["mask"], 16)
        except (KeyError, ValueError):
            return web.json_response({"error": "need mask=HEX"}, status=400)
        if not 0 <= mask <= 0xFFFFFFFF:
            return web.json_response({"error": "mask must be 32 bits"}, status=400)
        server = self.pool.server
        count = server.set_version_mask(mask) if server else 0
        return web.json_response({"sent": count, "mask": f"{mask:08x}"})

    async def api_blocks(self, request: web.Request) -> web.Response:
        try:
            limit = min(max(int(request.query.get("limit", "50")), 1), 500)
        except ValueError:
            return web.json_response({"error": "limit must be an integer"}, status=400)
        loop = asyncio.get_running_loop()
        blocks = await loop.run_in_executor(None, self.pool.recent_blocks, limit)
        return web.json_response({"blocks": blocks, "generated_at": time.time()})
