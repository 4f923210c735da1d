"""Defences against hostile or broken clients: rate limits, invalid-share escalation and temporary bans.

Pure bookkeeping with explicit clocks, so tests drive it without sockets; the server asks and acts.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum


class TokenBucket:
    """Allows ``rate`` events per second with bursts of ``burst``."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class Escalation(Enum):
    """What to do about a miner whose shares keep failing, mildest first."""

    NONE = "none"
    FRESH_WORK = "fresh-work"  # maybe it mines on old work: give it a clean job
    RECONNECT = "reconnect"  # ask it to reconnect (client.reconnect)
    DROP = "drop"  # close the connection and count a strike against the address


@dataclass(frozen=True, slots=True)
class GuardConfig:
    connect_rate_per_ip: float = 20.0
    connect_burst_per_ip: float = 200.0
    submit_rate: float = 50.0
    submit_burst: float = 500.0
    invalid_share_limit: int = 50
    strikes_to_ban: int = 3
    ban_seconds: float = 600.0
    max_tracked_ips: int = 100_000


class InvalidShareTracker:
    """Consecutive invalid shares of one connection → the escalation step to take now (once per step)."""

    __slots__ = ("limit", "consecutive", "_done")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.consecutive = 0
        self._done = Escalation.NONE

    def valid(self) -> None:
        self.consecutive = 0
        self._done = Escalation.NONE

    def invalid(self) -> Escalation:
        self.consecutive += 1
        steps = [(3, Escalation.DROP), (2, Escalation.RECONNECT), (1, Escalation.FRESH_WORK)]
        for multiple, step in steps:
            if self.consecutive >= multiple * self.limit:
                if step != self._done:
                    self._done = step
                    return step
                return Escalation.NONE
        return Escalation.NONE


class AddressGuard:
    """Per-IP connection rate limits, strikes and temporary bans; bounded in the IPs it remembers."""

    def __init__(self, config: GuardConfig) -> None:
        self.config = config
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._strikes: OrderedDict[str, list[float]] = OrderedDict()
        self._bans: dict[str, float] = {}

    def _trim(self, table: OrderedDict[str, object]) -> None:
        while len(table) > self.config.max_tracked_ips:
            table.popitem(last=False)

    def banned(self, ip: str, now: float) -> bool:
        until = self._bans.get(ip)
        if until is None:
            return False
        if now >= until:
            del self._bans[ip]
            return False
        return True

    def allow_connect(self, ip: str, now: float) -> bool:
        """False when the address is banned or connects faster than allowed."""
        if self.banned(ip, now):
            return False
        bucket = self._buckets.get(ip)
        if bucket is None:
            bucket = self._buckets[ip] = TokenBucket(
                self.config.connect_rate_per_ip, self.config.connect_burst_per_ip, now
            )
            self._trim(self._buckets)  # type: ignore[arg-type]
        else:
            self._buckets.move_to_end(ip)
        return bucket.take(now)

    def strike(self, ip: str, now: float) -> bool:
        """Count a dropped hostile connection; True when the address is now banned."""
        window = self.config.ban_seconds
        strikes = [t for t in self._strikes.get(ip, []) if now - t < window] + [now]
        self._strikes[ip] = strikes
        self._strikes.move_to_end(ip)
        self._trim(self._strikes)  # type: ignore[arg-type]
        if len(strikes) >= self.config.strikes_to_ban:
            self._bans[ip] = now + window
            del self._strikes[ip]
            return True
        return False

    @property
    def bans(self) -> dict[str, float]:
        return dict(self._bans)
