"""Sites: which site each miner belongs to, and each site's miners, hashrate, power, shares and silent workers.

Pure bookkeeping fed by four calls from the Stratum server (``assign`` and ``authorized`` at authorize,
``share`` for every judged share, ``closed`` when a connection ends), each with the time passed in. Nothing
here reads a clock or touches a socket, so a multi-process front end can relay the same calls to one book.

A miner belongs to the first configured site it matches, in config order: a site with ``cidrs`` matches
connections from those networks, one with ``worker_prefix`` matches worker names (the part after the dot)
that start with it, and one with both needs both. Anything else is ``unassigned``. The site is decided once
per connection, by its first authorized worker. When no site's rules match and the allowlist
(``authorization.allowlist_file``) names a configured site for the worker's payout address, that site.

Estimated power is hashrate × J/TH: each worker's shares are counted under the efficiency of the first
``worker_efficiency`` pattern its name matches (else the site's fleet average), one rate window per class.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from pool.mining.stats import RateWindow
from pool.programme.siteconfig import UNASSIGNED, ProgrammeConfig, SiteConfig

WINDOW_SECONDS = 600.0  # the same window as the pool's own estimate
MAX_WORKERS_PER_SITE = 100_000  # least recently active forgotten first
FORGET_AFTER = 24 * 3600.0  # a disconnected worker silent this long is no longer listed


@dataclass(slots=True)
class SiteWorker:
    """One worker name seen at a site."""

    first_seen: float
    efficiency_class: int
    last_share: float = 0.0
    sessions: int = 0  # connections now open under this worker name at this site

    def quiet_since(self, resumed_at: float) -> float:
        return max(self.last_share, self.first_seen, resumed_at)


@dataclass(slots=True)
class SiteState:
    """Live figures of one site (or of the unassigned miners)."""

    config: SiteConfig | None
    efficiencies: tuple[float, ...]  # J/TH per class: the fleet average first, then each pattern's
    rates: list[RateWindow]
    sessions: set[int] = field(default_factory=set)
    workers: OrderedDict[str, SiteWorker] = field(default_factory=OrderedDict)
    accepted: int = 0
    rejected: int = 0
    accepted_difficulty: float = 0.0
    blocks: int = 0
    resumed_at: float = 0.0  # end of the last curtailment: silence is counted from then
    curtailed: bool = False  # while curtailed, no worker is silent (they were sent away)

    @property
    def name(self) -> str:
        return self.config.name if self.config is not None else UNASSIGNED

    def efficiency_class(self, worker_name: str) -> int:
        if self.config is not None:
            for i, (pattern, _) in enumerate(self.config.worker_efficiency, start=1):
                if fnmatch.fnmatchcase(worker_name, pattern):
                    return i
        return 0

    def hashrate(self, now: float) -> float:
        return sum(rate.hashrate(now, WINDOW_SECONDS) for rate in self.rates)

    def power_watts(self, now: float) -> float:
        """Hashrate × J/TH per efficiency class; unassigned miners have no efficiency, so no estimate."""
        if self.config is None:
            return 0.0
        return sum(rate.hashrate(now, WINDOW_SECONDS) / 1e12 * jth
                   for rate, jth in zip(self.rates, self.efficiencies, strict=True))

    def silent(self, now: float, after_seconds: float) -> list[tuple[str, SiteWorker]]:
        if self.curtailed:
            return []
        out = []
        for name, w in self.workers.items():
            quiet = now - w.quiet_since(self.resumed_at)
            if quiet >= after_seconds and (w.sessions or quiet <= FORGET_AFTER):  # gone for a day: not listed
                out.append((name, w))
        return out


def _state(config: SiteConfig | None, now: float) -> SiteState:
    if config is None:
        efficiencies: tuple[float, ...] = (0.0,)
    else:
        efficiencies = (config.efficiency_j_per_th, *(jth for _, jth in config.worker_efficiency))
    return SiteState(config, efficiencies, [RateWindow(started=now, last=now) for _ in efficiencies])


class SiteBook:
    """Every site's live figures; bounded (configured sites + unassigned, workers capped per site)."""

    def __init__(self, programme: ProgrammeConfig, now: float) -> None:
        self.programme = programme
        self.silent_after = programme.silent_after_minutes * 60.0
        self.sites: dict[str, SiteState] = {s.name: _state(s, now) for s in programme.sites}
        self.sites[UNASSIGNED] = _state(None, now)
        # session -> (site, worker names logged in on it): a tuple, as most connections carry one worker
        self._sessions: dict[int, tuple[str, tuple[str, ...]]] = {}

    # ---- calls from the server -----------------------------------------------------------------------------

    def assign(self, ip: str, worker_name: str, listed_site: str = "") -> str:
        """The site of a connection from ``ip`` whose first worker is named ``worker_name``; ``listed_site`` is
        the site the allowlist gives its payout address, used when no site's rules match."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            address = None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for site in self.programme.sites:
            if site.cidrs and (address is None or not any(address in net for net in site.cidrs)):
                continue
            if site.worker_prefix and not worker_name.startswith(site.worker_prefix):
                continue
            return site.name
        return listed_site if listed_site in self.sites else UNASSIGNED

    def authorized(self, session: int, site: str, worker: str, worker_name: str, now: float) -> None:
        """A worker (``ADDRESS.NAME``; ``worker_name`` is NAME) logged in on a connection of ``site``."""
        state = self.sites[site]
        known = self._sessions.get(session)
        if known is None:
            state.sessions.add(session)
            known = (site, ())
        site, names = known
        seen = self._worker(state, worker, worker_name, now)
        state.rates[seen.efficiency_class].touch(now, WINDOW_SECONDS)  # observed from its first worker on
        if worker not in names:
            self._sessions[session] = (site, (*names, worker))
            seen.sessions += 1

    def share(self, site: str, worker: str, worker_name: str, difficulty: float | None, is_block: bool,
              now: float) -> None:
        """A judged share: ``difficulty`` when accepted, None when rejected; ``is_block`` when a block was sent."""
        state = self.sites.get(site)
        if state is None:
            return
        if is_block:  # a stale share may still have found (and sent) a block
            state.blocks += 1
        if difficulty is None:
            state.rejected += 1
            return
        seen = self._worker(state, worker, worker_name, now)
        seen.last_share = now
        state.accepted += 1
        state.accepted_difficulty += difficulty
        state.rates[seen.efficiency_class].add(now, difficulty, WINDOW_SECONDS)

    def closed(self, session: int, now: float) -> None:
        known = self._sessions.pop(session, None)
        if known is None:
            return
        site, names = known
        state = self.sites[site]
        state.sessions.discard(session)
        for name in names:
            seen = state.workers.get(name)
            if seen is not None:
                seen.sessions = max(0, seen.sessions - 1)

    # ---- calls from the curtailment controller -------------------------------------------------------------

    def set_curtailed(self, site: str, curtailed: bool, now: float) -> None:
        state = self.sites[site]
        state.curtailed = curtailed
        if not curtailed:
            state.resumed_at = now

    def sessions_of(self, site: str, limit: int) -> list[int]:
        """Up to ``limit`` of the site's open sessions (any order: a curtailment closes them all)."""
        return list(itertools.islice(self.sites[site].sessions, limit))

    # ---- views ---------------------------------------------------------------------------------------------

    def _worker(self, state: SiteState, worker: str, worker_name: str, now: float) -> SiteWorker:
        seen = state.workers.get(worker)
        if seen is None:
            seen = state.workers[worker] = SiteWorker(now, state.efficiency_class(worker_name))
            self._prune(state, now)
        else:
            state.workers.move_to_end(worker)
        return seen

    def _prune(self, state: SiteState, now: float) -> None:
        workers = state.workers
        while len(workers) > MAX_WORKERS_PER_SITE:
            workers.popitem(last=False)
        # The least recently active come first: forget disconnected ones silent for a day.
        for name, seen in list(workers.items())[:16]:
            if seen.sessions == 0 and now - seen.quiet_since(0.0) > FORGET_AFTER:
                del workers[name]

    def summary(self, site: str, now: float, silent_limit: int = 0) -> dict[str, Any]:
        """One site's figures for the API and metrics; ``silent_limit`` silent workers listed by name."""
        state = self.sites[site]
        config = state.config
        power = state.power_watts(now)
        budget = config.power_budget_kw * 1000.0 if config is not None else 0.0
        silent = state.silent(now, self.silent_after)
        body: dict[str, Any] = {
            "name": state.name,
            "cidrs": [str(n) for n in config.cidrs] if config else [],
            "worker_prefix": config.worker_prefix if config else "",
            "miners": len(state.sessions),
            "workers": sum(1 for w in state.workers.values() if w.sessions),
            "hashrate": state.hashrate(now),
            "power_watts": power,
            "power_budget_watts": budget,
            "budget_share": power / budget if budget else None,
            "efficiency_j_per_th": config.efficiency_j_per_th if config else None,
            "accepted": state.accepted,
            "rejected": state.rejected,
            "accepted_difficulty": state.accepted_difficulty,
            "blocks": state.blocks,
            "silent_workers": len(silent),
        }
        if silent_limit:
            ranked = sorted(silent, key=lambda item: item[1].quiet_since(state.resumed_at))[:silent_limit]
            body["silent"] = [
                {"worker": name, "last_share": w.last_share or None, "connected": w.sessions > 0,
                 "silent_seconds": now - w.quiet_since(state.resumed_at)}
                for name, w in ranked
            ]
        return body
