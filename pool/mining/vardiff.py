"""Per-connection variable difficulty: steer each miner towards a target share interval.

Pure: the caller feeds share times and reads back the difficulty to use for the next job. The estimate is
the accepted difficulty per second over a sliding window, so a miner's hashrate is measured in the units
shares are credited in; retargets are limited in frequency and to a factor band to avoid oscillation, while a
brand-new fast ASIC (many shares within seconds) is ramped up at once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VardiffConfig:
    """Bounds and pacing; ``target_interval`` is the wanted seconds per share."""

    start: float = 1.0
    minimum: float = 0.001
    maximum: float = 2.0**40
    target_interval: float = 10.0
    retarget_seconds: float = 30.0
    window_shares: int = 32
    tolerance: float = 0.3  # no change while the rate is within ±30 % of target
    max_step: float = 16.0


class Vardiff:
    """Difficulty state of one connection."""

    __slots__ = ("config", "floor", "difficulty", "_shares", "_since", "_last_retarget", "fixed")

    def __init__(self, config: VardiffConfig, now: float, start: float | None = None) -> None:
        self.config = config
        self.floor = config.minimum
        self.difficulty = self.clamp(start if start is not None else config.start)
        # Allocated at the first share: most of a pool's connections are idle at any moment.
        self._shares: deque[tuple[float, float]] | None = None
        self._since = now
        self._last_retarget = now
        self.fixed = False

    def clamp(self, difficulty: float) -> float:
        return min(max(difficulty, self.floor), self.config.maximum)

    def set_floor(self, difficulty: float) -> float:
        """The miner's own minimum (BIP 310 ``minimum-difficulty``), within the pool's bounds."""
        self.floor = min(max(difficulty, self.config.minimum), self.config.maximum)
        self.difficulty = self.clamp(self.difficulty)
        return self.difficulty

    def suggest(self, difficulty: float, now: float) -> float:
        """A miner's hint: adopted (within bounds) as the new starting point, not as a floor."""
        if not self.fixed:
            self.difficulty = self.clamp(difficulty)
            self._shares = None
            self._since = self._last_retarget = now
        return self.difficulty

    def fix(self, difficulty: float) -> float:
        """Operator/worker-fixed difficulty (``d=`` password option): vardiff stops adjusting."""
        self.difficulty = self.clamp(difficulty)
        self.fixed = True
        return self.difficulty

    def record_share(self, difficulty: float, now: float) -> float | None:
        """Note an accepted share; return a new difficulty when a retarget is due, else None."""
        shares = self._shares
        if shares is None:
            shares = self._shares = deque(maxlen=self.config.window_shares)
        shares.append((now, difficulty))
        if self.fixed:
            return None
        elapsed = now - self._since
        count = len(shares)
        # Fast start: a miner far quicker than wanted gets raised right away.
        fast = count >= 4 and elapsed > 0 and elapsed < count * self.config.target_interval / 8
        if not fast and (now - self._last_retarget < self.config.retarget_seconds or count < 2):
            return None
        return self._retarget(now)

    def idle_check(self, now: float) -> float | None:
        """Lower difficulty for a miner that has gone quiet (too hard for it); call periodically."""
        if self.fixed:
            return None
        quiet = now - (self._shares[-1][0] if self._shares else self._since)
        if quiet < max(self.config.retarget_seconds, 4 * self.config.target_interval):
            return None
        new = self.clamp(self.difficulty / 4)
        self._last_retarget = now
        self._since = now
        self._shares = None
        if new == self.difficulty:
            return None
        self.difficulty = new
        return new

    def _retarget(self, now: float) -> float | None:
        shares = self._shares
        assert shares is not None  # called right after a share was recorded
        if len(shares) == shares.maxlen:
            # The window is full and older shares have fallen out: measure from the oldest share kept,
            # counting only the work done after it.
            span = now - shares[0][0]
            work = sum(d for _, d in list(shares)[1:])
        else:
            span = now - self._since
            work = sum(d for _, d in shares)
        work_rate = work / max(span, 1e-3)  # difficulty-1 units per second
        ideal = work_rate * self.config.target_interval
        ratio = ideal / self.difficulty
        self._last_retarget = now
        if 1 - self.config.tolerance <= ratio <= 1 + self.config.tolerance:
            return None
        ratio = min(max(ratio, 1 / self.config.max_step), self.config.max_step)
        new = self.clamp(self.difficulty * ratio)
        self._shares = None
        self._since = now
        if new == self.difficulty:
            return None
        self.difficulty = new
        return new
