"""The operator's admin API: ``POST /admin/reconnect``, ``/admin/version-mask``, ``/admin/allowlist/reload``
and site curtailment (``POST /admin/sites/NAME/curtail``, ``/resume``; pool/ops/sites.py).

Whoever can use these moves the pool's whole hashrate, so they are off unless a token is configured
(``admin.token``, ``admin.token_file`` or ``POOL_ADMIN_TOKEN``), and then every request needs
``Authorization: Bearer TOKEN``. What is refused, and why:

- a token in the query string (it ends up in proxy logs, shell history, browser history): never accepted;
- a browser request from another origin (``Origin`` not this listener's own address, or ``Sec-Fetch-Site``
  other than ``same-origin``/``none``): a web page open in the operator's browser must not reach this;
- a missing, malformed or wrong token (compared in constant time);
- ``/admin/reconnect`` to a host outside ``admin.reconnect_allowlist`` unless ``force=1``;
- a version mask outside the BIP 320 general-purpose bits.

Every action and every refusal is logged (peer, action, parameters, miners affected) and written to the
ledger's hash-chained audit log. Refused attempts are audited up to a burst of ``AUDIT_BURST`` then
``AUDIT_RATE`` per second, so an unauthenticated flood cannot grow the ledger without bound; the number left
out is carried in the next refused entry, and every attempt is still logged and counted in metrics.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from pool.config import BIP320_MASK
from pool.ledger import book
from pool.ops.sites import admin_routes
from pool.server.access import ReloadRefused
from pool.server.guard import TokenBucket

if TYPE_CHECKING:
    from pool.app import PoolApp

log = structlog.get_logger("pool.admin")

AUDIT_BURST = 20.0
AUDIT_RATE = 1.0
TOKEN_QUERY_KEYS = frozenset({"token", "access_token", "auth", "authorization", "bearer", "api_key", "apikey"})
MAX_LOGGED_PARAMS = 8
MAX_PARAM_CHARS = 100


class AdminApi:
    """Admin routes of one PoolApp; mounted on the metrics listener or on a listener of their own."""

    def __init__(self, pool: PoolApp) -> None:
        self.pool = pool
        self.config = pool.config.admin
        self._token = self.config.token.encode()
        self._refused_audit = TokenBucket(AUDIT_RATE, AUDIT_BURST, time.monotonic())
        self._unaudited = 0

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/admin/reconnect", self.reconnect),
            web.post("/admin/version-mask", self.version_mask),
            *admin_routes(self),
            web.post("/admin/allowlist/reload", self.allowlist_reload),
        ]

    # ---- handlers ------------------------------------------------------------------------------------------

    async def reconnect(self, request: web.Request) -> web.Response:
        """Drain this host: every miner gets ``client.reconnect`` to ``host:port`` (after ``wait`` seconds)."""
        action = "reconnect"
        if (refusal := await self._authenticate(request, action)) is not None:
            return refusal
        query = request.query
        force = query.get("force", "0").lower() in ("1", "true", "yes")
        try:
            host = query["host"].strip()
            port = int(query["port"])
            wait = int(query.get("wait", "0"))
        except (KeyError, ValueError):
            return await self._bad_request(request, action, "need host, port and optional wait (integers)")
        if (not 0 < port < 65536 or not 0 <= wait <= 86400 or not host or len(host) > 255
                or any(c.isspace() or not c.isprintable() for c in host)):
            return await self._bad_request(request, action, "bad host, port (1-65535) or wait (0-86400 s)")
        params = {"host": host, "port": port, "wait": wait, "force": force}
        if not force and host.rstrip(".").lower() not in self.config.reconnect_allowlist:
            await self._record(request, action, params, "refused", reason="host-not-allowlisted")
            return web.json_response(
                {"error": f"{host!r} is not in admin.reconnect_allowlist; add it there or pass force=1"}, status=403
            )
        server = self.pool.server
        count = server.reconnect_all(host, port, wait) if server else 0
        await self._record(request, action, params, "ok", miners=count)
        return web.json_response({"sent": count})

    async def version_mask(self, request: web.Request) -> web.Response:
        """Change the version-rolling mask at run time; rolling miners get ``mining.set_version_mask``."""
        action = "version-mask"
        if (refusal := await self._authenticate(request, action)) is not None:
            return refusal
        text = request.query.get("mask", "")
        try:
            if not 0 < len(text) <= 8:
                raise ValueError(text)
            mask = int(text, 16)
        except ValueError:
            return await self._bad_request(request, action, "need mask=HEX (at most 8 hex digits)")
        if mask & ~BIP320_MASK:
            return await self._bad_request(
                request, action, f"mask must be the BIP 320 bits {BIP320_MASK:08x} or a subset, got {mask:08x}"
            )
        server = self.pool.server
        count = server.set_version_mask(mask) if server else 0
        await self._record(request, action, {"mask": f"{mask:08x}"}, "ok", miners=count)
        return web.json_response({"sent": count, "mask": f"{mask:08x}"})

    async def allowlist_reload(self, request: web.Request) -> web.Response:
        """Re-read the allowlist file now; a bad file is refused (422, each bad line named), the old list kept."""
        action = "allowlist-reload"
        if (refusal := await self._authenticate(request, action)) is not None:
            return refusal
        try:
            result = await self.pool.reload_allowlist("admin")
        except ReloadRefused as exc:
            await self._record(request, action, {}, "refused", reason="bad-allowlist")
            return web.json_response({"error": str(exc), "kept": True}, status=422)
        await self._record(request, action, result.as_dict(), "ok", miners=result.draining)
        return web.json_response(result.as_dict())

    # ---- authentication ------------------------------------------------------------------------------------

    async def _authenticate(self, request: web.Request, action: str) -> web.Response | None:
        """None when the request may act; otherwise the refusal, already counted, logged and audited."""
        reason, status = self._refusal(request)
        if reason is None:
            return None
        self.pool.metrics.admin_auth_failures.labels(reason).inc()
        await self._record(request, action, self._params(request), "refused", reason=reason, authenticated=False)
        messages = {
            "query-token": "tokens in the URL are refused; send Authorization: Bearer TOKEN",
            "cross-origin": "cross-origin requests are refused",
        }
        body = {"error": messages.get(reason, "admin API needs Authorization: Bearer TOKEN")}
        headers = {"WWW-Authenticate": 'Bearer realm="pool-admin"'} if status == 401 else None
        return web.json_response(body, status=status, headers=headers)

    def _refusal(self, request: web.Request) -> tuple[str | None, int]:
        if any(key.lower() in TOKEN_QUERY_KEYS for key in request.query) or any(
            hmac.compare_digest(value.encode(), self._token) for value in request.query.values()
        ):
            return "query-token", 401
        if not self._same_origin(request):
            return "cross-origin", 403
        header = request.headers.get("Authorization")
        if header is None:
            return "missing", 401
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return "malformed", 401
        if not hmac.compare_digest(given.strip().encode(), self._token):
            return "wrong", 401
        return None, 200

    def _same_origin(self, request: web.Request) -> bool:
        """Browsers name the page that sent a request; only this listener's own address may (tools send none).

        The allowed origins come from the socket the request arrived on, not from the Host header, which a
        DNS-rebinding page controls.
        """
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
            return False
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        if not sockname:
            return False
        ip, port = str(sockname[0]), int(sockname[1])
        hosts = {f"[{ip}]" if ":" in ip else ip}
        with_loopback = False
        try:
            with_loopback = ipaddress.ip_address(ip).is_loopback
        except ValueError:
            pass
        if with_loopback:
            hosts |= {"localhost", "127.0.0.1", "[::1]"}
        return origin.rstrip("/").lower() in {f"http://{h}:{port}" for h in hosts}

    def _params(self, request: web.Request) -> dict[str, str]:
        """The query, bounded and without anything that could be a token, for logs and the audit log."""
        params: dict[str, str] = {}
        for key, value in list(request.query.items())[:MAX_LOGGED_PARAMS]:
            if key.lower() in TOKEN_QUERY_KEYS or hmac.compare_digest(value.encode(), self._token):
                params[key[:MAX_PARAM_CHARS]] = "<redacted>"
            else:
                params[key[:MAX_PARAM_CHARS]] = value[:MAX_PARAM_CHARS]
        return params

    # ---- record keeping ------------------------------------------------------------------------------------

    async def _bad_request(self, request: web.Request, action: str, message: str) -> web.Response:
        await self._record(request, action, self._params(request), "refused", reason="bad-request")
        return web.json_response({"error": message}, status=400)

    async def _record(self, request: web.Request, action: str, params: dict[str, Any], outcome: str, *,
                      reason: str | None = None, miners: int = 0, authenticated: bool = True) -> None:
        peername = request.transport.get_extra_info("peername") if request.transport is not None else None
        peer = f"{peername[0]}:{peername[1]}" if peername else "?"
        entry: dict[str, Any] = {"peer": peer, "action": action, "params": params, "outcome": outcome,
                                 "miners": miners}
        if reason is not None:
            entry["reason"] = reason
        if authenticated:
            self.pool.metrics.admin_actions.labels(action, outcome).inc()
        (log.info if outcome == "ok" else log.warning)("admin_action", **entry)
        if outcome != "ok" and not authenticated:
            if not self._refused_audit.take(time.monotonic()):
                self._unaudited += 1
                return
            if self._unaudited:
                entry["unaudited_before"] = self._unaudited
                self._unaudited = 0
        ledger = self.pool.ledger
        if ledger is None:
            return
        try:
            await ledger.submit(lambda conn: book.audit(conn, "admin_action", entry))
        except Exception as exc:  # the action stands; the operator must learn that its record did not
            log.error("admin_audit_failed", error=str(exc), **entry)
