"""Reading a running pool's figures the same way with one Stratum process or several.

With ``stratum.processes`` >= 2 the front-end processes' metrics reach the coordinator once a second or when it
asks (``PoolApp.refresh_live``, as before a scrape): ``metric`` asks first, then reads the merged registry that
``/metrics`` renders. ``metric_now`` reads it without asking (figures the coordinator keeps itself).
"""

from __future__ import annotations

from typing import Any


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
