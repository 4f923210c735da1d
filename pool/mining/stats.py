"""Rolling hashrate and last-share bookkeeping per worker, for the stats API and per-worker metrics.

Pure and bounded: per worker a ring of per-minute difficulty sums over the window, and at most
``max_workers`` workers tracked (the least recently active are forgotten first).

The estimate is accepted difficulty × 2**32 divided by the time the window really observed: while the window
is not yet full (a pool, worker or site that started less than a window ago) that is the time since it
started, not the whole window. Dividing a first minute's shares by ten minutes read ~10x low for the first
minutes after a start. ``RateWindow`` is the one estimator; the pool, every worker and every site use it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

HASHES_PER_DIFF1 = 2**32
# The shortest span an estimate divides by: right after a start one share over a few seconds would read as a
# huge rate; below this the estimate ramps up instead (it is exact again from this age on).
MIN_SPAN = 30.0


@dataclass(slots=True)
class RateWindow:
    """Accepted difficulty per minute over a sliding window, and when observation started.

    ``started`` is when the source was first seen (a worker's authorize, a site's first miner, the pool's
    start); after a silence longer than the window it starts again, so a returning worker is not averaged
    over time it was away.
    """

    started: float
    last: float = 0.0  # last time anything was observed (authorize or share)
    buckets: dict[int, float] = field(default_factory=dict)  # minute -> accepted difficulty

    def touch(self, now: float, window_seconds: float) -> None:
        """Seen now (an authorize): a source idle for longer than the window starts a fresh observation."""
        if now - max(self.last, self.started) > window_seconds:
            self.started = now
            self.buckets.clear()
        self.last = max(self.last, now)

    def add(self, now: float, difficulty: float, window_seconds: float) -> None:
        self.touch(now, window_seconds)
        minute = int(now // 60)
        self.buckets[minute] = self.buckets.get(minute, 0.0) + difficulty
        window_minutes = max(1, int(window_seconds // 60))
        if len(self.buckets) > window_minutes + 1:
            for old in [m for m in self.buckets if m <= minute - window_minutes]:
                del self.buckets[old]

    def hashrate(self, now: float, window_seconds: float) -> float:
        """Hashes per second: accepted difficulty × 2**32 over the time the counted buckets cover.

        The counted buckets start at the first whole minute inside the window, so the span is up to a minute
        shorter than the window; and it is never longer than the time since ``started``.
        """
        first = int((now - window_seconds) // 60)
        total = sum(d for m, d in self.buckets.items() if m > first)
        if not total:
            return 0.0
        span = now - max((first + 1) * 60.0, self.started)
        return total * HASHES_PER_DIFF1 / max(span, MIN_SPAN)


@dataclass(slots=True)
class WorkerStat:
    address: str
    name: str
    rate: RateWindow
    last_share: float = 0.0
    accepted: int = 0
    rejected: int = 0

    @property
    def buckets(self) -> dict[int, float]:
        return self.rate.buckets

    def hashrate(self, now: float, window_seconds: float) -> float:
        return self.rate.hashrate(now, window_seconds)


class PoolStats:
    """Per-worker share statistics, bounded in the number of workers.

    The pool's hashrate is the sum of its workers' estimates, each over the time that worker was observed.
    """

    def __init__(self, window_seconds: float = 600.0, max_workers: int = 100_000) -> None:
        self.window = window_seconds
        self.max_workers = max_workers
        self.workers: OrderedDict[tuple[str, str], WorkerStat] = OrderedDict()

    def _get(self, address: str, name: str, now: float) -> WorkerStat:
        key = (address, name)
        stat = self.workers.get(key)
        if stat is None:
            stat = self.workers[key] = WorkerStat(address, name, RateWindow(started=now, last=now))
            while len(self.workers) > self.max_workers:
                self.workers.popitem(last=False)
        else:
            self.workers.move_to_end(key)
        return stat

    def seen(self, address: str, name: str, now: float) -> None:
        """The worker authorized: its observation starts now (unless it is already being observed)."""
        self._get(address, name, now).rate.touch(now, self.window)

    def accepted(self, address: str, name: str, difficulty: float, now: float) -> None:
        stat = self._get(address, name, now)
        stat.accepted += 1
        stat.last_share = now
        stat.rate.add(now, difficulty, self.window)

    def rejected(self, address: str, name: str, now: float | None = None) -> None:
        stat = self._get(address, name, now if now is not None else 0.0)
        stat.rejected += 1

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
