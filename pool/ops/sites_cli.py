"""``pool sites [--json]``: the running pool's sites, read from its HTTP API (``GET /api/sites``).

The live figures (connected miners, hashrate, power, curtailment state, silent workers) exist only in the
running pool, not in the ledger, so the command asks the pool: by default at the metrics listener of
``--config`` (``metrics.host``/``metrics.port``), or of the embedded mode (127.0.0.1:9100), or at ``--url``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from pool.config import Config
from pool.reports import render

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
