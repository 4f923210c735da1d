"""One Stratum front-end process (``stratum.processes`` >= 2): the connector half of the pool.

Started by the coordinator process (``pool/server/frontends.py``) as ``python -m pool.server.frontend SOCKET
INDEX`` with a fresh interpreter (never a fork of a process that has threads). It connects back over the
coordinator's Unix socket, receives the config and every new template, binds the Stratum port itself beside
its siblings (SO_REUSEPORT) and runs the same ``StratumServer`` and ``Coordinator`` as the one-process pool,
with a ledger proxy in place of the ledger: accepted shares go to the coordinator in batches, and each miner's
``true`` waits for the coordinator's acknowledgment of the commit, as it waits for the commit in one process.

A found block is sent to bitcoind from here, by a ``BlockSubmitter`` of the process's own (its own RPC
connection and pending file): it never waits for the link. The coordinator is told after.

If the link to the coordinator goes down, every share waiting for it and every share after gets error 20 (never
a ``true`` that was not committed) while the miners stay connected and the process reconnects; after
``ORPHAN_SECONDS`` without a coordinator it exits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import structlog

from pool.ledger.book import REJECTED
from pool.ledger.commit import Commit
from pool.ledger.sqlite import BlockRecord, DuplicateShare, LedgerFailed, ShareRecord
from pool.mining.stats import PoolStats
from pool.node.blocks import BlockSubmitter, FoundBlock, RetryPolicy, SubmitOutcome
from pool.node.rpc import NodeClient
from pool.ops import interpreter
from pool.ops.supervise import Supervisor
from pool.ops.telemetry import Metrics, configure_logging, watch_loop_lag
from pool.programme.remote import FrontendSites
from pool.server.access import AccessControl
from pool.server.coordinator import Coordinator
from pool.server.ipc import TEMPLATE_HEAD, Kind, Link
from pool.server.server import StratumServer

log = structlog.get_logger("pool.frontend")

ORPHAN_SECONDS = 60.0  # without a coordinator this long, the process exits (its miners reconnect elsewhere)
RECONNECT_INTERVAL = 0.25
STATS_INTERVAL = 1.0
TOKEN_ENV = "POOL_FRONTEND_TOKEN"
LINK_DOWN = "coordinator unreachable: share not recorded"


class LedgerProxy:
    """The ledger as the front-end's coordinator sees it: every write resolves at the real commit.

    Writes are queued on the link (one frame per loop turn, see ``Link.queue``) with a sequence number; the
    coordinator answers each after its commit. Without a link every write fails at once, so the miner hears
    error 20, never ``true``.
    """

    def __init__(self) -> None:
        self.link: Link | None = None
        self._pending: dict[int, Commit] = {}
        self._seq = 0
        self.network_difficulty = 0.0

    def attach(self, link: Link) -> None:
        self.link = link

    def detach(self, reason: str = LINK_DOWN) -> int:
        """The link is gone: every write waiting on it fails (the coordinator may still commit some, and a
        miner's resubmission is then refused as a duplicate: never a false ``true``). Returns how many."""
        self.link = None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(LedgerFailed(reason))
        return len(pending)

    def _write(self, op: str, payload: Any) -> Commit:
        future = Commit()  # answered straight from the acknowledgment (pool/ledger/commit.py)
        link = self.link
        if link is None or link.closed:
            future.set_exception(LedgerFailed(LINK_DOWN))
            return future
        self._seq += 1
        self._pending[self._seq] = future
        link.queue(Kind.OPS, (self._seq, op, payload))
        return future

    def record_share(self, s: ShareRecord) -> Commit:
        return self._write("share", s)

    def record_block(self, b: BlockRecord) -> Commit:
        return self._write("block", b)

    def set_block_status(self, block_hash: str, status: str, confirmations: int = 0) -> Commit:
        return self._write("status", (block_hash, status, confirmations))

    def acknowledge(self, acks: list[tuple[int, tuple[str, str] | None]]) -> None:
        """The coordinator's answers: None (committed) or (kind, message) for a refusal."""
        pending = self._pending
        for seq, error in acks:
            future = pending.pop(seq, None)
            if future is None or future.done():
                continue
            if error is None:
                future.set_result(None)
            elif error[0] == "duplicate":
                future.set_exception(DuplicateShare(error[1]))
            else:
                future.set_exception(LedgerFailed(error[1]))

    @property
    def in_flight(self) -> int:
        return len(self._pending)


class ReportingStats(PoolStats):
    """Per-worker stats in a front-end: accepted shares are counted by the coordinator from the commits it
    acknowledges (one place for the pool's view); rejects, which never reach it, are counted here and sent."""

    def __init__(self) -> None:
        super().__init__()
        self.rejects: Counter[tuple[str, str]] = Counter()

    def accepted(self, address: str, name: str, difficulty: float, now: float) -> None:
        return None

    def rejected(self, address: str, name: str, now: float | None = None) -> None:
        self.rejects[(address, name)] += 1


class Frontend:
    """The front-end process's parts and its link to the coordinator."""

    def __init__(self, socket_path: str, index: int, token: str) -> None:
        self.socket_path = socket_path
        self.index = index
        self.token = token
        self.ledger = LedgerProxy()
        self.link: Link | None = None
        self.metrics = Metrics()
        self.coordinator: Coordinator | None = None
        self.server: StratumServer | None = None
        self.submitter: BlockSubmitter | None = None
        self.clients: list[NodeClient] = []
        self.supervisor = Supervisor(on_failure=lambda task, exc: self.metrics.task_failures.labels(task).inc())
        self._welcome: asyncio.Future[Any] | None = None
        self._stopped = asyncio.Event()
        self._lost_at: float | None = None
        self.stats = ReportingStats()
        self._early_template: bytes | None = None
        self.access: AccessControl | None = None  # the allowlist, as the coordinator last spread it
        self.sites: FrontendSites | None = None
        self._site_states: list[tuple[str, dict[str, Any]]] = []  # published before the parts exist

    # ---- the link ------------------------------------------------------------------------------------------

    async def _connect(self) -> Link:
        loop = asyncio.get_running_loop()
        _, link = await loop.create_unix_connection(lambda: Link(self._on_frame, self._on_lost), self.socket_path)
        link.send(Kind.HELLO, (self.index, os.getpid(), self.token))
        return link

    def _on_lost(self, link: Link) -> None:
        if link is not self.link:
            return
        self.link = None
        failed = self.ledger.detach()
        self._lost_at = time.monotonic()
        if not self._stopped.is_set():
            log.error("coordinator_link_lost", process=self.index, shares_failed=failed)

    async def _relink(self) -> None:
        """Supervised: while the link is down, reconnect; give up (exit) after ``ORPHAN_SECONDS``."""
        while True:
            await asyncio.sleep(RECONNECT_INTERVAL)
            if self.link is not None or self._lost_at is None:
                continue
            try:
                self._welcome = asyncio.get_running_loop().create_future()
                link = await self._connect()
                await asyncio.wait_for(self._welcome, 10)
            except (TimeoutError, OSError):
                if time.monotonic() - self._lost_at > ORPHAN_SECONDS:
                    log.error("coordinator_gone", process=self.index, seconds=ORPHAN_SECONDS)
                    self._stopped.set()
                    return
                continue
            self.link = link
            self.ledger.attach(link)
            self._lost_at = None
            if self.server is not None:
                link.send(Kind.READY, (self.server.port, self.server.tls_port))
            self._resync_sites()
            log.warning("coordinator_link_restored", process=self.index)

    def _on_frame(self, kind: Kind, payload: bytes) -> None:
        if kind is Kind.ACKS:
            self.ledger.acknowledge(_loads(payload))
        elif kind is Kind.TEMPLATE:
            self._on_template(payload)
        elif kind is Kind.RELEASED:
            if self.server is not None:
                for value in _loads(payload):
                    self.server.add_resumable(value)
        elif kind is Kind.CLAIMED:
            if self.server is not None:
                for value in _loads(payload):
                    self.server.drop_resumable(value)
        elif kind is Kind.COMMAND:
            self._on_command(*_loads(payload))
        elif kind is Kind.WELCOME:
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_result(_loads(payload))
        elif kind is Kind.REFUSED:
            log.error("coordinator_refused", process=self.index, reason=_loads(payload))
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_exception(OSError(f"refused: {_loads(payload)}"))
            self._stopped.set()

    def _on_template(self, payload: bytes) -> None:
        if self.coordinator is None or self.server is None:
            self._early_template = payload  # with the welcome, before the parts exist: applied at start
            return
        new_tip, fresh, sent_at = TEMPLATE_HEAD.unpack_from(payload)
        prepared = _loads(payload[TEMPLATE_HEAD.size:])
        if not self.coordinator.set_template(prepared.template, prepared=prepared, force=fresh):
            return
        done = None
        if new_tip:
            def done(_sent: int) -> None:
                self.metrics.new_tip_notify_seconds.observe(max(0.0, time.monotonic() - sent_at))
        self.server.broadcast(clean=new_tip, done=done)

    def _on_command(self, command_id: int, name: str, args: tuple[Any, ...]) -> None:
        server = self.server
        result: Any = 0
        if name == "stop":
            self._stopped.set()
        elif name == "site":  # a curtailment started, ended or changed (may come before the parts exist)
            if self.sites is not None:
                self.sites.apply(*args)
            else:
                self._site_states.append(args)
        elif server is None:
            result = 0
        elif name == "reconnect":
            result = server.reconnect_all(*args)
        elif name == "version_mask":
            result = server.set_version_mask(*args)
        elif name == "reload_tls":
            result = server.reload_tls()
        elif name == "allowlist":  # the coordinator read (and audited) a new list: in force here too
            result = (self.index, self.access.apply(*args) if self.access is not None else 0)
        elif name == "close_sessions":  # a curtailment, paced by the coordinator across every process
            result = server.close_sessions(*args)
        elif name == "stats":  # a scrape or API call wants figures of now: they go before the reply
            self._send_stats()
        if self.link is not None:
            self.link.send(Kind.REPLY, (command_id, result))

    def _site_event(self, event: tuple[Any, ...]) -> None:
        if self.link is not None:
            self.link.queue(Kind.SITES, event)

    def _resync_sites(self) -> None:
        server, sites = self.server, self.sites
        if server is None or sites is None:
            return
        sites.resync((sid, session.site, [(w.full_name, w.name) for w in session.protocol.workers.values()])
                     for sid, session in server.sessions.items() if session.site is not None and not session.finished)

    def _drain_done(self, closed: int) -> None:
        """After the reply that queued the drain (same link, in order): the coordinator audits once for all."""
        def report() -> None:
            if self.link is not None:
                self.link.send(Kind.EVENT, ("drain_done", closed))
        asyncio.get_running_loop().call_soon(report)

    def _on_release(self, value: bytes) -> None:
        if self.link is not None:
            self.link.queue(Kind.RELEASED, value)

    def _on_claim(self, value: bytes) -> None:
        if self.link is not None:
            self.link.queue(Kind.CLAIMED, value)

    # ---- blocks ----------------------------------------------------------------------------------------------

    def _on_found(self, block: FoundBlock) -> None:
        if self.link is not None:
            self.link.send(Kind.FOUND, ("found", _without_hex(block)))

    def _on_block_outcome(self, outcome: SubmitOutcome) -> None:
        self.metrics.blocks.labels("accepted" if outcome.accepted else "rejected").inc()
        if outcome.confirmed:
            self.metrics.blocks.labels("confirmed").inc()
        if outcome.resolved_seconds is not None:
            self.metrics.block_submit_resolved_seconds.observe(outcome.resolved_seconds)
        if not outcome.accepted:
            done = self.ledger.set_block_status(outcome.block.block_hash, REJECTED)
            done.add_done_callback(lambda f: f.cancelled() or f.exception() is None or log.error(
                "block_status_not_recorded", block_hash=outcome.block.block_hash, error=str(f.exception())))
        if self.link is not None:
            self.link.send(Kind.FOUND, ("resolved", outcome.block.block_hash))

    def _on_block_sent(self, block: FoundBlock, seconds: float) -> None:
        self.metrics.blocks.labels("submitted").inc()
        self.metrics.share_to_submit_seconds.observe(max(0.0, seconds))

    # ---- life ------------------------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stopped.set)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the coordinator, which stops us in order
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the coordinator forwards TLS reloads as a command
        self._welcome = loop.create_future()
        self.link = await self._connect()
        config, submit_nodes, pool_script, resumable = await asyncio.wait_for(self._welcome, 30)
        configure_logging(config.log_level, config.log_format)
        self.ledger.attach(self.link)
        nc = config.node
        self.clients = [NodeClient(creds, timeout, observer=self.metrics.observe_rpc, workers=1, name="rpc-submit")
                        for _, creds, timeout in submit_nodes]
        self.submitter = BlockSubmitter(
            self.clients, Path(config.data_dir) / "blocks", self._on_block_outcome,
            retry=RetryPolicy(min(0.2, nc.submit_retry_max_delay), nc.submit_retry_max_delay),
            on_sent=self._on_block_sent,
            on_write_failed=lambda block, exc: self.metrics.block_file_write_failures.inc(),
        )
        submitter = self.submitter
        self.metrics.blocks_unresolved.set_function(lambda: len(submitter.unresolved()))
        self.metrics.block_oldest_unresolved_seconds.set_function(submitter.oldest_unresolved_age)
        self.coordinator = Coordinator(config, pool_script, self.ledger, submitter, self.metrics)  # type: ignore[arg-type]
        self.coordinator.stats = self.stats
        # Chart history and best shares are kept by the coordinator process from the shares it commits.
        self.coordinator.history = _NoHistory()  # type: ignore[assignment]
        self.coordinator.best = _NoBest()  # type: ignore[assignment]
        self.coordinator.on_block = self._on_found
        auth = config.authorization
        if auth.allowlist_file:
            # This process drains its share of the pool's pace; the coordinator writes the audit log.
            paced = dataclasses.replace(auth, drain_rate=auth.drain_rate / config.stratum.processes)
            self.access = AccessControl(paced, config.node.network, self.metrics, _no_audit)
            self.access.on_drain_done = self._drain_done
        self.sites = FrontendSites(config.programme, self.index, self._site_event)  # 'unassigned' without sites
        if self.access is not None:
            access = self.access
            self.sites.listed_site = lambda script: _listed(access, script)
        for state in self._site_states:
            self.sites.apply(*state)
        self._site_states.clear()
        self.server = StratumServer(config, self.coordinator, self.metrics, process=self.index,
                                    sites=self.sites)  # type: ignore[arg-type]
        if self.access is not None:
            self.access.server = self.server
            if auth.enforced:
                self.server.access = self.access
        self.server.on_release = self._on_release
        self.server.on_claim = self._on_claim
        for value in resumable:
            self.server.add_resumable(value)
        if self._early_template is not None:
            self._on_template(self._early_template)
            self._early_template = None
        await self.server.start()
        self.link.send(Kind.READY, (self.server.port, self.server.tls_port))
        interpreter.started()
        log.info("frontend_started", process=self.index, pid=os.getpid(), port=self.server.port)
        sup = self.supervisor
        sup.start("stratum-housekeeping", self.server.housekeeping)
        if self.server.tls is not None:
            sup.start("tls-accept", self.server.tls.accept_loop)
        sup.start("coordinator-link", self._relink)
        sup.start("frontend-stats", self._report, required=False)
        sup.start("loop-lag", lambda: watch_loop_lag(self.metrics), required=False)
        try:
            await self._stopped.wait()
        finally:
            await self.stop()
        return 0

    async def _report(self) -> None:
        """Every second: this process's metrics and counts to the coordinator, which merges all processes."""
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            self._send_stats()

    def _send_stats(self) -> None:
        link, server = self.link, self.server
        if link is None or server is None:
            return
        rejects = dict(self.stats.rejects)
        self.stats.rejects.clear()
        states = server.session_states()
        for state, count in states.items():
            self.metrics.sessions.labels(state).set(count)
        link.send(Kind.STATS, {
            "metrics": [m for m in self.metrics.registry.collect() if not m.name.startswith("python_")],
            "states": states,
            "connections": len(server.sessions),
            "rejects": rejects,
            "unresolved": sorted(self.submitter.unresolved()) if self.submitter else [],
            "in_flight": self.ledger.in_flight,
        })


    async def stop(self) -> None:
        await self.supervisor.stop()
        if self.server is not None:
            await self.server.close()
        if self.submitter is not None:
            await self.submitter.drain()
        if self.coordinator is not None:
            await self.coordinator.drain()
        if self.link is not None:
            self.link.flush()
            self.link.close()
        for client in self.clients:
            client.close()


async def _no_audit(kind: str, payload: dict[str, Any]) -> None:
    """A front-end writes no audit entries: the coordinator writes each once, for the whole pool."""
    return None


def _listed(access: AccessControl, script: bytes) -> str:
    licence = access.allowlist.by_script.get(script)
    return licence.site if licence is not None else ""


class _NoHistory:
    """A front-end's chart history: none (the coordinator process sums the work it commits)."""

    def add(self, address: str, worker: str, difficulty: float, ts: float) -> None:
        return None


class _NoBest:
    """A front-end's best shares: none (the coordinator process offers every share it receives)."""

    def offer(self, address: str, worker: str, difficulty: float, now: float) -> None:
        return None

    def new_round(self) -> None:
        return None


def _loads(payload: bytes) -> Any:
    import pickle

    return pickle.loads(payload)


def _without_hex(block: FoundBlock) -> FoundBlock:
    return FoundBlock(block.height, block.block_hash, "", block.worker, block.reward, block.found_at,
                      block.found_clock)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m pool.server.frontend SOCKET INDEX (started by the pool itself)", file=sys.stderr)
        return 2
    token = os.environ.pop(TOKEN_ENV, "")
    interpreter.tune()
    frontend = Frontend(args[0], int(args[1]), token)
    try:
        import uvloop

        return uvloop.run(frontend.run())
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(frontend.run())


if __name__ == "__main__":
    sys.exit(main())
