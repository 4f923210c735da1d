"""Rolling hashrate and last-share bookkeeping per worker, for the stats API and per-worker metrics.

Pure and bounded: per worker a ring of per-minute difficulty sums over the window, and at most
``max_workers`` workers tracked (the least recently active are forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

HASHES_PER_DIFF1 = 2**32


@dataclass(slots=True)
class WorkerStat:
    address: str
    name: str
    last_share: float = 0.0
    accepted: int = 0
    rejected: int = 0
    buckets: dict[int, float] = field(default_factory=dict)  # minute -> accepted difficulty

    def add(self, minute: int, difficulty: float, window_minutes: int) -> None:
        self.buckets[minute] = self.buckets.get(minute, 0.0) + difficulty
        if len(self.buckets) > window_minutes + 1:
            for old in [m for m in self.buckets if m <= minute - window_minutes]:
                del self.buckets[old]

    def hashrate(self, now: float, window_seconds: float) -> float:
        """Hashes per second over the window: accepted difficulty × 2**32 / window."""
        first = int((now - window_seconds) // 60)
        total = sum(d for m, d in self.buckets.items() if m > first)
        return total * HASHES_PER_DIFF1 / window_seconds


class PoolStats:
    """Per-worker share statistics, bounded in the number of workers."""

    def __init__(self, window_seconds: float = 600.0, max_workers: int = 100_000) -> None:
        self.window = window_seconds
        self._window_minutes = max(1, int(window_seconds // 60))
        self.max_workers = max_workers
        self.workers: OrderedDict[tuple[str, str], WorkerStat] = OrderedDict()

    def _get(self, address: str, name: str) -> WorkerStat:
        key = (address, name)
        stat = self.workers.get(key)
        if stat is None:
            stat = self.workers[key] = WorkerStat(address, name)
            while len(self.workers) > self.max_workers:
                self.workers.popitem(last=False)
        else:
            self.workers.move_to_end(key)
        return stat

    def accepted(self, address: str, name: str, difficulty: float, now: float) -> None:
        stat = self._get(address, name)
        stat.accepted += 1
        stat.last_share = now
        stat.add(int(now // 60), difficulty, self._window_minutes)

    def rejected(self, address: str, name: str) -> None:
        self._get(address, name).rejected += 1

    def pool_hashrate(self, now: float) -> float:
        return sum(s.hashrate(now, self.window) for s in self.workers.values())

    def active_workers(self, now: float) -> int:
        return sum(1 for s in self.workers.values() if now - s.last_share < self.window)

    def for_address(self, address: str, now: float) -> list[dict[str, object]]:
        return [
            {
                "worker": s.name,
                "hashrate": s.hashrate(now, self.window),
                "accepted": s.accepted,
                "rejected": s.rejected,
                "last_share": s.last_share or None,
            }
            for (addr, _), s in self.workers.items()
            if addr == address
        ]
