"""HTTP routes of the sites feature: ``GET /api/sites[/NAME]`` (read-only) and the curtailment admin routes.

``POST /admin/sites/NAME/curtail?until=ISO8601`` curtails a site now until ``until`` (a time with a UTC
offset, at most ``MAX_CURTAIL_DAYS`` ahead); ``POST /admin/sites/NAME/resume`` ends a curtailment early (a
manual one, or the scheduled window in force). Both go through the admin API's token check, logging, metrics
and audit (pool/ops/admin.py); the controller audits the curtailment's own start and end with what was shed.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from pool.app import PoolApp
    from pool.ops.admin import AdminApi

MAX_CURTAIL_DAYS = 31


def parse_until(text: str, now: float) -> float:
    """An ISO 8601 instant with an offset (``2026-11-30T06:00:00Z``), in the future and within bounds."""
    if not text or len(text) > 64:
        raise ValueError("need until=ISO8601 with a UTC offset, e.g. 2026-11-30T06:00:00Z")
    try:
        when = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError as exc:
        raise ValueError(f"until={text!r} is not an ISO 8601 time") from exc
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"until={text!r} has no UTC offset; add Z or +HH:MM")
    ts = when.timestamp()
    if ts <= now:
        raise ValueError(f"until={text!r} is in the past")
    if ts > now + MAX_CURTAIL_DAYS * 86400:
        raise ValueError(f"until={text!r} is more than {MAX_CURTAIL_DAYS} days ahead")
    return ts


class SitesApi:
    def __init__(self, pool: PoolApp) -> None:
        self.pool = pool

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/sites", self.sites), web.get("/api/sites/{name}", self.site)]

    async def sites(self, request: web.Request) -> web.Response:
        return web.json_response(self.pool.sites.sites_view())

    async def site(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        controller = self.pool.sites
        if name not in controller.site_names():
            return web.json_response({"error": f"no site {name[:64]!r}"}, status=404)
        body = controller.site_view(name, detail=True)
        body["silent_after_minutes"] = controller.programme.silent_after_minutes
        return web.json_response(body)


def admin_routes(admin: AdminApi) -> list[web.RouteDef]:
    """The curtailment routes, mounted by the admin API beside its own."""

    async def curtail(request: web.Request) -> web.Response:
        action = "site-curtail"
        if (refusal := await admin._authenticate(request, action)) is not None:
            return refusal
        controller = admin.pool.sites
        name = request.match_info["name"]
        if name not in controller.curtailments:
            return await admin._bad_request(request, action, f"no configured site {name[:64]!r}")
        try:
            until = parse_until(request.query.get("until", ""), controller.clock())
        except ValueError as exc:
            return await admin._bad_request(request, action, str(exc))
        miners = len(controller.book.sites[name].sessions)
        controller.curtail(name, until)
        await admin._record(request, action, {"site": name, "until": request.query["until"]}, "ok", miners=miners)
        return web.json_response(_state(admin.pool, name))

    async def resume(request: web.Request) -> web.Response:
        action = "site-resume"
        if (refusal := await admin._authenticate(request, action)) is not None:
            return refusal
        controller = admin.pool.sites
        name = request.match_info["name"]
        if name not in controller.curtailments:
            return await admin._bad_request(request, action, f"no configured site {name[:64]!r}")
        was, _ = controller.resume(name)
        await admin._record(request, action, {"site": name, "was_curtailed": was}, "ok")
        return web.json_response(_state(admin.pool, name) | {"was_curtailed": was})

    return [web.post("/admin/sites/{name}/curtail", curtail), web.post("/admin/sites/{name}/resume", resume)]


def _state(pool: PoolApp, name: str) -> dict[str, Any]:
    view = pool.sites.site_view(name)
    return {"site": name, "curtailment": view["curtailment"], "miners": view["miners"]}
