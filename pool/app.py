"""Composition root: builds the parts from a Config, runs them together and shuts them down in order."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import structlog

from pool.bitcoin.address import address_to_script
from pool.bitcoin.target import target_to_difficulty
from pool.config import Config
from pool.ledger import book
from pool.ledger.accounting import fee_basis_points
from pool.ledger.book import REJECTED, Policy
from pool.ledger.history import HistoryWriter, Retention
from pool.ledger.leader import Leadership, lock_for
from pool.ledger.sqlite import Ledger
from pool.mining.jobs import BlockTemplate
from pool.node.blocks import BlockSubmitter, FoundBlock, RetryPolicy, SubmitOutcome
from pool.node.nodeset import Member, NodeSet
from pool.node.payouts import MaturityTracker, PaymentProcessor
from pool.node.regtest import RegtestNode, find_bitcoind_dir
from pool.node.rpc import NodeClient, RpcCredentials
from pool.node.work import TemplateSource
from pool.ops.http import HttpApi
from pool.ops.sites import SiteCollector
from pool.ops.supervise import Supervisor
from pool.ops.telemetry import Metrics, watch_loop_lag
from pool.programme.controller import SiteController
from pool.server.access import AccessControl, ReloadRefused, ReloadResult
from pool.server.coordinator import Coordinator
from pool.server.frontends import FrontendPool
from pool.server.server import StratumServer

log = structlog.get_logger("pool.app")


class PoolApp:
    """One running pool. ``start`` returns once Stratum is listening and work is ready (or bitcoind is down)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        # Sites, energy and curtailment: every session gets a site (or "unassigned"); see pool/programme/.
        self.sites = SiteController(config.programme)
        self.metrics.registry.register(SiteCollector(self.sites))
        self.node: RegtestNode | None = None
        self.client: NodeSet | None = None  # every configured bitcoind; calls go to the active one
        self.ledger: Ledger | None = None
        self.coordinator: Coordinator | None = None
        # One process: the Stratum server itself; stratum.processes >= 2: the front-end processes behind one facade.
        self.server: StratumServer | FrontendPool | None = None
        self.source: TemplateSource | None = None
        self.submitter: BlockSubmitter | None = None
        self.pool_address = config.payout.pool_address
        self.http: HttpApi | None = None
        self.history: HistoryWriter | None = None
        self.maturity: MaturityTracker | None = None
        self.payments: PaymentProcessor | None = None
        self.leadership: Leadership | None = None
        self.wallet: NodeClient | None = None
        self.submit_clients: list[NodeClient] = []
        self.started_at = time.time()
        self.supervisor = Supervisor(on_failure=self._on_task_failure)
        self.access: AccessControl | None = None
        self._signal_tasks: set[asyncio.Task[object]] = set()
        self._stopped = asyncio.Event()

    async def _start_managed_node(self) -> RpcCredentials:
        rc = self.config.regtest
        loop = asyncio.get_running_loop()
        node = RegtestNode(
            Path(self.config.data_dir) / "regtest-node",
            find_bitcoind_dir(rc.bitcoind_dir),
            rpc_port=rc.rpc_port,
            zmq_port=rc.zmq_port,
        )
        await loop.run_in_executor(None, node.start)
        self.node = node
        await loop.run_in_executor(None, node.ensure_wallet)
        if not self.pool_address:
            self.pool_address = str(await loop.run_in_executor(None, lambda: node.rpc("getnewaddress", wallet="pool")))
        log.info("regtest_bitcoind_started", rpc_port=node.rpc_port, datadir=str(node.datadir))
        return node.credentials

    def _node_credentials(self) -> list[tuple[str, RpcCredentials, str]]:
        """(name, credentials, ZMQ endpoint) of every bitcoind to use, the preferred first."""
        if self.config.regtest.managed:
            assert self.node is not None
            return [(self.config.node.name, self.node.credentials, self.node.zmq_endpoint)]
        return [(nc.name, RpcCredentials(nc.rpc_url, nc.rpc_user, nc.rpc_password, nc.rpc_cookie_file),
                 nc.zmq_hashblock) for nc in self.config.nodes]

    async def start(self) -> None:
        cfg = self.config
        if cfg.regtest.managed:
            await self._start_managed_node()
        nodes = self._node_credentials()
        timeouts = {nc.name: nc.rpc_timeout for nc in cfg.nodes}
        stale = self.metrics.rpc_stale_retries.labels

        def client(creds: RpcCredentials, name: str, workers: int = 4, role: str = "rpc") -> NodeClient:
            return NodeClient(creds, timeouts.get(name, cfg.node.rpc_timeout), observer=self.metrics.observe_rpc,
                              workers=workers, name=role, on_stale=lambda m: stale(m).inc())

        members = [Member(name, client(creds, name), zmq, health=client(creds, name, 1, "rpc-health"))
                   for name, creds, zmq in nodes]
        self.client = NodeSet(members, cfg.node.network, min(5.0, cfg.node.refresh_interval),
                              on_switch=self._on_node_switch, on_probe=self._on_node_probe)
        await self.client.wait_ready(
            time.monotonic() + 120, on_wait=lambda e: log.warning("waiting_for_bitcoind", error=e)
        )
        creds = nodes[0][1]
        pool_script = address_to_script(self.pool_address, cfg.node.network) if self.pool_address else None
        pc = cfg.payout
        self.ledger = Ledger(cfg.ledger_source, Policy(pc.scheme, fee_basis_points(pc.fee_percent), pc.pplns_factor))
        self.ledger.on_commit = self._on_commit
        ledger = self.ledger
        self.metrics.ledger_up.set_function(
            lambda: 1 if ledger.failure is None and ledger.unavailable_since is None else 0)
        self.ledger.on_failure = lambda exc: self._on_task_failure("ledger-writer", exc)
        # Block submission has connections and a thread of its own: never behind template or payment RPC.
        # One client per node: each gets every block at once.
        self.submit_clients = [client(node_creds, name, 1, "rpc-submit") for name, node_creds, _ in nodes]
        self.submitter = BlockSubmitter(
            self.submit_clients, Path(cfg.data_dir) / "blocks", self._on_block_outcome,
            retry=RetryPolicy(min(0.2, cfg.node.submit_retry_max_delay), cfg.node.submit_retry_max_delay),
            on_sent=self._on_block_sent,
            on_write_failed=lambda block, exc: self.metrics.block_file_write_failures.inc(),
        )
        self.metrics.blocks_unresolved.set_function(lambda: len(self.submitter.unresolved()) if self.submitter else 0)
        self.metrics.block_oldest_unresolved_seconds.set_function(
            lambda: self.submitter.oldest_unresolved_age() if self.submitter else 0.0)
        self.coordinator = Coordinator(cfg, pool_script, self.ledger, self.submitter, self.metrics)
        await self.coordinator.replay_block_rows()
        hc = cfg.history
        self.history = HistoryWriter(self.ledger, self.coordinator.history, Retention(
            hc.flush_interval, hc.minutely_keep_hours * 3600, hc.hourly_keep_days * 86400))
        rows, round_no = await asyncio.to_thread(self.ledger.best_shares)
        self.coordinator.best.load(rows, round_no)
        if cfg.stratum.processes > 1:
            # Every node gets every block from the front-end that found it, as from this process.
            submit_nodes = [(name, node_creds, timeouts.get(name, cfg.node.rpc_timeout))
                            for name, node_creds, _ in nodes]
            frontends = FrontendPool(cfg, self.metrics, self.ledger, self.coordinator, submit_nodes, pool_script,
                                     on_block_resolved=lambda _: self.source.trigger("block-found")
                                     if self.source is not None else None)
            self.server = frontends
            # Decided here, applied and reported by every front-end process; with no [[site]] every miner is
            # 'unassigned', counted as with one process.
            frontends.sites = self.sites
            self.sites.publish = frontends.publish_site
        else:
            self.server = StratumServer(cfg, self.coordinator, self.metrics, sites=self.sites)
        self.sites.server = self.server
        self.sites.ledger = self.ledger
        records = await asyncio.to_thread(
            self.ledger.query, "SELECT payload FROM audit WHERE kind = 'site_curtailment' ORDER BY seq")
        for site in self.sites.restore([json.loads(payload) for (payload,) in records]):
            log.warning("site_curtailment_restored", site=site)
        if cfg.authorization.allowlist_file:
            self.access = AccessControl(cfg.authorization, cfg.node.network, self.metrics, self.audit)
            self.sites.listed_site = self._listed_site  # the allowlist's site column places unmatched miners
            if isinstance(self.server, FrontendPool):  # read and audited here, enforced by every front-end
                self.server.access = self.access
                self.access.spread = self.server.spread_allowlist
            else:
                self.access.server = self.server
                if cfg.authorization.enforced:
                    self.server.access = self.access
            await self.access.announce()
        self.source = TemplateSource(
            self.client,
            self._on_template,
            refresh_interval=cfg.node.refresh_interval,
            longpoll=cfg.node.longpoll,
            zmq_endpoint=nodes[0][2] if len(nodes) == 1 else {name: zmq for name, _, zmq in nodes},
            on_health=lambda up: self.metrics.bitcoind_up.set(1 if up else 0),
            empty_first_network=cfg.node.network if cfg.node.empty_block_first else None,
        )
        self.submitter.resubmit_pending()
        await self.source.fetch("start")
        await self.server.start()
        if cfg.metrics_enabled or cfg.admin.port is not None:
            self.http = HttpApi(self)
            await self.http.start()
        sup = self.supervisor
        for name, loop_fn in self.source.loops().items():
            sup.start(name, loop_fn)
        sup.start("node-health", self.client.run)
        sup.start("stratum-housekeeping", self.server.housekeeping)
        sup.start("sites", self.sites.run)  # curtailment orders and schedules; without it none is applied
        if self.server.tls is not None:
            sup.start("tls-accept", self.server.tls.accept_loop)
        sup.start("template-age", self._age_loop, required=False)
        sup.start("loop-lag", lambda: watch_loop_lag(self.metrics), required=False)
        sup.start("history", self.history.run, required=False)
        self.maturity = MaturityTracker(self.client, self.ledger, pc.maturity_margin, pc.maturity_check_interval,
                                        on_change=self._on_block_status, in_flight=self._blocks_in_flight)
        # Maturity and payments run in one process per ledger: the holder of its leader lock.
        self.leadership = Leadership(lock_for(cfg.ledger_source),
                                     on_change=lambda leading: self.metrics.ledger_leader.set(1 if leading else 0))
        sup.start("ledger-leader", self.leadership.run)
        sup.start("maturity", self.leadership.gated(self.maturity.run))
        if pc.payments_enabled:
            wallet_url = creds.url.rstrip("/") + (f"/wallet/{pc.wallet}" if pc.wallet else "")
            wallet_creds = RpcCredentials(wallet_url, creds.user, creds.password, creds.cookie_file)
            self.wallet = NodeClient(wallet_creds, cfg.node.rpc_timeout, observer=self.metrics.observe_rpc,
                                     on_stale=lambda m: stale(m).inc())
            self.payments = PaymentProcessor(self.wallet, self.ledger, pc.payment_threshold, pc.payment_interval,
                                             pc.payment_grace)
            sup.start("payments", self.leadership.gated(self.payments.run))

    def _blocks_in_flight(self) -> set[str]:
        """Blocks still being submitted, here or by a front-end process (maturity leaves them alone)."""
        out = self.submitter.unresolved() if self.submitter is not None else set()
        if isinstance(self.server, FrontendPool):
            out |= self.server.unresolved()
        return out

    async def refresh_live(self) -> None:
        """Before a scrape or an API answer: the front-end processes' figures of now (no-op in one process)."""
        if isinstance(self.server, FrontendPool):
            await self.server.refresh()

    def metrics_registry(self) -> object:
        """What /metrics renders: this process's registry, merged with every front-end process's if any."""
        return self.server.merged if isinstance(self.server, FrontendPool) else self.metrics.registry

    def _on_node_switch(self, before: Member | None, after: Member) -> None:
        if before is not None:
            self.metrics.node_switches.inc()
        if self.source is not None:
            self.source.node_switched(before, after)

    def _on_node_probe(self, nodes: NodeSet) -> None:
        for i, member in enumerate(nodes.members):
            self.metrics.node_up.labels(member.name).set(1 if member.state.up else 0)
            self.metrics.node_active.labels(member.name).set(1 if i == nodes.active else 0)
            if member.state.height is not None:
                self.metrics.node_tip_height.labels(member.name).set(member.state.height)

    async def audit(self, kind: str, payload: dict[str, object]) -> None:
        """Append an entry to the ledger's hash-chained audit log; a failure is logged, never raised (the
        change it records has happened, and the operator must learn that its record did not land)."""
        if self.ledger is None:
            return
        try:
            await self.ledger.submit(lambda conn: book.audit(conn, kind, payload))
        except Exception as exc:
            log.error("audit_failed", kind=kind, error=str(exc))

    async def reload_allowlist(self, source: str) -> ReloadResult:
        """Re-read the allowlist (SIGHUP, ``POST /admin/allowlist/reload``); ReloadRefused keeps the old list."""
        if self.access is None:
            raise ReloadRefused("no allowlist file is configured (authorization.allowlist_file)")
        return await self.access.reload(source)

    def sighup(self) -> None:
        """SIGHUP: re-read the Stratum TLS certificate and key, and the allowlist."""
        if self.server is not None:
            self.server.reload_tls()
        if self.access is not None:
            task = asyncio.ensure_future(self._reload_quietly("sighup"))
            self._signal_tasks.add(task)
            task.add_done_callback(self._signal_tasks.discard)

    async def _reload_quietly(self, source: str) -> None:
        try:
            await self.reload_allowlist(source)
        except ReloadRefused:
            pass  # logged, counted and audited by the access control; the old list stays in force

    def _listed_site(self, script: bytes) -> str:
        """The site the allowlist in force (reloads included) gives a payout script; "" when none."""
        licence = self.access.allowlist.by_script.get(script) if self.access is not None else None
        return licence.site if licence is not None else ""

    def _on_task_failure(self, task: str, error: BaseException | None) -> None:
        """Supervisor and ledger hook (any thread): every background failure is counted by task."""
        self.metrics.task_failures.labels(task).inc()

    def _on_commit(self, size: int, seconds: float) -> None:
        self.metrics.ledger_batch_size.observe(size)
        self.metrics.ledger_commit_seconds.observe(seconds)

    def _on_template(self, template: BlockTemplate, new_tip: bool, reason: str) -> None:
        assert self.coordinator is not None
        start = time.perf_counter()
        try:
            ready = self.source.prepared if self.source is not None else None
            if not self.coordinator.set_template(template, prepared=ready):
                return  # the same work again (a refresh, or ZMQ and long poll both announcing one block)
        except ValueError as exc:
            log.error("template_rejected", error=str(exc), height=template.height)
            return
        done = None
        if new_tip and not isinstance(self.server, FrontendPool):  # front-ends time their own notify
            def done(_sent: int) -> None:
                self.metrics.new_tip_notify_seconds.observe(time.perf_counter() - start)
        sent = self.server.broadcast(clean=new_tip, done=done) if self.server is not None else 0
        self.metrics.templates.labels("empty" if reason == "zmq-empty" else "full").inc()
        (log.info if new_tip else log.debug)("new_work", height=template.height, new_tip=new_tip, reason=reason,
                                             miners=sent, txs=len(template.transactions))

    def _on_block_sent(self, block: FoundBlock, seconds: float) -> None:
        self.metrics.blocks.labels("submitted").inc()
        self.metrics.share_to_submit_seconds.observe(max(0.0, seconds))

    def _on_block_outcome(self, outcome: SubmitOutcome) -> None:
        """bitcoind answered about a block (its status in the ledger is then kept true by the maturity tracker)."""
        self.metrics.blocks.labels("accepted" if outcome.accepted else "rejected").inc()
        if outcome.confirmed:
            self.metrics.blocks.labels("confirmed").inc()
        if outcome.resolved_seconds is not None:
            self.metrics.block_submit_resolved_seconds.observe(outcome.resolved_seconds)
        if self.ledger is not None and not outcome.accepted:
            # Re-checked against the chain by the maturity tracker: credits come back if it is in the chain.
            done = self.ledger.set_block_status(outcome.block.block_hash, REJECTED)
            done.add_done_callback(lambda f: f.cancelled() or f.exception() is None or log.error(
                "block_status_not_recorded", block_hash=outcome.block.block_hash, error=str(f.exception())))
        if self.source is not None:
            self.source.trigger("block-found")

    def _on_block_status(self, changes: list[tuple[str, str]]) -> None:
        for _, status in changes:
            if status in ("confirmed", "orphaned"):
                self.metrics.blocks.labels("matured" if status == "confirmed" else "orphaned").inc()

    async def _age_loop(self) -> None:
        while True:
            if self.source is not None and self.source.fetched_at:
                self.metrics.template_age_seconds.set(time.monotonic() - self.source.fetched_at)
            await asyncio.sleep(1)


    # ---- views for the HTTP API ---------------------------------------------------------------------------

    def refresh_gauges(self) -> None:
        """Per-scrape gauges: pool and per-worker hashrate, capped to the most active workers."""
        if self.coordinator is None:
            return
        now = time.time()
        stats = self.coordinator.stats
        self.metrics.pool_hashrate.set(stats.pool_hashrate(now))
        self.metrics.workers_active.set(stats.active_workers(now))
        best = self.coordinator.best
        self.metrics.best_share.labels("round").set(best.pool_round.difficulty if best.pool_round else 0.0)
        self.metrics.best_share.labels("all_time").set(best.pool_all_time.difficulty if best.pool_all_time else 0.0)
        self.metrics.worker_hashrate.clear()
        self.metrics.worker_last_share_age.clear()
        cap = self.config.metrics_max_worker_series
        ranked = sorted(stats.workers.values(), key=lambda w: w.last_share, reverse=True)[:cap]
        for w in ranked:
            label = f"{w.address}.{w.name}" if w.name else w.address
            self.metrics.worker_hashrate.labels(label).set(w.hashrate(now, stats.window))
            if w.last_share:
                self.metrics.worker_last_share_age.labels(label).set(now - w.last_share)
        if self.server is not None:
            for state, count in self.server.session_states().items():
                self.metrics.sessions.labels(state).set(count)

    def pending_payouts(self) -> int:
        """Satoshis credited and not yet paid (pending maturity or payable); read off the event loop."""
        if self.ledger is None:
            return 0
        rows = self.ledger.query(
            "SELECT COALESCE((SELECT SUM(amount) FROM credits WHERE status IN ('pending', 'payable')), 0)"
            " - COALESCE((SELECT SUM(amount) FROM payments WHERE status IN ('sending', 'sent')), 0)"
        )
        return int(rows[0][0]) if rows else 0

    def readiness_problems(self) -> list[str]:
        problems = list(self.supervisor.down())
        if isinstance(self.server, FrontendPool):
            problems += [f"Stratum front-end process {slot.index} is down" for slot in self.server.slots
                         if slot.link is None]
        if self.ledger is not None and self.ledger.failure is not None:
            problems.append(f"ledger writer stopped ({self.ledger.failure!r}): shares cannot be recorded")
        if self.ledger is not None and self.ledger.unavailable_since is not None:
            problems.append(f"ledger database unreachable for {time.monotonic() - self.ledger.unavailable_since:.0f} s:"
                            " shares are answered 'not recorded' until it is back")
        if self.source is None or not self.source.healthy:
            problems.append("bitcoind unreachable or giving no templates")
        if self.source is not None and self.source.fetched_at:
            age = time.monotonic() - self.source.fetched_at
            if age > max(3 * self.config.node.refresh_interval, 120):
                problems.append(f"work is stale ({age:.0f} s old)")
        elif self.source is not None:
            problems.append("no work yet")
        return problems

    def pool_summary(self) -> dict[str, object]:
        now = time.time()
        coord = self.coordinator
        template = self.source.template if self.source else None
        last = coord.last_block if coord else None
        return {
            "network": self.config.node.network,
            "scheme": self.config.payout.scheme,
            "hashrate": coord.stats.pool_hashrate(now) if coord else 0.0,
            "miners": self.server.connection_count() if self.server else 0,
            "workers": coord.stats.active_workers(now) if coord else 0,
            "height": template.height if template else None,
            "network_difficulty": target_to_difficulty(template.network_target) if template else None,
            "blocks_found": coord.blocks_found if coord else 0,
            "last_block": {"height": last.height, "hash": last.block_hash, "worker": last.worker,
                           "found_at": last.found_at} if last else None,
            "uptime_seconds": now - self.started_at,
            "best_share": self._pool_best(),
            "nodes": self.client.states() if self.client is not None else [],
        }

    def _pool_best(self) -> dict[str, object]:
        """The pool's highest share this block round and all time, and who found it (kept across restarts)."""
        best = self.coordinator.best if self.coordinator else None
        if best is None:
            return {"round": None, "all_time": None, "round_number": 0}
        return {
            "round": best.pool_round.as_dict() if best.pool_round else None,
            "all_time": best.pool_all_time.as_dict() if best.pool_all_time else None,
            "round_number": best.round_no,
        }

    def address_workers(self, address: str) -> list[dict[str, object]]:
        """A copy of the address's live worker stats; call on the event loop, which is what changes them."""
        return self.coordinator.stats.for_address(address, time.time()) if self.coordinator else []

    def address_summary(self, address: str, workers: list[dict[str, object]]) -> dict[str, object]:
        """The address's ledger figures around ``workers`` (from ``address_workers``); runs in a worker thread,
        so it reads only the ledger and never the live state the event loop is changing."""
        # Rolled-up hours plus the share rows still kept: the same totals before and after a roll-up.
        shares = [(w, c, d) for _, w, c, d, _ in self.ledger.share_totals(address)] if self.ledger else []
        credits = dict(self.ledger.query(
            "SELECT status, SUM(amount) FROM credits WHERE address=? GROUP BY status", (address,)
        )) if self.ledger else {}
        paid = dict(self.ledger.query(
            "SELECT status, SUM(amount) FROM payments WHERE address=? GROUP BY status", (address,)
        )) if self.ledger else {}
        bests = self.ledger.best_for_address(address) if self.ledger else []
        payable = int(credits.get("payable", 0))
        sent = int(paid.get("sent", 0)) + int(paid.get("sending", 0))
        return {
            "address": address,
            "known": bool(workers or shares or credits or bests),
            "balance": {
                "pending_sats": int(credits.get("pending", 0)),
                "payable_sats": payable - sent,
                "paid_sats": int(paid.get("sent", 0)),
                "paid_in_coinbase_sats": int(credits.get("onchain", 0)),
            },
            "hashrate": sum(float(w["hashrate"]) for w in workers),  # type: ignore[arg-type]
            "workers": workers,
            "shares": [{"worker": w, "count": c, "difficulty": d} for w, c, d in shares],
            # Per worker: highest share difficulty all time and in the current block round (across restarts).
            "best_shares": bests,
            "best_share": {
                "all_time": max((float(b["best"]) for b in bests), default=0.0),
                "round": max((float(b["round_best"]) for b in bests), default=0.0),
            },
        }

    def recent_blocks(self, limit: int) -> list[dict[str, object]]:
        if self.ledger is None:
            return []
        rows = self.ledger.query(
            "SELECT height, block_hash, address, worker, reward, status, found_at FROM blocks"
            " ORDER BY found_at DESC LIMIT ?",
            (limit,),
        )
        keys = ("height", "hash", "address", "worker", "reward", "status", "found_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    async def run_until_stopped(self) -> None:
        await self._stopped.wait()

    def request_stop(self) -> None:
        self._stopped.set()

    async def stop(self) -> None:
        await self.supervisor.stop()
        if self.http is not None:
            await self.http.close()
        if self.server is not None:
            await self.server.close()
        if self.submitter is not None:
            await self.submitter.drain()
        if self.coordinator is not None:
            await self.coordinator.drain()
        if self.history is not None and self.ledger is not None and self.ledger.failure is None:
            await self.history.flush()  # the last seconds of work, before the writer closes
        if self.ledger is not None:
            self.ledger.close()
        if self.client is not None:
            self.client.close()
        for client in self.submit_clients:
            client.close()
        if self.wallet is not None:
            self.wallet.close()
        if self.node is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.node.stop)
