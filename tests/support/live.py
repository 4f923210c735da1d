"""Reading a running pool's figures the same way with one Stratum process or several.

With ``stratum.processes`` >= 2 the front-end processes' metrics reach the coordinator once a second or when it
asks (``PoolApp.refresh_live``, as before a scrape): ``metric`` asks first, then reads the merged registry that
``/metrics`` renders. ``metric_now`` reads it without asking (figures the coordinator keeps itself).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)


def metric_now(app: Any, name: str, labels: dict[str, str] | None = None) -> float | None:
    wanted = labels or {}
    for family in app.metrics_registry().collect():
        for sample in family.samples:
            if sample.name == name and sample.labels == wanted:
                return float(sample.value)
    return None


async def metric(app: Any, name: str, labels: dict[str, str] | None = None) -> float | None:
    await app.refresh_live()
    return metric_now(app, name, labels)


def several_processes(app: Any) -> bool:
    return app.config.stratum.processes > 1


async def http(method: str, port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request to the pool's HTTP listener on 127.0.0.1: the status and the body, parsed when it is JSON."""
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session:
        async with session.request(method, f"http://127.0.0.1:{port}{path}", headers=headers or {}) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text
