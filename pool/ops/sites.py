"""The sites feature's operator surfaces: ``pool_site_*`` metrics, ``/api/sites``, the curtailment admin routes
and the ``pool sites`` command.

Metrics are collected from the site controller at scrape time instead of per-share counter calls: the site
book already counts shares, difficulty and blocks, so the hot path pays nothing extra and a multi-process pool
can export the same book. The label set is bounded: the configured sites plus ``unassigned``. Scrapes run on
the event loop (aiohttp handler), the thread that changes the book.

``POST /admin/sites/NAME/curtail?until=ISO8601`` curtails a site now until ``until`` (a time with a UTC
offset, at most ``MAX_CURTAIL_DAYS`` ahead); ``POST /admin/sites/NAME/resume`` ends a curtailment early (a
manual one, or the scheduled window in force). Both go through the admin API's token check, logging, metrics
and audit (pool/ops/admin.py); the controller audits the curtailment's own start and end with what was shed.

``pool sites [--json]`` reads the running pool's ``GET /api/sites``: the live figures (connected miners,
hashrate, power, curtailment state, silent workers) exist only in the running pool, not in the ledger. It asks
the metrics listener of ``--config`` (``metrics.host``/``metrics.port``), of the embedded mode (127.0.0.1:9100),
or ``--url``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pool.config import Config
from pool.reports import render

if TYPE_CHECKING:
    from pool.app import PoolApp
    from pool.ops.admin import AdminApi
    from pool.programme.controller import SiteController


class SiteCollector(Collector):
    """``pool_site_*`` from the site controller, at every scrape."""

    def __init__(self, sites: SiteController) -> None:
        self.sites = sites

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are fixed, but values are only known at scrape time

    def collect(self) -> Iterator[Metric]:
        controller = self.sites
        now, mono = controller.clock(), controller.mono()
        book = controller.book

        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=["site"])

        miners = gauge("pool_site_connected_miners", "Open Stratum connections assigned to the site")
        workers = gauge("pool_site_workers", "Distinct worker names connected at the site")
        hashrate = gauge("pool_site_hashrate_hashes_per_second",
                         "Site hashrate from accepted difficulty (the pool's estimator, 10-minute window)")
        power = gauge("pool_site_power_watts", "Estimated site power: hashrate x J/TH (per worker pattern)")
        budget = gauge("pool_site_power_budget_watts", "The site's configured power budget (power_budget_kw)")
        ratio = gauge("pool_site_power_budget_ratio", "Estimated power / power budget")
        silent = gauge("pool_site_silent_workers",
                       "Workers with no accepted share for programme.silent_after_minutes (0 while curtailed)")
        curtailed = gauge("pool_site_curtailed", "1 while the site is curtailed (no work, logins refused)")
        ramping = gauge("pool_site_ramping", "1 while logins after a curtailment are admitted at the ramp rate")
        shed_hashrate = gauge("pool_site_curtailment_shed_hashes_per_second",
                              "Hashrate the site had when its current curtailment started (0 when none)")
        shed_power = gauge("pool_site_curtailment_shed_watts",
                           "Estimated power the site had when its current curtailment started (0 when none)")
        shares = CounterMetricFamily("pool_site_shares", "Shares judged for the site's miners, by result",
                                     labels=["site", "result"])
        difficulty = CounterMetricFamily("pool_site_accepted_difficulty",
                                         "Accepted difficulty at the site (rate() x 2**32 is hashrate)",
                                         labels=["site"])
        blocks = CounterMetricFamily("pool_site_blocks", "Blocks found by the site's miners", labels=["site"])
        starts = CounterMetricFamily("pool_site_curtailments", "Curtailments started, by reason (manual, schedule)",
                                     labels=["site", "reason"])
        ends = CounterMetricFamily("pool_site_curtailment_ends", "Curtailments ended, by reason (manual, schedule)",
                                   labels=["site", "reason"])
        closed = CounterMetricFamily("pool_site_curtailment_closed_connections",
                                     "Connections closed because their site was curtailed", labels=["site"])
        refused = CounterMetricFamily("pool_site_refused_logins",
                                      "Logins refused: site curtailed, or over the ramp rate after a curtailment",
                                      labels=["site", "reason"])
        for name in controller.site_names():
            state = book.sites[name]
            watts = state.power_watts(now)
            budget_watts = state.config.power_budget_kw * 1000.0 if state.config is not None else 0.0
            miners.add_metric([name], len(state.sessions))
            workers.add_metric([name], sum(1 for w in state.workers.values() if w.sessions))
            hashrate.add_metric([name], state.hashrate(now))
            power.add_metric([name], watts)
            budget.add_metric([name], budget_watts)
            if budget_watts:
                ratio.add_metric([name], watts / budget_watts)
            silent.add_metric([name], len(state.silent(now, book.silent_after)))
            shares.add_metric([name, "accepted"], state.accepted)
            shares.add_metric([name, "rejected"], state.rejected)
            difficulty.add_metric([name], state.accepted_difficulty)
            blocks.add_metric([name], state.blocks)
            curtailment = controller.curtailments.get(name)
            if curtailment is None:
                continue
            active = curtailment.active
            curtailed.add_metric([name], 1 if active is not None else 0)
            ramping.add_metric([name], 1 if curtailment.ramping(mono) else 0)
            shed_hashrate.add_metric([name], active.shed_hashrate if active else 0.0)
            shed_power.add_metric([name], active.shed_watts if active else 0.0)
            for reason, count in curtailment.starts.items():
                starts.add_metric([name, reason], count)
            for reason, count in curtailment.ends.items():
                ends.add_metric([name, reason], count)
            closed.add_metric([name], curtailment.closed)
            for reason, count in curtailment.refused.items():
                refused.add_metric([name, reason], count)
        yield from (miners, workers, hashrate, power, budget, ratio, silent, curtailed, ramping, shed_hashrate,
                    shed_power, shares, difficulty, blocks, starts, ends, closed, refused)


# ---- HTTP ----------------------------------------------------------------------------------------------

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
    """``GET /api/sites`` and ``GET /api/sites/NAME`` (read-only, on the metrics listener)."""

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

    async def site_of(request: web.Request, action: str) -> tuple[Any, str] | web.Response:
        """The controller and the site named in the path, or the refusal (no token, unknown site)."""
        if (refusal := await admin._authenticate(request, action)) is not None:
            return refusal
        controller = admin.pool.sites
        name = request.match_info["name"]
        if name not in controller.curtailments:
            return await admin._bad_request(request, action, f"no configured site {name[:64]!r}")
        return controller, name

    async def curtail(request: web.Request) -> web.Response:
        action = "site-curtail"
        found = await site_of(request, action)
        if isinstance(found, web.Response):
            return found
        controller, name = found
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
        found = await site_of(request, action)
        if isinstance(found, web.Response):
            return found
        controller, name = found
        was, _ = controller.resume(name)
        await admin._record(request, action, {"site": name, "was_curtailed": was}, "ok")
        return web.json_response(_state(admin.pool, name) | {"was_curtailed": was})

    return [web.post("/admin/sites/{name}/curtail", curtail), web.post("/admin/sites/{name}/resume", resume)]


def _state(pool: PoolApp, name: str) -> dict[str, Any]:
    view = pool.sites.site_view(name)
    return {"site": name, "curtailment": view["curtailment"], "miners": view["miners"]}


# ---- pool sites ------------------------------------------------------------------------------------------

TIMEOUT = 10.0


def api_url(config: Config) -> str:
    host = config.metrics_host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.metrics_port}"


def fetch_sites(base_url: str) -> dict[str, Any]:
    url = base_url.rstrip("/") + "/api/sites"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:  # noqa: S310 - an operator-given http URL
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConnectionError(f"cannot read {url}: {exc} (is the pool running with metrics enabled?)") from exc


def _kw(watts: float | None) -> str:
    return "" if watts is None else f"{watts / 1000:.1f}"


def _hashrate(value: float) -> str:
    for unit, scale in (("EH/s", 1e18), ("PH/s", 1e15), ("TH/s", 1e12), ("GH/s", 1e9), ("MH/s", 1e6), ("kH/s", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} H/s"


def render_sites(body: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(body, indent=2)
    header = ["site", "miners", "hashrate", "power_kw", "budget_kw", "budget_%", "accepted", "rejected", "blocks",
              "silent", "curtailment", "until", "next_window"]
    rows = []
    for site in body.get("sites", []):
        curtailment = site.get("curtailment") or {}
        upcoming = curtailment.get("next_window")
        share = site.get("budget_share")
        rows.append([
            site["name"], site["miners"], _hashrate(site["hashrate"]), _kw(site["power_watts"]),
            _kw(site["power_budget_watts"]) if site["power_budget_watts"] else "",
            f"{share * 100:.0f}" if share is not None else "", site["accepted"], site["rejected"], site["blocks"],
            site["silent_workers"], curtailment.get("state", "normal"), curtailment.get("until") or "",
            f"{upcoming['start']} - {upcoming['end']}" if upcoming else "",
        ])
    return render((header, rows), False)
