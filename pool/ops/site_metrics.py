"""``pool_site_*`` metrics, read from the site controller at scrape time.

A collector instead of per-share counter calls: the site book already counts shares, difficulty and blocks,
so the hot path pays nothing extra and a multi-process pool can export the same book. The label set is
bounded: the configured sites plus ``unassigned``. Scrapes run on the event loop (aiohttp handler), the same
thread that changes the book.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pool.programme.controller import SiteController


class SiteCollector(Collector):
    def __init__(self, sites: SiteController) -> None:
        self.sites = sites

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are fixed, but values are only known at scrape time

    def collect(self) -> Iterator[Metric]:
        controller = self.sites
        now, mono = controller.clock(), controller.mono()
        book = controller.book

        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=["site"])

        miners = gauge("pool_site_connected_miners", "Open Stratum connections assigned to the site")
        workers = gauge("pool_site_workers", "Distinct worker names connected at the site")
        hashrate = gauge("pool_site_hashrate_hashes_per_second",
                         "Site hashrate from accepted difficulty (the pool's estimator, 10-minute window)")
        power = gauge("pool_site_power_watts", "Estimated site power: hashrate x J/TH (per worker pattern)")
        budget = gauge("pool_site_power_budget_watts", "The site's configured power budget (power_budget_kw)")
        ratio = gauge("pool_site_power_budget_ratio", "Estimated power / power budget")
        silent = gauge("pool_site_silent_workers",
                       "Workers with no accepted share for programme.silent_after_minutes (0 while curtailed)")
        curtailed = gauge("pool_site_curtailed", "1 while the site is curtailed (no work, logins refused)")
        ramping = gauge("pool_site_ramping", "1 while logins after a curtailment are admitted at the ramp rate")
        shed_hashrate = gauge("pool_site_curtailment_shed_hashes_per_second",
                              "Hashrate the site had when its current curtailment started (0 when none)")
        shed_power = gauge("pool_site_curtailment_shed_watts",
                           "Estimated power the site had when its current curtailment started (0 when none)")
        shares = CounterMetricFamily("pool_site_shares", "Shares judged for the site's miners, by result",
                                     labels=["site", "result"])
        difficulty = CounterMetricFamily("pool_site_accepted_difficulty",
                                         "Accepted difficulty at the site (rate() x 2**32 is hashrate)",
                                         labels=["site"])
        blocks = CounterMetricFamily("pool_site_blocks", "Blocks found by the site's miners", labels=["site"])
        starts = CounterMetricFamily("pool_site_curtailments", "Curtailments started, by reason (manual, schedule)",
                                     labels=["site", "reason"])
        ends = CounterMetricFamily("pool_site_curtailment_ends", "Curtailments ended, by reason (manual, schedule)",
                                   labels=["site", "reason"])
        closed = CounterMetricFamily("pool_site_curtailment_closed_connections",
                                     "Connections closed because their site was curtailed", labels=["site"])
        refused = CounterMetricFamily("pool_site_refused_logins",
                                      "Logins refused: site curtailed, or over the ramp rate after a curtailment",
                                      labels=["site", "reason"])
        for name in controller.site_names():
            state = book.sites[name]
            watts = state.power_watts(now)
            budget_watts = state.config.power_budget_kw * 1000.0 if state.config is not None else 0.0
            miners.add_metric([name], len(state.sessions))
            workers.add_metric([name], sum(1 for w in state.workers.values() if w.sessions))
            hashrate.add_metric([name], state.hashrate(now))
            power.add_metric([name], watts)
            budget.add_metric([name], budget_watts)
            if budget_watts:
                ratio.add_metric([name], watts / budget_watts)
            silent.add_metric([name], len(state.silent(now, book.silent_after)))
            shares.add_metric([name, "accepted"], state.accepted)
            shares.add_metric([name, "rejected"], state.rejected)
            difficulty.add_metric([name], state.accepted_difficulty)
            blocks.add_metric([name], state.blocks)
            curtailment = controller.curtailments.get(name)
            if curtailment is None:
                continue
            active = curtailment.active
            curtailed.add_metric([name], 1 if active is not None else 0)
            ramping.add_metric([name], 1 if curtailment.ramping(mono) else 0)
            shed_hashrate.add_metric([name], active.shed_hashrate if active else 0.0)
            shed_power.add_metric([name], active.shed_watts if active else 0.0)
            for reason, count in curtailment.starts.items():
                starts.add_metric([name, reason], count)
            for reason, count in curtailment.ends.items():
                ends.add_metric([name, reason], count)
            closed.add_metric([name], curtailment.closed)
            for reason, count in curtailment.refused.items():
                refused.add_metric([name, reason], count)
        yield from (miners, workers, hashrate, power, budget, ratio, silent, curtailed, ramping, shed_hashrate,
                    shed_power, shares, difficulty, blocks, starts, ends, closed, refused)
