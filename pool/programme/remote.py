"""Sites in a Stratum front-end process (``stratum.processes`` >= 2): the server's four site calls, answered
locally where they must be (at login) and reported to the coordinator process, which keeps the one site book.

The coordinator's ``SiteController`` decides every curtailment (manual orders, schedules, its clock) and keeps
every site's figures; a front-end only

- assigns a login's site (the same pure rules: ``SiteBook.assign``, with the allowlist's site column);
- refuses logins of a curtailed site, and during the ramp after one admits at its share of the rate
  (``resume_admit_rate / processes``: the pool as a whole admits at the configured rate), each refusal reported
  so the coordinator counts it;
- sends no work to a curtailed site's miners (``paused``), and closes the sessions the coordinator names
  (paced there, across every process);
- reports logins, judged shares and closes, batched per loop turn, with session ids made unique across processes
  (``global_id``); after its link to the coordinator comes back it reports its live logins again (``resync``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from pool.programme.controller import curtailed_message, ramp_message
from pool.programme.curtail import Pacer
from pool.programme.siteconfig import ProgrammeConfig
from pool.programme.sites import SiteBook

PROCESS_SHIFT = 40  # a session id is this process's counter; the process index goes above it

Event = tuple[Any, ...]


def global_id(process: int, session: int) -> int:
    return (process << PROCESS_SHIFT) | session


def split_id(gid: int) -> tuple[int, int]:
    """(process index, its session id) of a global session id."""
    return gid >> PROCESS_SHIFT, gid & ((1 << PROCESS_SHIFT) - 1)


class _Admission:
    """One site's login rule in this process, as last published by the coordinator."""

    __slots__ = ("until", "ramp_until", "admitter", "pool_rate")

    def __init__(self) -> None:
        self.until: float | None = None  # curtailed until (wall clock), or not curtailed
        self.ramp_until = 0.0  # monotonic: logins are paced until then
        self.admitter = Pacer(1.0, 0.0)
        self.pool_rate = 0.0


class FrontendSites:
    """What ``StratumServer`` calls ``sites`` in a front-end process (duck-typed as ``SiteController``)."""

    def __init__(self, programme: ProgrammeConfig, process: int, send: Callable[[Event], None],
                 mono: Callable[[], float] = time.monotonic) -> None:
        self.programme = programme
        self.process = process
        self.send = send
        self.mono = mono
        self._rules = SiteBook(programme, 0.0)  # only its ``assign``: the coordinator keeps the figures
        self.paused: set[str] = set()  # the server reads this set (the same object) before sending work
        self._admission: dict[str, _Admission] = {s.name: _Admission() for s in programme.sites}
        self.listed_site: Callable[[bytes], str] | None = None

    # ---- calls from the Stratum server ---------------------------------------------------------------------

    def admit(self, ip: str, worker_name: str, script: bytes = b"") -> tuple[str, str | None]:
        listed = self.listed_site(script) if self.listed_site is not None and script else ""
        site = self._rules.assign(ip, worker_name, listed)
        rule = self._admission.get(site)
        if rule is None:
            return site, None
        if rule.until is not None:
            self.send(("refused", site, "curtailed"))
            return site, curtailed_message(site, rule.until)
        mono = self.mono()
        if mono < rule.ramp_until and not rule.admitter.take(mono):
            self.send(("refused", site, "ramp"))
            return site, ramp_message(site, rule.pool_rate)
        return site, None

    def authorized(self, session: int, site: str, worker: str, worker_name: str) -> None:
        self.send(("auth", global_id(self.process, session), site, worker, worker_name))

    def share(self, site: str, worker: str, worker_name: str, difficulty: float | None, is_block: bool) -> None:
        self.send(("share", site, worker, worker_name, difficulty, is_block))

    def closed(self, session: int) -> None:
        self.send(("closed", global_id(self.process, session)))

    # ---- from the coordinator ------------------------------------------------------------------------------

    def apply(self, site: str, state: dict[str, Any]) -> None:
        """The coordinator's curtailment state of ``site`` (``SiteController.front_state``)."""
        rule = self._admission.get(site)
        if rule is None:
            return
        rule.until = state["until"]
        rule.pool_rate = state["pool_admit_rate"]
        if rule.until is not None:
            self.paused.add(site)
            return
        self.paused.discard(site)
        mono = self.mono()
        rule.ramp_until = mono + state["ramp_seconds"]
        rule.admitter = Pacer(state["admit_rate"], mono)

    def resync(self, sessions: Iterable[tuple[int, str, Iterable[tuple[str, str]]]]) -> None:
        """After the link to the coordinator came back (a new coordinator knows none of our miners): every live
        login again, as (session id, site, [(worker, worker name)])."""
        for session, site, workers in sessions:
            for worker, worker_name in workers:
                self.authorized(session, site, worker, worker_name)


def apply_events(controller: Any, events: list[Event]) -> None:
    """In the coordinator: a front-end's batch of site events into the one ``SiteController``."""
    for event in events:
        kind = event[0]
        if kind == "share":
            controller.share(*event[1:])
        elif kind == "auth":
            controller.authorized(*event[1:])
        elif kind == "closed":
            controller.closed(event[1])
        elif kind == "refused":
            controller.refused(event[1], event[2])
