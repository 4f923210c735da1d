"""The site controller: the pure site book and curtailment states, driven by the server's calls and a clock.

The Stratum server makes four calls (``admit`` and ``authorized`` at login, ``share``, ``closed``) and asks
``paused`` before sending a session work; this controller answers them from ``SiteBook`` and each site's
``Curtailment``. Its loop (supervised by the app) evaluates orders and schedules against an injectable
wall clock (tests step a fake clock instead of waiting for evening), closes curtailed sites' connections at
the configured pace, and writes every curtailment start and end, with the hashrate and power shed, to the
ledger's audit log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from pool.ledger import book as audit_book
from pool.programme.curtail import Change, Curtailment, ScheduleState, schedule_at
from pool.programme.siteconfig import UNASSIGNED, ProgrammeConfig
from pool.programme.sites import SiteBook

log = structlog.get_logger("pool.sites")

TICK_SECONDS = 0.25
MAX_LISTED_SILENT = 200


class SessionCloser(Protocol):
    def close_sessions(self, sessions: list[int], reason: str, message: str) -> int:
        """Tell each session ``message`` (client.show_message) and close it; returns how many were open."""
        ...


class AuditSink(Protocol):
    def submit(self, op: Callable[[Any], Any]) -> asyncio.Future[Any]: ...


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts is not None else None


def _short(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


class SiteController:
    """Sites, energy and curtailment of one pool."""

    def __init__(self, programme: ProgrammeConfig, clock: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self.programme = programme
        self.clock = clock
        self.mono = mono
        self.book = SiteBook(programme, clock())
        self.curtailments = {
            s.name: Curtailment(programme.curtail_close_rate, programme.resume_admit_rate, mono())
            for s in programme.sites
        }
        self.paused: set[str] = set()  # sites whose miners get no work
        self.server: SessionCloser | None = None
        self.ledger: AuditSink | None = None
        self.listed_site: Callable[[bytes], str] | None = None  # payout script -> the allowlist's site column
        self._restored: set[str] = set()  # manual orders restored at start, not yet applied
        self._schedules: dict[str, tuple[float, float, ScheduleState]] = {}  # site -> (from, until, state)

    # ---- calls from the Stratum server ---------------------------------------------------------------------

    def admit(self, ip: str, worker_name: str, script: bytes = b"") -> tuple[str, str | None]:
        """The connection's site (``script``: the payout script, for the allowlist's site column), and a refusal
        message when its site is not taking logins now."""
        listed = self.listed_site(script) if self.listed_site is not None and script else ""
        site = self.book.assign(ip, worker_name, listed)
        curtailment = self.curtailments.get(site)
        if curtailment is None:
            return site, None
        why = curtailment.admit(self.mono())
        if why is None:
            return site, None
        if why == "curtailed" and curtailment.active is not None:
            return site, (f"Site {site} is curtailed until {_short(curtailment.active.until)} (grid load);"
                          " please reconnect later")
        return site, (f"Site {site} is resuming after a curtailment and admits"
                      f" {curtailment.admit_rate:g} miners per second; retry in a few seconds")

    def authorized(self, session: int, site: str, worker: str, worker_name: str) -> None:
        self.book.authorized(session, site, worker, worker_name, self.clock())

    def share(self, site: str, worker: str, worker_name: str, difficulty: float | None, is_block: bool) -> None:
        self.book.share(site, worker, worker_name, difficulty, is_block, self.clock())

    def closed(self, session: int) -> None:
        self.book.closed(session, self.clock())

    # ---- operator orders -----------------------------------------------------------------------------------

    def schedule(self, site: str, now: float) -> ScheduleState:
        """The site's schedule at ``now``; the answer is kept until the next window boundary (it is evaluated
        four times a second, and a clock stepped backwards just recomputes it)."""
        cached = self._schedules.get(site)
        if cached is not None and cached[0] <= now < cached[1]:
            return cached[2]
        config = self.programme.site(site)
        state = schedule_at(config.curtailment if config else (), now)
        boundaries = [t for t in (state.active_until, state.next_start) if t is not None]
        self._schedules[site] = (now, min(boundaries, default=now + 3600.0), state)
        return state

    def curtail(self, site: str, until: float) -> list[Change]:
        self.curtailments[site].order(until)
        return self.tick()

    def resume(self, site: str) -> tuple[bool, list[Change]]:
        was = self.curtailments[site].resume(self.schedule(site, self.clock()))
        return was, self.tick()

    def restore(self, records: list[dict[str, Any]]) -> list[str]:
        """At start: manual curtailments still due, from the audit log's ``site_curtailment`` records in order
        (an operator's order outlives a restart; schedules come back from the config by themselves). Returns
        the sites whose order was restored; they are applied, and audited again, at the next tick."""
        last: dict[str, dict[str, Any]] = {}
        for record in records:
            if record.get("site") in self.curtailments:
                last[record["site"]] = record
        now = self.clock()
        restored = []
        for site, record in last.items():
            until = record.get("until")
            if record.get("change") != "start" or record.get("reason") != "manual" or not isinstance(until, str):
                continue
            try:
                ts = datetime.fromisoformat(until.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
            if ts > now:
                self.curtailments[site].order(ts)
                self._restored.add(site)
                restored.append(site)
        return restored

    # ---- the loop ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Evaluate orders and schedules and pace the closes, for the pool's lifetime (supervised)."""
        while True:
            self.tick()
            await asyncio.sleep(TICK_SECONDS)

    def tick(self) -> list[Change]:
        now, mono = self.clock(), self.mono()
        changes = []
        for site, curtailment in self.curtailments.items():
            change = curtailment.step(self.schedule(site, now), now, mono)
            if change is not None:
                self._apply(site, curtailment, change, now)
                changes.append(change)
                self._restored.discard(site)
            allowed = curtailment.closes_allowed(mono)
            if allowed and self.server is not None:
                sessions = self.book.sessions_of(site, allowed)
                if sessions:
                    assert curtailment.active is not None
                    message = (f"Site {site} is curtailed until {_short(curtailment.active.until)} (grid load);"
                               " please reconnect later")
                    curtailment.closed_some(self.server.close_sessions(sessions, "curtailed", message))
        return changes

    def _apply(self, site: str, curtailment: Curtailment, change: Change, now: float) -> None:
        state = self.book.sites[site]
        payload: dict[str, Any] = {"site": site, "change": change.kind, "reason": change.reason}
        if change.kind == "start":
            active = curtailment.active
            assert active is not None
            active.shed_hashrate = state.hashrate(now)
            active.shed_watts = state.power_watts(now)
            active.shed_miners = len(state.sessions)
            self.paused.add(site)
            self.book.set_curtailed(site, True, now)
            payload |= {"until": iso(change.until), "hashrate_shed": active.shed_hashrate,
                        "power_shed_watts": active.shed_watts, "miners": active.shed_miners}
            if site in self._restored:
                payload["restored"] = True  # an order given before the pool restarted
        else:
            self.paused.discard(site)
            self.book.set_curtailed(site, False, now)
            payload |= {"early": change.early, "seconds": now - change.since, "hashrate_shed": change.shed_hashrate,
                        "power_shed_watts": change.shed_watts, "miners": len(state.sessions),
                        "ramp_admit_rate": curtailment.admit_rate}
        (log.warning if change.kind == "start" else log.info)("site_curtailment", **payload)
        self._audit(payload)

    def _audit(self, payload: dict[str, Any]) -> None:
        if self.ledger is None:
            return
        try:
            done = self.ledger.submit(lambda conn: audit_book.audit(conn, "site_curtailment", payload))
        except RuntimeError as exc:  # no running loop (a test driving tick() by hand outside one)
            log.error("site_curtailment_audit_failed", error=str(exc), **payload)
            return
        done.add_done_callback(lambda f: f.cancelled() or f.exception() is None or log.error(
            "site_curtailment_audit_failed", error=str(f.exception()), **payload))

    # ---- views ---------------------------------------------------------------------------------------------

    def site_names(self) -> list[str]:
        return [*(s.name for s in self.programme.sites), UNASSIGNED]

    def curtailment_view(self, site: str, now: float, mono: float) -> dict[str, Any]:
        curtailment = self.curtailments.get(site)
        if curtailment is None:  # unassigned miners are never curtailed
            return {"state": "normal", "reason": None, "since": None, "until": None, "next_window": None,
                    "last_end": None, "starts": {}, "closed": 0, "refused": {}}
        active = curtailment.active
        schedule = self.schedule(site, now)
        upcoming = None
        if schedule.next_start is not None:
            upcoming = {"start": iso(schedule.next_start), "end": iso(schedule.next_end)}
        view: dict[str, Any] = {
            "state": curtailment.state(mono),
            "reason": active.reason if active else None,
            "since": iso(active.since) if active else None,
            "until": iso(active.until) if active else None,
            "next_window": upcoming,
            "last_end": iso(curtailment.last_end),
            "starts": dict(curtailment.starts),
            "closed": curtailment.closed,
            "refused": dict(curtailment.refused),
        }
        if active is not None:
            view |= {"hashrate_shed": active.shed_hashrate, "power_shed_watts": active.shed_watts,
                     "miners_shed": active.shed_miners}
        return view

    def site_view(self, site: str, detail: bool = False) -> dict[str, Any]:
        """One site for ``/api/sites``; with ``detail`` its silent workers are listed by name."""
        now, mono = self.clock(), self.mono()
        body = self.book.summary(site, now, MAX_LISTED_SILENT if detail else 0)
        body["curtailment"] = self.curtailment_view(site, now, mono)
        return body

    def sites_view(self) -> dict[str, Any]:
        return {
            "sites": [self.site_view(name) for name in self.site_names()],
            "silent_after_minutes": self.programme.silent_after_minutes,
            "generated_at": self.clock(),
        }
